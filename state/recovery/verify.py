"""Offline verification of a store: recompute the state root from raw state, and check the
invariants that need the whole state (not just one block's changes).

Used by ``appchain verify --home DIR`` (on a stopped node) and, later, by maintenance windows.
It reads every state key once, so it costs O(state), unlike the per-block guards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from state.exchange.liquidation import RISK, RISK_OF, RiskEntries
from state.records import (
    INSURANCE_ADDRESS,
    MARKET,
    POSITION,
    MarketState,
    Position,
    market_key,
    market_state_key,
)
from state.recovery.chain_check import check_range
from state.recovery.pins import prunable_below
from state.schema import TREE
from state.store import Store
from state.store_errors import StoreDamaged
from state.tree import StateTree
from state.tree_groups import DictNodeStore


@dataclass
class VerifyReport:
    """What ``verify_store`` found: ``ok`` only when ``problems`` is empty."""

    height: int
    head_state_root: bytes
    recomputed_root: bytes
    keys: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(store: Store) -> VerifyReport:
    """Recompute the root from every state key; check it against the head and against the
    stored tree; check open interest and positions against the markets."""
    head = store.head()
    if head is None:
        raise ValueError("the store has no head (never initialised)")
    fresh = DictNodeStore()
    state = store.dump_state()
    root = StateTree(fresh).apply(state)
    report = VerifyReport(head.height, head.state_root, root, len(state))
    if root != head.state_root:
        report.problems.append(
            f"state root recomputed from raw state is {root.hex()}, the head says "
            f"{head.state_root.hex()}")
    stored_root = StateTree(store.overlay(TREE)).root
    if stored_root != root:
        report.problems.append(
            f"the stored state tree's root {stored_root.hex()} differs from the root of "
            f"the raw state {root.hex()}")
    values = dict(state)
    longs: dict[str, int] = {}
    shorts: dict[str, int] = {}
    for key, raw in state:
        if not key.startswith(POSITION):
            continue
        symbol = key[len(POSITION) + 33:].decode()
        pos = Position.decode(raw)
        if market_key(symbol) not in values:
            report.problems.append(f"position {key.hex()} is in unknown market {symbol!r}")
        longs[symbol] = longs.get(symbol, 0) + max(pos.size, 0)
        shorts[symbol] = shorts.get(symbol, 0) + max(-pos.size, 0)
    for key, _ in state:
        if not key.startswith(MARKET):
            continue
        symbol = key[len(MARKET):].decode()
        raw_st = values.get(market_state_key(symbol))
        if raw_st is None:
            report.problems.append(f"market {symbol} has no state")
            continue
        st = MarketState.decode(raw_st)
        want = (longs.get(symbol, 0), shorts.get(symbol, 0))
        if (st.open_interest_long, st.open_interest_short) != want:
            report.problems.append(
                f"market {symbol}: open interest recorded long {st.open_interest_long} / "
                f"short {st.open_interest_short}, positions sum to long {want[0]} / "
                f"short {want[1]}")
        if want[0] != want[1]:
            report.problems.append(f"market {symbol}: positions are not balanced "
                                   f"(long {want[0]}, short {want[1]})")
    _check_risk_index(state, report)
    return report


def verify_home_store(store: Store, chain: bool, from_height: int, keep_undo_blocks: int
                      ) -> tuple[dict[str, Any], int]:
    """What ``appchain verify`` prints, and how many problems it found: the state report
    (verify_store) and, with ``chain``, the chain record's problems by height from
    ``from_height`` to the head (chain_check.py; undo records from where pruning keeps
    them). Damaged files are reported as problems, not raised."""
    head = store.head()
    if head is None:
        raise ValueError("the store has no head (never initialised)")
    out: dict[str, Any] = {"height": str(head.height)}
    count = 0
    try:
        report = verify_store(store)
        out.update({"head_state_root": report.head_state_root.hex(),
                    "recomputed_state_root": report.recomputed_root.hex(),
                    "state_keys": report.keys, "problems": report.problems})
        count += len(report.problems)
    except StoreDamaged as e:
        out["problems"] = [f"the state cannot be read: {e.message}"]
        count += 1
    if chain:
        undo_from = max(from_height, prunable_below(store, head, keep_undo_blocks))
        found = check_range(store, head, from_height, undo_from, max_problems=1000)
        out["chain"] = {"from_height": str(from_height), "to_height": str(head.height),
                        "undo_records_from": str(undo_from),
                        "problems": [{"height": str(p.height), "problem": p.what}
                                     for p in found]}
        count += len(found)
    out["ok"] = count == 0
    return out, count


def _check_risk_index(state: list[tuple[bytes, bytes]], report: VerifyReport) -> None:
    """The liquidation index (state/exchange/liquidation.py) covers every open position exactly:
    each account with positions has its ``lqa/`` record naming one ``liq/`` key per open
    position, and no ``liq/`` key exists that no record names."""

    open_by_owner: dict[bytes, int] = {}
    liq_keys: set[bytes] = set()
    named: set[bytes] = set()
    records: dict[bytes, RiskEntries] = {}
    for key, raw in state:
        if key.startswith(POSITION):
            owner = key[len(POSITION):len(POSITION) + 32]
            if Position.decode(raw).size != 0 and owner != INSURANCE_ADDRESS:
                open_by_owner[owner] = open_by_owner.get(owner, 0) + 1
        elif key.startswith(RISK):
            liq_keys.add(key)
        elif key.startswith(RISK_OF):
            records[key[len(RISK_OF):]] = RiskEntries.decode(raw)
    for owner, n in sorted(open_by_owner.items()):
        rec = records.get(owner)
        if rec is None or len(rec.keys) != n:
            report.problems.append(
                f"account {owner.hex()} has {n} open position(s) but "
                f"{0 if rec is None else len(rec.keys)} liquidation index entr"
                f"{'y' if rec is not None and len(rec.keys) == 1 else 'ies'}: it could escape "
                "liquidation")
    for owner, rec in sorted(records.items()):
        for k in rec.keys:
            named.add(k)
            if k not in liq_keys:
                report.problems.append(f"liquidation index record of {owner.hex()} names a "
                                       f"missing key {k.hex()}")
    for k in sorted(liq_keys - named):
        report.problems.append(f"liquidation index key {k.hex()} is named by no account")
