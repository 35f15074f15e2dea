"""Replay: re-execute the user transactions of abandoned blocks on the restored state.

The abandoned blocks of an era are in the archive (state/rollback.py). Replay takes them in
height order and, for each, builds ONE new block with the same block time (so funding and
liquidations see the same clock; if the restored head is already at or past that time, one
millisecond after the head), holding the block's transactions that still apply, in their
original order. Dropped, each with a reason (:data:`REASONS`):

* ``decode`` / ``signature``: the stored bytes no longer decode, or the signature fails
  (e.g. corrupted on disk). Signatures are re-checked only for blocks that are not
  ``intact`` (header signature and ``tx_root`` no longer match the bytes): an intact
  block's transactions are the exact bytes every node verified when it was committed;
* ``excluded_tx`` / ``excluded_sender`` / ``excluded_type``: the operators excluded it;
* ``operator_command``: operator transactions are never replayed (they were decisions on the
  abandoned fork);
* a block-validity reason on the restored state (e.g. ``nonce_mismatch``: an earlier
  transaction of the same sender was dropped);
* ``failed:<code name>``: it executes but fails on the restored state.

What the state machine generated itself (funding, triggers, liquidations) is never replayed:
the new blocks' end-of-block steps run again and do whatever the restored state calls for.
Each included transaction is ``identical`` (same result code and events as on the abandoned
fork) or ``diverged``.

Everything here is deterministic: the same store, archive and exclusions give the same
blocks, which is what lets an interrupted replay resume (node/replay.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chain.block import Block, TxResult
from chain.codes import ResultCode
from chain.crypto import sha256
from chain.errors import ChainError, InvalidBlock
from chain.merkle import merkle_root
from chain.tx import OperatorCall, Transaction, decode_tx
from state import schema
from state.invariants import InvariantViolation
from state.params import ChainParams
from state.store import Store, decode_local
from state.transition import BlockOutcome, apply_body

REASONS = ("decode", "signature", "excluded_tx", "excluded_sender", "excluded_type",
           "operator_command", "failed:<code>", "<block-validity reason>")


@dataclass(frozen=True)
class ArchivedBlock:
    era: int
    height: int
    time: int
    txs: tuple[bytes, ...]
    results: list[bytes]
    """The abandoned fork's TxResult bytes (transactions first, then the block's own)."""
    intact: bool = False
    """The producer's signature over the header verifies and the transactions hash to its
    ``tx_root``: the bytes are exactly what was committed, whose signatures every node
    checked then, so replay need not check them again (one header check per block instead
    of one per transaction). Any corruption of a transaction's bytes makes this False, and
    then every transaction's signature is checked."""


