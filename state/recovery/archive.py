"""The archive of abandoned blocks, as replay reads it: each block with its transactions and
the abandoned fork's results, whether its bytes are still intact, and the operators'
exclusions that decide what is dropped before anything executes (docs/PROTOCOL.md §12.11).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chain.block import Block
from chain.errors import ChainError
from chain.merkle import merkle_root
from chain.tx import OperatorCall, Transaction, decode_tx
from state import schema
from state.store import Store, decode_local

REASONS = ("decode", "signature", "excluded_tx", "excluded_sender", "excluded_type",
           "operator_command", "after_excluded:<hash>", "after_dropped:<hash>",
           "<block-validity reason>")


@dataclass(frozen=True)
class ArchivedBlock:
    era: int
    height: int
    time: int
    txs: tuple[bytes, ...]
    results: tuple[bytes, ...]
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

    @property
    def empty(self) -> bool:
        return not (self.tx_hashes or self.senders or self.types)


def archived_blocks(store: Store, era: int, producer: bytes | None = None
                    ) -> list[ArchivedBlock]:
    """The abandoned blocks of ``era``, ascending height (``intact`` checked against
    ``producer``, the genesis producer key, when given)."""
    prefix = schema.ARCHIVE + schema.height_bytes(era)
    out: list[ArchivedBlock] = []
    results: dict[int, tuple[bytes, ...]] = {}
    blocks: dict[int, bytes] = {}
    for k, v in store.db.iterator(prefix=prefix):
        height = schema.height_from(k[len(prefix):len(prefix) + 8])
        kind = k[len(prefix) + 8:]
        if kind == b"b":
            blocks[height] = v
        elif kind == b"r":
            results[height] = tuple(decode_local(v))
    for height in sorted(blocks):
        raw = blocks[height]
        intact = False
        try:
            block = Block.decode_block(raw)
        except ChainError:
            # A corrupted archived block: its transactions cannot be recovered one by one.
            out.append(ArchivedBlock(era, height, 0, (), results.get(height, ())))
            continue
        time, txs = block.header.time, block.txs
        if producer is not None:
            try:
                block.signed_header.verify(producer)
                intact = merkle_root(txs) == block.header.tx_root
            except ChainError:
                intact = False  # check every transaction's signature instead
        out.append(ArchivedBlock(era, height, time, tuple(txs), results.get(height, ()),
                                 intact))
    return out


def classify(raw: bytes, ex: Exclusions, verify: bool = True
             ) -> tuple[Transaction | None, str]:
    """``(tx, "")`` for a transaction to try, or ``(tx or None, reason)`` for one dropped
    before execution (the decoded transaction when it decodes, so its sender is known)."""
    try:
        tx = decode_tx(raw)
    except ChainError:
        return None, "decode"
    if verify:
        try:
            tx.verify_signature()
        except ChainError:
            return tx, "signature"
    if tx.hash in ex.tx_hashes:
        return tx, "excluded_tx"
    if tx.sender in ex.senders:
        return tx, "excluded_sender"
    if tx.type in ex.types:
        return tx, "excluded_type"
    if isinstance(tx.payload, OperatorCall):
        return tx, "operator_command"
    return tx, ""


def classify_all(raws: Sequence[bytes], ex: Exclusions, verify: bool = True
                 ) -> list[tuple[Transaction | None, str]]:
    """:func:`classify` for a whole block; signatures are checked on every core (libsodium
    releases the GIL), the answers are the same as one by one."""
    if not verify or len(raws) < 32:
        return [classify(r, ex, verify) for r in raws]
    workers = os.cpu_count() or 1
    chunk = -(-len(raws) // workers)
    parts = [raws[i:i + chunk] for i in range(0, len(raws), chunk)]
    with ThreadPoolExecutor(workers) as pool:
        done = list(pool.map(lambda part: [classify(r, ex) for r in part], parts))
    return [c for part in done for c in part]


@dataclass(frozen=True)
class EraBlock:
    """A block named by era and height: the chain's own, or one a rollback abandoned (raw
    bytes; the reader decodes them)."""

    raw: bytes
    results: list[bytes] | None
    era: int
    abandoned: bool


def find_era_block(store: Store, era: int, height: int) -> tuple[EraBlock | None, bytes | None]:
    """The block of ``era`` at ``height``: the chain's block there if it is of that era, else
    the archived block a rollback abandoned (``x`` + era + height); with the chain's own
    block bytes at that height (to say why when there is none). One snapshot, so a rollback
    moving the block from the chain to the archive meanwhile is seen whole."""
    with store.snapshot() as snap:
        live = snap.block_bytes(height)
        if live is not None and Block.signed_header_of(live).header.era == era:
            res = snap.get(schema.results_key(height))
            return EraBlock(live, None if res is None else list(decode_local(res)), era,
                            False), live
        archived = snap.get(schema.archive_key(era, height, b"b"))
        if archived is not None:
            res = snap.get(schema.archive_key(era, height, b"r"))
            return EraBlock(archived, None if res is None else list(decode_local(res)), era,
                            True), live
    return None, live
