"""Why a replayed transaction diverged: a short, readable account of how its result differs
from the abandoned fork's, and what a replay remembers from block to block to say it (the
orders the operators cancelled, the orders the replay itself closed, the senders whose
nonces no longer follow).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chain.block import Event, TxResult
from chain.codes import ResultCode
from chain.errors import ChainError
from chain.tx import CancelOrder, Transaction
from state.recovery.archive import Exclusions


@dataclass
class ReplayState:
    """What a replay carries from block to block (and rebuilds from its record on resume)."""

    exclusions: Exclusions
    blocked: dict[bytes, tuple[str, bytes]] = field(default_factory=dict)
    """sender -> (``excluded`` or ``dropped``, hash of its first transaction left out): its
    later transactions' nonces no longer follow."""
    operator_cancelled: dict[tuple[bytes, int], int] = field(default_factory=dict)
    """(owner, order id) -> height of the operators' ``cancel_orders`` block that cancelled
    it on the recovered chain (explains cancels that now find no order)."""

    closed: dict[tuple[bytes, int], str] = field(default_factory=dict)
    """(owner, order id) -> how the order last left the book on the recovered chain since
    the replay began (``filled in block H``, ``cancelled (reason) in block H``, ...): what a
    cancel that now finds no order is told."""

    def note_closures(self, height: int, results: Sequence[TxResult]) -> None:
        """Record what the block at ``height`` did to orders (its transactions' results and
        its own, in order: the last word on an order wins)."""
        for r in results:
            for e in r.events:
                t = e.type
                if t == "fill":
                    d = e.as_dict()
                    self.closed[(bytes.fromhex(d["maker"]), int(d["maker_order"]))] = \
                        f"filled in block {height}"
                elif t == "order_cancelled" or t == "order_triggered":
                    d = e.as_dict()
                    if "owner" in d:
                        what = (f"cancelled ({d.get('reason')})" if t == "order_cancelled"
                                else "triggered")
                        self.closed[(bytes.fromhex(d["owner"]), int(d["order"]))] = \
                            f"{what} in block {height}"

    def blocked_json(self) -> dict[str, list[str]]:
        return {s.hex(): [k, h.hex()] for s, (k, h) in sorted(self.blocked.items())}

    @staticmethod
    def blocked_from_json(doc: dict[str, Any]) -> dict[bytes, tuple[str, bytes]]:
        return {bytes.fromhex(s): (str(v[0]), bytes.fromhex(v[1])) for s, v in doc.items()}


def code_name(code: int | None) -> str:
    if code is None:
        return "unknown"
    try:
        return ResultCode(code).name.lower()
    except ValueError:
        return str(code)


def decode_result(raw: bytes | None) -> TxResult | None:
    if raw is None:
        return None
    try:
        return TxResult.decode(raw)
    except ChainError:
        return None


def _short(v: str) -> str:
    """An address as its first 12 hex digits (the why stays one readable line)."""
    return v[:12] + "…" if len(v) == 64 else v


def _type_counts(events: Sequence[Event]) -> str:
    out: list[str] = []
    for e in events:
        if out and out[-1].split(" x")[0] == e.type:
            n = int(out[-1].split(" x")[1]) if " x" in out[-1] else 1
            out[-1] = f"{e.type} x{n + 1}"
        else:
            out.append(e.type)
    return ", ".join(out) or "none"


def _operator_note(tx: Transaction, old: TxResult, st: ReplayState) -> str:
    """Which orders the original result touched that the operators had cancelled."""
    hits: list[tuple[int, int]] = []  # (height, order id)
    if isinstance(tx.payload, CancelOrder):
        oid = tx.payload.order_id
        h = st.operator_cancelled.get((tx.sender, oid))
        if h is not None:
            return (f"order {oid} was already cancelled by the operators "
                    f"(cancel_orders in block {h})")
        how = st.closed.get((tx.sender, oid))
        if how is not None:
            return f"on the recovered chain order {oid} was {how}"
    for e in old.events:
        d = e.as_dict()
        if e.type == "order_cancelled" and "owner" in d:
            key = (bytes.fromhex(d["owner"]), int(d["order"]))
        elif e.type == "fill":
            key = (bytes.fromhex(d["maker"]), int(d["maker_order"]))
        else:
            continue
        h = st.operator_cancelled.get(key)
        if h is not None:
            hits.append((h, key[1]))
    if not hits:
        return ""
    blocks = sorted({h for h, _ in hits})
    return (f"{len(hits)} order(s) it met on the abandoned fork were already cancelled by the "
            f"operators (cancel_orders in block {', '.join(map(str, blocks))})")


def explain(tx: Transaction, old_raw: bytes | None, new: TxResult, st: ReplayState) -> str:
    """A short, readable account of how ``new`` differs from the abandoned fork's result."""
    old = decode_result(old_raw)
    if old is None:
        return "no readable result on the abandoned fork"
    parts: list[str] = []
    if old.code != new.code:
        parts.append(f"code {code_name(old.code)} -> {code_name(new.code)}")
    elif [e.type for e in old.events] != [e.type for e in new.events]:
        parts.append(f"events [{_type_counts(old.events)}] -> [{_type_counts(new.events)}]")
    else:
        for i, (a, b) in enumerate(zip(old.events, new.events, strict=True)):
            if a == b:
                continue
            da, db = a.as_dict(), b.as_dict()
            diffs = [f"{k} {_short(da.get(k, '-'))} -> {_short(db.get(k, '-'))}"
                     for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)]
            parts.append(f"{a.type} #{i + 1}: " + ", ".join(diffs[:3]))
            break
    note = _operator_note(tx, old, st)
    if note:
        parts.append(note)
    return "; ".join(parts) or "same code and events, other bytes"
