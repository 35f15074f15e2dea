"""Replay: re-execute the user transactions of abandoned blocks on the restored state.

The abandoned blocks of an era are in the archive (state/recovery/archive.py). Replay takes them in
height order and, for each, builds ONE new block with the same block time (so funding and
liquidations see the same clock; if the restored head is already at or past that time, one
millisecond after the head), holding the block's transactions in their original order.

**A replayed block holds what the producer would have included.** Every transaction that is
block-valid on the restored state goes in, with whatever result it gets there, success or
failure, consuming its sender's nonce exactly as normal execution does, so that sender's
later transactions stay valid. (Leaving out a transaction that failed on the abandoned fork
too, as an earlier version did, left a nonce gap that made every later transaction of its
sender invalid: half of a real devnet's transactions were lost that way.) Dropped, each with
a reason (:data:`REASONS`), are only:

* ``decode`` / ``signature``: the stored bytes no longer decode, or the signature fails
  (e.g. corrupted on disk). Signatures are re-checked only for blocks that are not
  ``intact`` (header signature and ``tx_root`` no longer match the bytes): an intact
  block's transactions are the exact bytes every node verified when it was committed;
* ``excluded_tx`` / ``excluded_sender`` / ``excluded_type``: the operators excluded it;
* ``operator_command``: operator transactions are never replayed (they were decisions on the
  abandoned fork);
* ``after_excluded:<hash>`` / ``after_dropped:<hash>``: a later transaction of a sender whose
  transaction ``<hash>`` was excluded (or dropped for one of the reasons above): its nonce no
  longer follows, so it is block-invalid, and the reason names the cause;
* any other block-validity reason on the restored state (e.g. ``nonce_mismatch``), which does
  not happen in a faithful replay but is reported rather than hidden; ``no_account`` when
  the sender's account was created only by a transaction now excluded or dropped (a key
  without an account cannot send, state/accounts.py: such a transaction is dropped, never
  replayed as a failure that would create the record).

What the state machine generated itself (funding, triggers, liquidations) is never replayed:
the new blocks' end-of-block steps run again and do whatever the restored state calls for.
Each included transaction is ``identical`` (same result code and events as on the abandoned
fork) or ``diverged``, and every diverged one carries ``why``: a short, readable account of
the difference (``code ok -> order_not_found``, which events differ), naming the operators'
``cancel_orders`` when the order it meant was already cancelled by them.

Everything here is deterministic: the same store, archive and exclusions give the same
blocks, which is what lets an interrupted replay resume (:func:`run_replay`) and a
rehearsal in a scratch copy predict the real run exactly.
"""

from __future__ import annotations

import time as _time  # progress rates only; never inside a block
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from chain.block import Block, TxResult
from chain.crypto import sha256
from chain.errors import InvalidBlock
from chain.tx import Transaction
from state.meta import (
    Fate,
    MetaWrite,
    ReplayOperation,
    fate,
    fate_write,
    operation_write,
    replayed_write,
)
from state.params import ChainParams
from state.recovery.archive import ArchivedBlock, Exclusions, archived_blocks, classify_all
from state.recovery.divergence import ReplayState, code_name, decode_result, explain
from state.store import Head, Store
from state.transition import BlockOutcome, apply_body


@dataclass
class Assembled:
    """One replayed block, applied (not committed)."""

    time: int
    outcome: BlockOutcome
    included: list[Transaction]
    fates: list[Fate] = field(default_factory=list)


