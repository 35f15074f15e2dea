"""The compensation report: who the operators' interventions harmed, and by how much.

After a rollback and replay, some accounts end up worse off than they would have without the
operators' interventions: the blocks the operators committed between the rollback and the
replay, above all ``cancel_orders`` (a resting order that would have filled on the replayed
flow is gone). The report measures that harm against a **counterfactual**: the same rollback
and replay *without* those operator blocks, computed in a scratch copy of the store
(state/kv.py: nothing is written to the real one). Per account::

    harm = equity on the counterfactual − equity on the recovered chain

both measured right after the block that replays the last abandoned block (equity =
collateral + unrealized PnL at the oracle + unsettled funding, state/exchange/margin.py). Only
positive harm is paid (``compensation = max(0, harm)``). The abandoned fork never enters the
sum: a gain that existed only there (a maker's windfall from a zeroed funding index) is not
owed to anyone, so it is never paid.

**Exclusions stay excluded in the counterfactual.** The issue that asked for this report
wanted the counterfactual without exclusions too. But a transaction is excluded because the
operators judged it must not happen (a bad oracle print, an attacker's order): measured
against a chain where it did happen, everyone who would have profited from it (the shorts
of a bad print, the attacker himself) would show that profit as harm and be paid it, which
is exactly the bad fork's windfall this report must never pay. So the counterfactual replays
with the same exclusions (read back from the fates: every transaction dropped as
``excluded_*``), and what an exclusion cost its own sender (``txs_excluded``) or anyone else
is left to the operators, who can measure it with a rehearsal without that exclusion.

Listed apart, because money does not measure them:

* accounts **liquidated only on the abandoned fork** (the rollback restored their
  positions), with the penalty and the collateral loss they were spared;
* **external effects a rollback cannot undo**: withdrawals that succeeded on the abandoned
  fork (the funds left the chain) and that the recovered chain does not reproduce, and
  deposits credited there that it does not reproduce. They need an operator's decision;
  the report never leaves them out.

Deterministic: the same store gives the same report and the same ``id``, which is how a
rehearsal (state/recovery/rehearsal.py) predicts the real run's report exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chain.block import Block, TxResult
from chain.codes import ResultCode
from chain.crypto import PrivateKey
from chain.tx import Deposit, Transaction, Withdraw, decode_tx
from state import schema
from state.exchange.margin import account_margin
from state.meta import Fate, fork_certificates, replayed_height
from state.params import load_params
from state.records import INSURANCE_ADDRESS, POSITION, Account, Position
from state.recovery.archive import Exclusions, archived_blocks
from state.recovery.divergence import code_name
from state.recovery.replay import begin_record, fates_of, run_replay
from state.recovery.rollback import head_at
from state.store import Head, Store, decode_local
from state.store_errors import OperationRefused
from state.transition import BlockOutcome, seal


@dataclass(frozen=True)
class Measured:
    """Equity per account at one height of one (real or scratch) chain."""

    height: int
    equity: dict[bytes, int]
    collateral: dict[bytes, int]


def rewound(store: Store, height: int) -> Store:
    """A scratch copy of ``store`` as it was right after block ``height`` (undo records of
    the blocks above applied, the head set from that block's signed header). Cost: the
    changes since ``height``; the real store is never written."""
    scratch = Store.scratch_of(store)
    head = scratch.head()
    assert head is not None
    if head.height == height:
        return scratch
    if height > head.height:
        scratch.close()
        raise OperationRefused(f"height {height} is above the head {head.height}")
    prior: dict[bytes, bytes | None] = {}
    prev = b""
    for h in range(head.height, height, -1):
        raw = scratch.db.get(schema.undo_key(h))
        if raw is None:
            scratch.close()
            raise OperationRefused(f"no undo record for height {h}: height {height} is no longer "
                             "held (undo records pruned)")
        undo = decode_local(raw)
        for k, v in undo["prior"]:
            prior[k] = v  # lower heights come later: their prior wins
        prev = undo["prev_head"]
    writes = list(prior.items()) + [(schema.block_key(h), None)
                                    for h in range(head.height, height, -1)]
    scratch.commit_writes(writes, head_at(scratch, height, prev))
    return scratch


def _touched_owners(store: Store, lo: int, hi: int) -> set[bytes]:
    """Accounts whose account or positions blocks ``lo..hi`` changed (their undo records)."""
    out: set[bytes] = set()
    for h in range(lo, hi + 1):
        for k, _ in store.undo_record(h) or []:
            o = _owner(k)
            if o is not None:
                out.add(o)
    return out


def _owner(state_key: bytes) -> bytes | None:
    if state_key.startswith(schema.ACCOUNT):
        return state_key[len(schema.ACCOUNT):]
    if state_key.startswith(POSITION):
        return state_key[len(POSITION):][:32]
    return None


def _measure(store: Store, owners: Iterable[bytes]) -> Measured:
    head = store.head()
    assert head is not None
    ov = store.overlay()
    eq: dict[bytes, int] = {}
    col: dict[bytes, int] = {}
    for o in owners:
        am = account_margin(ov, o)
        eq[o] = am.equity
        col[o] = am.collateral
    return Measured(head.height, eq, col)


def counterfactual(store: Store, era: int, fork_height: int, exclusions: Exclusions
                   ) -> Store:
    """A scratch chain: ``store`` rewound to ``fork_height`` (the state the rollback left),
    then every abandoned block of ``era`` replayed with ``exclusions`` and nothing in front
    of it. Its head is the block that replays the last abandoned block."""
    scratch = rewound(store, fork_height)
    try:
        params = load_params(scratch.overlay())
        key = PrivateKey.generate()  # scratch blocks are never served; their signer is moot

        def commit(txs: list[Transaction], time: int, meta: list[tuple[bytes, bytes | None]],
                   outcome: BlockOutcome) -> Head:
            return seal(scratch, params, key, txs, time, outcome, meta)

        record = begin_record(scratch, era, exclusions, [], 0)
        run_replay(scratch, params, record, commit, fork_height=fork_height)
    except BaseException:
        scratch.close()
        raise
    return scratch


def _abandoned_accounts(store: Store, era: int) -> dict[bytes, dict[str, Any]]:
    """Per account, its collateral and positions as the abandoned head left them."""
    prefix = schema.ABANDONED + schema.height_bytes(era)
    out: dict[bytes, dict[str, Any]] = {}
    for k, v in store.db.iterator(prefix=prefix):
        key = k[len(prefix):]
        value = decode_local(v)[0]
        owner = _owner(key)
        if owner is None:
            continue
        row = out.setdefault(owner, {"collateral": 0, "positions": {}})
        if key.startswith(schema.ACCOUNT):
            row["collateral"] = Account.decode(value).balance if value else 0
        else:
            symbol = key[len(POSITION) + 33:].decode()
            row["positions"][symbol] = Position.decode(value).size if value else 0
    return out


def _liquidations(store: Store, lo: int, hi: int) -> set[bytes]:
    out: set[bytes] = set()
    for h in range(lo, hi + 1):
        raw = store.block_bytes(h)
        if raw is None:
            continue
        ntx = len(Block.decode_block(raw).txs)
        for r in (store.results(h) or [])[ntx:]:
            for e in TxResult.decode(r).events:
                if e.type == "liquidation_settled":
                    out.add(bytes.fromhex(e.as_dict()["account"]))
    return out


def _cancelled_by_operators(store: Store, lo: int, hi: int) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    for h in range(lo, hi + 1):
        raw = store.block_bytes(h)
        if raw is None:
            continue
        ntx = len(Block.decode_block(raw).txs)
        for r in (store.results(h) or [])[:ntx]:
            for e in TxResult.decode(r).events:
                d = e.as_dict()
                if e.type == "order_cancelled" and d.get("reason") == "operator":
                    o = bytes.fromhex(d["owner"])
                    out[o] = out.get(o, 0) + 1
    return out


def build_report(store: Store, era: int) -> dict[str, Any]:
    """The compensation report for the abandoned fork of ``era`` (JSON-ready), after its
    replay. Raises ``StoreError`` if there is nothing to compare yet."""
    certs = [c.certificate for c in fork_certificates(store) if c.certificate.era == era + 1]
    if not certs:
        raise OperationRefused(f"no fork certificate starts era {era + 1} (was era {era} rolled "
                         "back?)")
    fork = certs[0]
    fork_height = int(fork.to_height)
    rec_height = replayed_height(store, era)
    if rec_height is None:
        raise OperationRefused(f"era {era} has not been replayed yet: replay it first (the report "
                         "compares the recovered chain after the replay with the "
                         "counterfactual)")
    abandoned = archived_blocks(store, era)
    fates = {f.hash: f for f in fates_of(store, era)}
    # Every account that either side could have changed since the fork.
    owners: set[bytes] = set(_abandoned_accounts(store, era))
    owners |= _touched_owners(store, fork_height + 1, rec_height)
    rec = rewound(store, rec_height)
    try:
        excluded_txs = frozenset(f.hash for f in fates.values()
                                 if f.fate == "dropped" and f.reason.startswith("excluded_"))
        cf = counterfactual(store, era, fork_height, Exclusions(tx_hashes=excluded_txs))
        try:
            cf_head = cf.head()
            assert cf_head is not None
            owners |= _touched_owners(cf, fork_height + 1, cf_head.height)
            owners.discard(INSURANCE_ADDRESS)
            m_cf = _measure(cf, sorted(owners))
        finally:
            cf.close()
        m_rec = _measure(rec, sorted(owners))
        liq_rec = _liquidations(rec, fork_height + 1, rec_height)
        cancelled = _cancelled_by_operators(rec, fork_height + 1, rec_height)
    finally:
        rec.close()
    ab_rows = _abandoned_accounts(store, era)
    liq_ab: dict[bytes, int] = {}  # penalty charged
    lost_ab: dict[bytes, int] = {}  # collateral the liquidations took
    for ab in abandoned:
        for r in ab.results[len(ab.txs):]:
            before: dict[bytes, int] = {}
            for e in TxResult.decode(r).events:
                d = e.as_dict()
                if e.type == "liquidation":
                    before.setdefault(bytes.fromhex(d["account"]), int(d["collateral"]))
                elif e.type == "liquidation_settled":
                    a = bytes.fromhex(d["account"])
                    liq_ab[a] = liq_ab.get(a, 0) + int(d["penalty"])
                    lost_ab[a] = lost_ab.get(a, 0) + before.get(a, 0) - int(
                        d["collateral_after"])
    dropped: dict[bytes, int] = {}
    diverged: dict[bytes, int] = {}
    excluded: dict[bytes, int] = {}
    for f in fates.values():
        if not f.sender:
            continue
        who = bytes.fromhex(f.sender)
        if f.fate == "dropped":
            dropped[who] = dropped.get(who, 0) + 1
            if f.reason.startswith(("excluded_", "after_excluded:")):
                excluded[who] = excluded.get(who, 0) + 1
        elif f.fate == "diverged":
            diverged[who] = diverged.get(who, 0) + 1
    rows: list[dict[str, Any]] = []
    for o in sorted(owners):
        harm = m_cf.equity[o] - m_rec.equity[o]
        arow = ab_rows.get(o)
        rows.append({
            "account": o.hex(),
            "equity_counterfactual": str(m_cf.equity[o]),
            "equity_recovered": str(m_rec.equity[o]),
            "harm": str(harm),
            "compensation": str(max(0, harm)),
            "txs_excluded": excluded.get(o, 0),
            "collateral_recovered": str(m_rec.collateral[o]),
            "collateral_abandoned": None if arow is None else str(arow["collateral"]),
            "positions_abandoned": {} if arow is None else {
                sym: str(v) for sym, v in sorted(arow["positions"].items())},
            "liquidated_abandoned": o in liq_ab,
            "liquidated_recovered": o in liq_rec,
            "liquidated_only_abandoned": o in liq_ab and o not in liq_rec,
            "orders_cancelled_by_operator": cancelled.get(o, 0),
            "txs_dropped": dropped.get(o, 0),
            "txs_diverged": diverged.get(o, 0),
        })
    only = [{"account": a.hex(), "penalty_spared": str(p),
             "collateral_loss_spared": str(lost_ab.get(a, 0))}
            for a, p in sorted(liq_ab.items()) if a not in liq_rec]
    external = _external_effects(abandoned, fates)
    pay = [r for r in rows if int(r["compensation"]) > 0]
    body: dict[str, Any] = {
        "era": str(era),
        "fork": {"to_height": str(fork_height), "from_height": str(fork.from_height),
                 "reason": fork.reason},
        "measured_at": {"recovered_height": str(rec_height),
                        "counterfactual_height": str(m_cf.height)},
        "policy": "compensation = max(0, equity on the counterfactual (same rollback and "
                  "replay without the operators' blocks) - equity on the recovered "
                  "chain), both after the block that replays the last abandoned block; the "
                  "replay's exclusions apply on both sides",
        "totals": {"accounts": len(rows), "accounts_to_compensate": len(pay),
                   "compensation_total": str(sum(int(r["compensation"]) for r in pay)),
                   "liquidated_only_on_abandoned_fork": len(only),
                   "external_effects": len(external)},
        "liquidated_only_on_abandoned_fork": only,
        "external_effects": external,
        "accounts": rows,
    }
    body["id"] = report_id(body)
    return body


def report_id(body: dict[str, Any]) -> str:
    """16 hex digits of SHA-256 over the report's canonical JSON (``id`` left out): the
    reference the ``compensate`` transactions carry."""
    doc = {k: v for k, v in body.items() if k != "id"}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _external_effects(abandoned: list[Any], fates: dict[bytes, Fate]) -> list[dict[str, Any]]:
    """Withdrawals and deposits that succeeded on the abandoned fork and that the recovered
    chain does not reproduce (dropped, or failed there)."""
    out: list[dict[str, Any]] = []
    for ab in abandoned:
        for i, raw in enumerate(ab.txs):
            try:
                tx = decode_tx(raw)
            except Exception:  # noqa: BLE001 - corrupted: its fate says "decode"
                continue
            p = tx.payload
            if not isinstance(p, Withdraw | Deposit):
                continue
            r = TxResult.decode(ab.results[i]) if i < len(ab.results) else None
            if r is None or r.code != ResultCode.OK:
                continue
            f = fates.get(tx.hash)
            if f is not None and f.fate != "dropped" and f.code == ResultCode.OK:
                continue  # reproduced
            if f is None:
                now = "not replayed"
            elif f.fate == "dropped":
                now = f"dropped ({f.reason})"
            else:
                now = f"failed ({code_name(f.code)}) in block {f.new_height}"
            kind = "withdrawal" if isinstance(p, Withdraw) else "deposit"
            account = tx.sender if isinstance(p, Withdraw) else p.to
            out.append({"kind": kind, "account": account.hex(), "amount": str(p.amount),
                        "tx": tx.hash.hex(), "abandoned_height": str(ab.height),
                        "recovered": now,
                        "note": ("paid out on the abandoned fork and not undone by the "
                                 "rollback: the recovered chain still holds these funds "
                                 "for the account" if kind == "withdrawal" else
                                 "credited on the abandoned fork for funds that arrived; "
                                 "the recovered chain does not hold them")})
    return out
