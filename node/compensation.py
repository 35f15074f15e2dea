"""The compensation report: per account, the abandoned fork's outcome against the recovered
chain's, after a rollback (and usually a replay).

Inputs, all in the store: the accounts and positions as the abandoned head left them (kept by
the rollback, ``z`` keyspace), the archived blocks' results (liquidations on the abandoned
fork), the recovered chain's blocks since the fork (liquidations, operator cancellations) and
the replay's per-transaction fates. For every account either side touched:

* collateral and position sizes on both sides and the difference;
* liquidated on the abandoned fork, on the recovered chain, or **only on the abandoned fork**
  (the people a bad fork hurt);
* orders cancelled by the operators' ``cancel_orders`` since the fork;
* its abandoned transactions that replay dropped or that diverged;
* ``compensation``: what the default policy suggests paying from the insurance fund, the
  collateral it holds less on the recovered chain than on the abandoned fork
  (``max(0, abandoned − recovered)``) for accounts whose transactions were dropped or
  diverged or whose orders the operators cancelled, 0 otherwise. Operators review (and may
  edit) the amounts before ``admin compensate`` pays them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from chain.block import Block, TxResult
from chain.codec import decode
from chain.crypto import sha256
from state import schema
from state.accounts import Account
from state.exchange import INSURANCE_ADDRESS, POSITION
from state.positions import Position
from state.replay import archived_blocks
from state.rollback import fork_certificates
from state.store import Store, StoreError


def _events(result_raw: bytes) -> list[dict[str, str]]:
    r = TxResult.decode(result_raw)
    return [{"type": e.type, **e.as_dict()} for e in r.events]


def _block_event_results(txs: int, results: list[bytes]) -> list[dict[str, str]]:
    return _events(results[txs]) if len(results) > txs else []


def build_report(store: Store, era: int) -> dict[str, Any]:
    """The report for the abandoned fork of ``era`` (JSON-ready)."""
    prefix = schema.ABANDONED + schema.height_bytes(era)
    abandoned: dict[bytes, bytes | None] = {}
    for k, v in store.db.iterator(prefix=prefix):
        abandoned[k[len(prefix):]] = decode(v)[0]
    if not abandoned:
        raise StoreError(f"no abandoned state kept for era {era} (was it rolled back?)")
    certs = [c.certificate for c in fork_certificates(store) if c.certificate.era == era + 1]
    if not certs:
        raise StoreError(f"no fork certificate starts era {era + 1}")
    fork = certs[0]
    rows: dict[bytes, dict[str, Any]] = {}

    def row(addr: bytes) -> dict[str, Any]:
        r = rows.get(addr)
        if r is None:
            r = rows[addr] = {
                "account": addr.hex(), "collateral_abandoned": 0, "collateral_recovered": 0,
                "positions": {}, "liquidated_abandoned": False, "liquidated_recovered": False,
                "orders_cancelled_by_operator": 0, "txs_dropped": 0, "txs_diverged": 0}
        return r

    for key, value in abandoned.items():
        now = store.state_get(key)
        if key.startswith(schema.ACCOUNT):
            r = row(key[len(schema.ACCOUNT):])
            r["collateral_abandoned"] = Account.decode(value).balance if value else 0
            r["collateral_recovered"] = Account.decode(now).balance if now else 0
        elif key.startswith(POSITION):
            owner, symbol = key[len(POSITION):len(POSITION) + 32], key[len(POSITION) + 33:]
            r = row(owner)
            r["positions"][symbol.decode()] = {
                "abandoned": str(Position.decode(value).size if value else 0),
                "recovered": str(Position.decode(now).size if now else 0)}
    # Liquidations on the abandoned fork (its blocks' own results).
    for ab in archived_blocks(store, era):
        for e in _block_event_results(len(ab.txs), ab.results):
            if e["type"] == "liquidation_settled":
                row(bytes.fromhex(e["account"]))["liquidated_abandoned"] = True
        for raw in ab.txs:
            fate_raw = store.db.get(schema.META_FATE + sha256(raw))
            if fate_raw is None:
                continue
            fate = dict(decode(fate_raw))
            if not fate.get("sender"):
                continue
            r = row(bytes.fromhex(fate["sender"]))
            if fate["fate"] == "dropped":
                r["txs_dropped"] += 1
            elif fate["fate"] == "diverged":
                r["txs_diverged"] += 1
    # The recovered chain since the fork: liquidations and operator cancellations.
    head = store.head()
    assert head is not None
    for h in range(fork.to_height + 1, head.height + 1):
        block_raw = store.block_bytes(h)
        results = store.results(h) or []
        if block_raw is None:
            continue
        block = Block.decode_block(block_raw)
        for e in _block_event_results(len(block.txs), results):
            if e["type"] == "liquidation_settled":
                row(bytes.fromhex(e["account"]))["liquidated_recovered"] = True
        cancelled = [e for res in results[:len(block.txs)] for e in _events(res)
                     if e["type"] == "order_cancelled" and e.get("reason") == "operator"]
        for e in cancelled:
            row(bytes.fromhex(e["owner"]))["orders_cancelled_by_operator"] += 1
    rows.pop(INSURANCE_ADDRESS, None)
    out_rows = []
    for addr in sorted(rows):
        r = rows[addr]
        r["liquidated_only_abandoned"] = r["liquidated_abandoned"] and not \
            r["liquidated_recovered"]
        diff = r["collateral_recovered"] - r["collateral_abandoned"]
        harmed = r["txs_dropped"] or r["txs_diverged"] or r["orders_cancelled_by_operator"]
        r["collateral_difference"] = diff
        r["compensation"] = max(0, -diff) if harmed else 0
        out_rows.append({k: (str(v) if isinstance(v, int) and not isinstance(v, bool) else v)
                         for k, v in r.items()})
    only = [r["account"] for r in out_rows if r["liquidated_only_abandoned"]]
    total = sum(int(r["compensation"]) for r in out_rows)
    body = {"era": str(era), "fork": {"to_height": str(fork.to_height),
                                      "from_height": str(fork.from_height),
                                      "reason": fork.reason},
            "recovered_head": str(head.height),
            "totals": {"accounts": len(out_rows),
                       "liquidated_only_on_abandoned_fork": len(only),
                       "accounts_to_compensate": sum(1 for r in out_rows
                                                     if int(r["compensation"]) > 0),
                       "compensation_total": str(total)},
            "liquidated_only_on_abandoned_fork": only, "accounts": out_rows}
    body["id"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return body


CSV_COLUMNS = ("account", "liquidated_abandoned", "liquidated_recovered",
               "liquidated_only_abandoned", "collateral_abandoned", "collateral_recovered",
               "collateral_difference", "orders_cancelled_by_operator", "txs_dropped",
               "txs_diverged", "compensation")


def to_csv(report: dict[str, Any]) -> str:
    lines = [",".join(CSV_COLUMNS)]
    for r in report["accounts"]:
        lines.append(",".join(str(r[c]).lower() if isinstance(r[c], bool) else str(r[c])
                              for c in CSV_COLUMNS))
    return "\n".join(lines) + "\n"


def to_table(report: dict[str, Any]) -> str:
    t = report["totals"]
    out = [f"compensation report {report['id']} for era {report['era']} "
           f"(rolled back {report['fork']['from_height']} -> {report['fork']['to_height']}, "
           f"recovered head {report['recovered_head']})",
           f"{'account':<18} {'liq. bad fork':>13} {'liq. recovered':>14} "
           f"{'collateral diff':>16} {'cancelled':>9} {'dropped':>7} {'compensation':>14}"]
    for r in report["accounts"]:
        out.append(f"{r['account'][:16]:<18} {str(r['liquidated_abandoned']):>13} "
                   f"{str(r['liquidated_recovered']):>14} {r['collateral_difference']:>16} "
                   f"{r['orders_cancelled_by_operator']:>9} {r['txs_dropped']:>7} "
                   f"{r['compensation']:>14}")
    out.append(f"accounts {t['accounts']}, liquidated only on the bad fork "
               f"{t['liquidated_only_on_abandoned_fork']}, to compensate "
               f"{t['accounts_to_compensate']}, total {t['compensation_total']} micro-USDC")
    return "\n".join(out)