def assemble(store: Store, params: ChainParams, ab: ArchivedBlock, st: ReplayState,
             height: int, min_time: int) -> Assembled:
    """Apply the archived block's transactions that are block-valid on the restored state as
    the block at ``height`` (updates ``st.blocked``).

    Raises ``InvariantViolation`` if even these transactions break a guard (the replay
    stops; nothing is committed).
    """
    time = max(ab.time, min_time)
    fates: dict[int, Fate] = {}
    trying: list[tuple[int, Transaction]] = []
    classified = classify_all(ab.txs, st.exclusions, verify=not ab.intact)
    blocked = st.blocked
    for i, (raw, (tx, why)) in enumerate(zip(ab.txs, classified, strict=True)):
        h = sha256(raw)
        if tx is not None and not why and tx.sender in blocked:
            kind, cause = blocked[tx.sender]
            why = f"after_{kind}:{cause.hex()}"
        fates[i] = Fate(h, ab.era, ab.height, i, "dropped", why,
                        sender="" if tx is None else tx.sender.hex(),
                        type="" if tx is None else tx.type)
        if tx is None:
            continue
        if why:
            if tx.sender not in blocked:
                blocked[tx.sender] = ("excluded" if why.startswith("excluded") else "dropped",
                                      h)
            continue
        trying.append((i, tx))
    while True:
        txs = [t for _, t in trying]
        try:
            outcome = apply_body(store, params, height, time, txs)
            break
        except InvalidBlock as e:
            if e.tx_index is None:  # not one transaction's fault (a guard): stop
                raise
            i, bad = trying.pop(e.tx_index)
            fates[i] = replace(fates[i], reason=e.reason)
            blocked.setdefault(bad.sender, ("dropped", fates[i].hash))
            # its later transactions in this block cannot follow either: say why, up front
            kind, cause = blocked[bad.sender]
            keep: list[tuple[int, Transaction]] = []
            for j, t in trying:
                if t.sender == bad.sender and j > i:
                    fates[j] = replace(fates[j], reason=f"after_{kind}:{cause.hex()}")
                else:
                    keep.append((j, t))
            trying = keep
    for k, (i, tx) in enumerate(trying):
        r = outcome.results[k]
        if k:  # what the block's earlier transactions did to orders, for this one's why
            st.note_closures(height, outcome.results[k - 1:k])
        old = ab.results[i] if i < len(ab.results) else None
        orig: int | None
        if old is not None and old == outcome.result_bytes[k]:
            fate, orig, why = "identical", r.code, ""  # byte-identical: the fast path
        else:
            o = decode_result(old)
            orig = None if o is None else o.code
            if o is not None and o.code == r.code and o.events == r.events:
                fate, why = "identical", ""
            else:
                fate, why = "diverged", explain(tx, old, r, st)
        fates[i] = replace(fates[i], fate=fate, reason="", why=why, new_height=height,
                           new_index=k, code=r.code, original_code=orig)
    st.note_closures(height, outcome.results[max(0, len(trying) - 1):])
    for i, f in fates.items():
        if f.fate == "dropped" and i < len(ab.results):
            o = decode_result(ab.results[i])
            if o is not None:
                fates[i] = replace(f, original_code=o.code)
    return Assembled(time, outcome, [t for _, t in trying],
                     [fates[i] for i in sorted(fates)])


def reason_group(reason: str) -> str:
    """A drop reason without the hash it names (``after_excluded:<hash>`` ->
    ``after_excluded``), for counting."""
    return reason.split(":", 1)[0]


def summarize(fates: Sequence[Fate]) -> dict[str, Any]:
    counts: dict[str, int] = {"identical": 0, "diverged": 0, "dropped": 0}
    reasons: dict[str, int] = {}
    diverged: dict[str, int] = {}
    for f in fates:
        counts[f.fate] += 1
        if f.fate == "dropped":
            g = reason_group(f.reason)
            reasons[g] = reasons.get(g, 0) + 1
        elif f.fate == "diverged":
            k = f"{code_name(f.original_code)} -> {code_name(f.code)}"
            diverged[k] = diverged.get(k, 0) + 1
    return {**counts, "total": len(fates), "dropped_by_reason": dict(sorted(reasons.items())),
            "diverged_by_code": dict(sorted(diverged.items()))}


Commit = Callable[[list[Transaction], int, list[tuple[bytes, bytes | None]], BlockOutcome],
                  Head]
"""Sign and commit one replayed block: ``(txs, time, extra metadata, outcome) -> new head``.
The producer passes its own (node/replay_runner.py); a rehearsal commits into its scratch store."""