@dataclass(frozen=True)
class Exclusions:
    tx_hashes: frozenset[bytes] = frozenset()
    senders: frozenset[bytes] = frozenset()
    types: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, list[str]]:
        return {"tx": sorted(h.hex() for h in self.tx_hashes),
                "sender": sorted(s.hex() for s in self.senders), "type": sorted(self.types)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Exclusions:
        return cls(frozenset(bytes.fromhex(h) for h in doc.get("tx", [])),
                   frozenset(bytes.fromhex(s) for s in doc.get("sender", [])),
                   frozenset(doc.get("type", [])))


@dataclass
class Fate:
    """What replay did with one abandoned transaction."""

    hash: bytes
    era: int
    height: int
    index: int
    fate: str
    """``identical``, ``diverged`` or ``dropped``."""
    reason: str = ""
    sender: str = ""
    type: str = ""
    new_height: int | None = None
    new_index: int | None = None
    code: int | None = None
    """Result code on the recovered chain (included transactions)."""
    original_code: int | None = None

    def to_obj(self) -> dict[str, Any]:
        return {"hash": self.hash.hex(), "era": self.era, "height": self.height,
                "index": self.index, "fate": self.fate, "reason": self.reason,
                "sender": self.sender, "type": self.type, "new_height": self.new_height,
                "new_index": self.new_index, "code": self.code,
                "original_code": self.original_code}


@dataclass
class Assembled:
    """One replayed block, applied (not committed)."""

    time: int
    outcome: BlockOutcome
    included: list[Transaction]
    fates: list[Fate] = field(default_factory=list)


def archived_blocks(store: Store, era: int, producer: bytes | None = None
                    ) -> list[ArchivedBlock]:
    """The abandoned blocks of ``era``, ascending height (``intact`` checked against
    ``producer``, the genesis producer key, when given)."""
    prefix = schema.ARCHIVE + schema.height_bytes(era)
    out: list[ArchivedBlock] = []
    results: dict[int, list[bytes]] = {}
    blocks: dict[int, bytes] = {}
    for k, v in store.db.iterator(prefix=prefix):
        height = schema.height_from(k[len(prefix):len(prefix) + 8])
        kind = k[len(prefix) + 8:]
        if kind == b"b":
            blocks[height] = v
        elif kind == b"r":
            results[height] = list(decode_local(v))
    for height in sorted(blocks):
        raw = blocks[height]
        intact = False
        try:
            block = Block.decode_block(raw)
        except ChainError:
            # A corrupted archived block: its transactions cannot be recovered one by one.
            out.append(ArchivedBlock(era, height, 0, (), results.get(height, [])))
            continue
        time, txs = block.header.time, block.txs
        if producer is not None:
            try:
                block.signed_header.verify(producer)
                intact = merkle_root(txs) == block.header.tx_root
            except ChainError:
                intact = False  # check every transaction's signature instead
        out.append(ArchivedBlock(era, height, time, tuple(txs), results.get(height, []),
                                 intact))
    return out


def classify(raw: bytes, ex: Exclusions, verify: bool = True
             ) -> tuple[Transaction | None, str]:
    """The transaction to try, or None and why it is dropped before execution."""
    try:
        tx = decode_tx(raw)
    except ChainError:
        return None, "decode"
    if verify:
        try:
            tx.verify_signature()
        except ChainError:
            return None, "signature"
    if tx.hash in ex.tx_hashes:
        return None, "excluded_tx"
    if tx.sender in ex.senders:
        return None, "excluded_sender"
    if tx.type in ex.types:
        return None, "excluded_type"
    if isinstance(tx.payload, OperatorCall):
        return None, "operator_command"
    return tx, ""


def classify_all(raws: Sequence[bytes], ex: Exclusions, verify: bool = True
                 ) -> list[tuple[Transaction | None, str]]:
    """:func:`classify` for a whole block; signatures are checked on every core (libsodium
    releases the GIL), the answers are the same as one by one."""
    if not verify or len(raws) < 32:
        return [classify(r, ex, verify) for r in raws]
    import os
    from concurrent.futures import ThreadPoolExecutor

    workers = os.cpu_count() or 1
    chunk = -(-len(raws) // workers)
    parts = [raws[i:i + chunk] for i in range(0, len(raws), chunk)]
    with ThreadPoolExecutor(workers) as pool:
        done = list(pool.map(lambda part: [classify(r, ex) for r in part], parts))
    return [c for part in done for c in part]


def _same(a: TxResult, b_raw: bytes | None) -> tuple[bool, int | None]:
    if b_raw is None:
        return False, None
    try:
        b = TxResult.decode(b_raw)
    except ChainError:
        return False, None
    return (a.code == b.code and a.events == b.events), b.code


def assemble(store: Store, params: ChainParams, ab: ArchivedBlock, ex: Exclusions,
             height: int, min_time: int) -> Assembled:
    """Apply the archived block's surviving transactions as the block at ``height``.

    Raises ``InvariantViolation`` if even the surviving transactions break a guard (the
    replay stops; nothing is committed).
    """
    time = max(ab.time, min_time)
    fates: dict[int, Fate] = {}
    trying: list[tuple[int, Transaction]] = []
    classified = classify_all(ab.txs, ex, verify=not ab.intact)
    for i, (raw, (tx, why)) in enumerate(zip(ab.txs, classified, strict=True)):
        f = Fate(sha256(raw), ab.era, ab.height, i, "dropped", why)
        if tx is not None:
            f.sender, f.type = tx.sender.hex(), tx.type
            trying.append((i, tx))
        fates[i] = f
    while True:
        txs = [t for _, t in trying]
        try:
            outcome = apply_body(store, params, height, time, txs)
        except InvariantViolation:
            raise
        except InvalidBlock as e:
            if e.tx_index is None:
                raise
            i, _ = trying.pop(e.tx_index)
            fates[i].reason = e.reason
            continue
        failed = [k for k, r in enumerate(outcome.results[:len(txs)]) if r.code != 0]
        if not failed:
            break
        for k in reversed(failed):
            i, _ = trying.pop(k)
            code = outcome.results[k].code
            try:
                name = ResultCode(code).name.lower()
            except ValueError:
                name = str(code)
            fates[i].reason = f"failed:{name}"
            fates[i].code = code
    for k, (i, _) in enumerate(trying):
        r = outcome.results[k]
        old = ab.results[i] if i < len(ab.results) else None
        orig: int | None
        if old is not None and old == outcome.result_bytes[k]:
            same, orig = True, r.code  # byte-identical stored result: the fast path
        else:
            same, orig = _same(r, old)
        f = fates[i]
        f.fate, f.reason = ("identical" if same else "diverged"), ""
        f.new_height, f.new_index, f.code, f.original_code = height, k, r.code, orig
    for i, f in fates.items():
        if f.fate == "dropped" and f.original_code is None and i < len(ab.results):
            f.original_code = _same(TxResult(0, "", ()), ab.results[i])[1]
    return Assembled(time, outcome, [t for _, t in trying],
                     [fates[i] for i in sorted(fates)])


def summarize(fates: Sequence[Fate]) -> dict[str, Any]:
    counts: dict[str, int] = {"identical": 0, "diverged": 0, "dropped": 0}
    reasons: dict[str, int] = {}
    for f in fates:
        counts[f.fate] += 1
        if f.fate == "dropped":
            reasons[f.reason] = reasons.get(f.reason, 0) + 1
    return {**counts, "total": len(fates), "dropped_by_reason": dict(sorted(reasons.items()))}
