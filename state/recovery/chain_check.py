"""Check the stored chain record of a range of heights: blocks, results, undo records and
the transaction index, against each other and against the head.

Why: state checks (the tree root, verify.py) say nothing about the chain record beside the
state. A damaged store can hold a hole in the middle (a block, its results, undo record and
tx index gone; keys it deleted back) with a state that still matches its head, and a node
would serve it. Used at start on the last ``storage.check_tail_blocks`` blocks
(node/chain_head.py) and by ``appchain verify`` on the whole chain. Cost per block: decode it,
one tx-root and one results-root hash pass, one index read per transaction.

The chain record starts at the lowest stored block: a store initialised from genesis, or
imported from a snapshot file, holds no block at or below its first head, and heights below
that are not a hole.
"""

from __future__ import annotations

from dataclasses import dataclass

from chain.block import Block
from chain.codec import pack_canonical
from chain.crypto import sha256
from chain.errors import AppchainError
from chain.merkle import merkle_root
from state import schema
from state.store import Head, Store, decode_local
from state.store_errors import StoreDamaged


@dataclass(frozen=True, slots=True)
class BlockProblem:
    """One thing wrong with the stored record of one height."""

    height: int
    what: str

    def __str__(self) -> str:
        return f"height {self.height}: {self.what}"


def heights_text(heights: list[int]) -> str:
    """Heights as compact ranges: ``1-12, 15``."""
    out: list[str] = []
    for h in sorted(set(heights)):
        if out and out[-1].split("-")[-1] == str(h - 1):
            out[-1] = out[-1].split("-")[0] + f"-{h}"
        else:
            out.append(str(h))
    return ", ".join(out)


def lowest_block(store: Store) -> int | None:
    """The lowest height with a stored block (None: no block is stored). One seek."""
    with store.db.iterator(prefix=schema.BLOCK, include_value=False) as it:
        for k in it:
            return schema.height_from(k[len(schema.BLOCK):])
    return None


def check_range(store: Store, head: Head, low: int, undo_from: int,
                max_problems: int = 100) -> list[BlockProblem]:
    """Problems in the stored record of heights ``low``..``head.height`` (clamped to the
    lowest stored block): each block present and decoding, at its height, linked to the
    block below, its tx root and results root matching, its results, hash index and tx
    index entries present and right, its undo record present (heights ``>= undo_from``:
    older ones may be pruned) and linking to the block below; the top block is the head."""
    problems: list[BlockProblem] = []
    unreadable: StoreDamaged | None = None
    try:
        first = lowest_block(store)
    except StoreDamaged as e:  # the walk met a damaged table block: check the heights
        first, unreadable = _first_held(store, low, head.height), e  # to name the damage
    if first is None:
        if head.height >= low and head.hash != bytes(32) and _head_needs_block(store, head):
            problems.append(BlockProblem(head.height, "the head's block is missing (no "
                                                      "block is stored)"))
        return problems
    low = max(low, first)
    prev_hash: bytes | None = None
    if low > first:
        try:
            below = store.block_bytes(low - 1)
        except StoreDamaged as e:
            below = None
            problems.append(BlockProblem(low - 1, f"its stored data is damaged (LevelDB: "
                                         f"{e.__cause__ or e.message})"))
        if below is None:
            if not problems:
                problems.append(BlockProblem(low - 1, "block missing"))
        else:
            prev_hash = _decoded(below, low - 1, problems)
    for h in range(low, head.height + 1):
        if len(problems) >= max_problems:
            break
        try:
            prev_hash = _check_height(store, h, prev_hash, h >= undo_from, problems)
        except StoreDamaged as e:  # LevelDB's checksum of what this height reads failed
            problems.append(BlockProblem(h, "its stored data is damaged (LevelDB: "
                                         f"{e.__cause__ or e.message})"))
            prev_hash = None
    if unreadable is not None and not problems:
        problems.append(BlockProblem(low, "the stored blocks below it cannot be listed "
                                     f"(LevelDB: {unreadable.__cause__ or unreadable})"))
    if prev_hash is not None and prev_hash != head.hash and head.height >= low:
        problems.append(BlockProblem(head.height, f"the head names block "
                                     f"{head.hash.hex()}, the stored block is "
                                     f"{prev_hash.hex()}"))
    return problems