@dataclass(frozen=True)
class Progress:
    """How far a replay is: what ``admin_progress`` and the log show."""

    era: int
    blocks_done: int
    blocks_total: int
    counts: dict[str, int]
    """identical / diverged / dropped so far."""
    elapsed_s: float

    def to_json(self) -> dict[str, Any]:
        rate = self.blocks_done / self.elapsed_s if self.elapsed_s > 0 else 0.0
        left = self.blocks_total - self.blocks_done
        return {"era": str(self.era), "blocks_done": self.blocks_done,
                "blocks_total": self.blocks_total, "counts": dict(self.counts),
                "blocks_per_s": round(rate, 1),
                "seconds_left": round(left / rate, 1) if rate > 0 else None}

    def line(self) -> str:
        j = self.to_json()
        c = self.counts
        eta = "?" if j["seconds_left"] is None else f"{j['seconds_left']:.0f}s"
        return (f"replay era {self.era}: block {self.blocks_done}/{self.blocks_total}; "
                f"{c['identical']} identical, {c['diverged']} diverged, {c['dropped']} "
                f"dropped; {j['blocks_per_s']} blocks/s; ~{eta} left")


def begin_record(store: Store, era: int, ex: Exclusions, by: list[str], started_ms: int
                 ) -> ReplayOperation:
    """The replay's operation record (``m`` + ``op``, state/meta.py), to be recorded before
    its first block."""
    head = store.head()
    if head is None:
        raise InvalidBlock("store has no genesis")
    return ReplayOperation(era, 0, ex.to_json(), tuple(by), started_ms, head.height + 1)


def operator_cancellations(store: Store, lo: int, hi: int) -> dict[tuple[bytes, int], int]:
    """Orders the operators' ``cancel_orders`` cancelled in blocks ``lo..hi`` (inclusive)."""
    out: dict[tuple[bytes, int], int] = {}
    for h in range(lo, hi + 1):
        raw = store.block_bytes(h)
        if raw is None:
            continue
        ntx = len(Block.decode_block(raw).txs)
        for r_raw in (store.results(h) or [])[:ntx]:
            for e in TxResult.decode(r_raw).events:
                if e.type == "order_cancelled":
                    d = e.as_dict()
                    if d.get("reason") == "operator" and "owner" in d:
                        out[(bytes.fromhex(d["owner"]), int(d["order"]))] = h
    return out


def run_replay(store: Store, params: ChainParams, record: ReplayOperation, commit: Commit,
               *, fork_height: int,
               on_progress: Callable[[Progress], None] | None = None,
               after_block: Callable[[], None] | None = None) -> list[Fate]:
    """Replay from ``record.next`` to the end, committing each block (with its fates, the
    advanced record and, for the last, the ``replayed`` marker, in the block's own batch);
    returns the fates of the blocks replayed now. ``fork_height`` is the height the rollback
    went to (the operators' own blocks since then explain some divergences)."""
    era = record.era
    st = ReplayState(Exclusions.from_json(record.exclusions),
                     ReplayState.blocked_from_json(record.blocked))
    start = record.start_height
    st.operator_cancelled = operator_cancellations(store, fork_height + 1, start - 1)
    head = store.head()
    assert head is not None
    for h in range(start, head.height + 1):  # blocks this replay committed before a crash
        st.note_closures(h, [TxResult.decode(r) for r in store.results(h) or []])
    blocks = archived_blocks(store, era, params.producer)
    fates: list[Fate] = []
    counts = {"identical": 0, "diverged": 0, "dropped": 0}
    t0 = _time.monotonic()
    first = record.next
    for idx in range(first, len(blocks)):
        ab = blocks[idx]
        done = idx + 1 == len(blocks)
        head = store.head()
        assert head is not None
        a = assemble(store, params, ab, st, head.height + 1, head.time + 1)
        meta: list[MetaWrite] = [fate_write(f) for f in a.fates]
        nxt = record.advanced(st.blocked_json())
        meta.append(operation_write(None if done else nxt))
        if done:
            meta.append(replayed_write(era, head.height + 1))
        commit(a.included, a.time, meta, a.outcome)
        record = nxt
        fates.extend(a.fates)
        for f in a.fates:
            counts[f.fate] += 1
        if on_progress is not None:
            on_progress(Progress(era, idx + 1 - first, len(blocks) - first, dict(counts),
                                 _time.monotonic() - t0))
        if after_block is not None:
            after_block()
    return fates


def fates_of(store: Store, era: int) -> list[Fate]:
    """Every stored fate of ``era``'s abandoned transactions, in chain order."""
    out: list[Fate] = []
    for ab in archived_blocks(store, era):
        for raw in ab.txs:
            f = fate(store, sha256(raw))
            if f is not None:
                out.append(f)
    return out