def _first_held(store: Store, low: int, high: int) -> int:
    """The lowest height from ``low`` whose block is stored or unreadable (by point reads,
    when the walk of the block keys met damage)."""
    for h in range(low, high + 1):
        try:
            if store.block_bytes(h) is not None:
                return h
        except StoreDamaged:
            return h
    return high


def _head_needs_block(store: Store, head: Head) -> bool:
    """A head with no block stored is fine only as a first head (genesis or a snapshot
    import): then no undo record exists either."""
    return store.db.get(schema.undo_key(head.height)) is not None


def _decoded(raw: bytes, h: int, problems: list[BlockProblem]) -> bytes | None:
    try:
        return Block.decode_block(raw).hash
    except AppchainError as e:
        problems.append(BlockProblem(h, f"block does not decode: {e}"))
        return None


def _check_height(store: Store, h: int, prev_hash: bytes | None, want_undo: bool,
                  problems: list[BlockProblem]) -> bytes | None:
    """Check height ``h``; returns its block hash (None if it has no usable block)."""
    raw = store.block_bytes(h)
    if raw is None:
        problems.append(BlockProblem(h, "block missing (a hole in the chain)"))
        return None
    try:
        block = Block.decode_block(raw)
    except AppchainError as e:
        problems.append(BlockProblem(h, f"block does not decode: {e}"))
        return None
    hd = block.header
    if hd.height != h:
        problems.append(BlockProblem(h, f"the block stored here is for height {hd.height}"))
    if prev_hash is not None and hd.prev_hash != prev_hash:
        problems.append(BlockProblem(h, f"prev_hash {hd.prev_hash.hex()} does not link to "
                                     f"the block below ({prev_hash.hex()})"))
    if merkle_root(block.txs) != hd.tx_root:
        problems.append(BlockProblem(h, "tx_root does not match the block's transactions"))
    if store.height_of(block.hash) != h:
        problems.append(BlockProblem(h, "block hash index entry missing or wrong"))
    _check_results(store, h, block, problems)
    for i, tx in enumerate(block.txs):
        loc = store.tx_location(sha256(tx))
        if loc != (h, i):
            problems.append(BlockProblem(h, f"tx index entry of transaction {i} "
                                         f"({sha256(tx).hex()}) is "
                                         f"{'missing' if loc is None else f'at {loc}'}"))
            break
    if want_undo:
        _check_undo(store, h, prev_hash, problems)
    return block.hash


def _check_results(store: Store, h: int, block: Block, problems: list[BlockProblem]) -> None:
    raw = store.db.get(schema.results_key(h))
    if raw is None:
        problems.append(BlockProblem(h, "results missing"))
        return
    try:
        stored = [decode_local(r) for r in decode_local(raw)]
        leaves = [pack_canonical({"code": r["code"], "events": r["events"]}) for r in stored]
    except (ValueError, TypeError, KeyError) as e:
        problems.append(BlockProblem(h, f"results do not decode: {e}"))
        return
    if len(stored) not in (len(block.txs), len(block.txs) + 1):
        problems.append(BlockProblem(h, f"{len(stored)} results for {len(block.txs)} "
                                     "transactions"))
    elif merkle_root(leaves) != block.header.results_root:
        problems.append(BlockProblem(h, "results do not match the header's results_root"))


def _check_undo(store: Store, h: int, prev_hash: bytes | None,
                problems: list[BlockProblem]) -> None:
    raw = store.db.get(schema.undo_key(h))
    if raw is None:
        problems.append(BlockProblem(h, "undo record missing"))
        return
    try:
        undo = decode_local(raw)
        prev = Head.decode(undo["prev_head"])
        undo["prior"]  # noqa: B018 (must be there)
    except (ValueError, TypeError, KeyError, AppchainError) as e:
        problems.append(BlockProblem(h, f"undo record does not decode: {e}"))
        return
    if prev.height != h - 1 or (prev_hash is not None and prev.hash != prev_hash):
        problems.append(BlockProblem(h, f"undo record's previous head (height "
                                     f"{prev.height}) is not the block below"))
