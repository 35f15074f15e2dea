"""Rollback: undo blocks from the head down to a target height, archiving what is abandoned.

Blocks are undone in chunks, each ONE transactional, synced ``WriteBatch`` (:func:`step`):
the value every key had before the chunk (state and state tree alike, from the undo
records), the chunk's blocks, hashes, results, undo and transaction index entries removed,
the blocks and their results archived under their era (``x`` keyspace), each transaction's
last known place recorded (``y``: what ``tx`` answers for an abandoned transaction), and the
head moved below the chunk. The cost follows the distinct keys the undone blocks changed,
never the size of the state.

The operation is recorded (``m`` + ``op``) before its first step and removed by its last, so
a crash at any point leaves either the record (``run`` finishes the same rollback: each step
only ever moves the head down by whole blocks, so re-running is safe) or the finished result.
The last step also stores the fork certificate of the new era (``m`` + ``fork/`` + era).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chain.block import Block
from chain.codec import encode
from chain.crypto import sha256
from state import schema
from state.meta import RollbackOperation, operation, record_operation
from state.records import POSITION
from state.recovery.snapshot_file import SnapshotReader, differences
from state.store import Head, Store, decode_local
from state.store_errors import OperationRefused, StoreError
from state.tree import StateTree
from state.tree_groups import DictNodeStore


@dataclass(frozen=True)
class RollbackPlan:
    """What rolling back from the head to ``to_height`` would do (a dry run's answer)."""

    from_height: int
    to_height: int
    era: int
    """Era of the head now."""
    new_era: int
    """Era the first block after the rollback starts."""
    target: Head
    """The head after the rollback: the block at ``to_height``."""
    blocks: list[dict[str, Any]] = field(default_factory=list)
    """Per abandoned block, ascending: height, hash, era, time, txs (count)."""
    txs: list[dict[str, Any]] = field(default_factory=list)
    """Per abandoned transaction, in chain order: hash, height, index."""
    accounts: list[str] = field(default_factory=list)
    """Hex addresses whose account or positions the abandoned blocks changed, sorted."""
    keys_undone: int = 0
    """Database keys the rollback rewrites (state and tree)."""

    def to_json(self, limit: int = 10_000) -> dict[str, Any]:
        """JSON for the operator; lists longer than ``limit`` are cut (counts are exact)."""
        return {
            "from_height": str(self.from_height), "to_height": str(self.to_height),
            "era": str(self.era), "new_era": str(self.new_era),
            "to_block_hash": self.target.hash.hex(), "state_root": self.target.state_root.hex(),
            "to_time_ms": str(self.target.time),
            "blocks": self.blocks[:limit], "txs": self.txs[:limit],
            "accounts": self.accounts[:limit], "block_count": len(self.blocks),
            "tx_count": len(self.txs), "account_count": len(self.accounts),
            "truncated": max(len(self.blocks), len(self.txs), len(self.accounts)) > limit,
            "keys_undone": str(self.keys_undone),
        }


def _undo(store: Store, height: int) -> dict[str, Any]:
    raw = store.db.get(schema.undo_key(height))
    if raw is None:
        raise OperationRefused(f"no undo record for height {height}: cannot roll back past it")
    return dict(decode_local(raw))


def plan_rollback(store: Store, to_height: int, *, details: bool = True) -> RollbackPlan:
    """Check that ``to_height`` can be reached and (with ``details``) list what would be
    abandoned. Without details only the target's undo record is read: a real rollback reads
    every undo record once, in its steps."""
    head = store.head()
    if head is None:
        raise OperationRefused("store has no genesis")
    if to_height >= head.height:
        raise OperationRefused(f"target height {to_height} is not below the head ({head.height})")
    if to_height < 0:
        raise OperationRefused("target height must be >= 0")
    if not details:
        target = head_at(store, to_height, _undo(store, to_height + 1)["prev_head"])
        for h in range(head.height, to_height, -1):  # every block must still be undoable
            if store.db.get(schema.undo_key(h)) is None:
                raise OperationRefused(f"no undo record for height {h}: cannot roll back past it")
        return RollbackPlan(head.height, to_height, head.era, head.era + 1, target)
    blocks: list[dict[str, Any]] = []
    txs: list[dict[str, Any]] = []
    accounts: set[bytes] = set()
    keys = 0
    target_head: Head | None = None
    for h in range(head.height, to_height, -1):
        undo = _undo(store, h)
        keys += len(undo["prior"])
        if h == to_height + 1:
            target_head = head_at(store, to_height, undo["prev_head"])
        for k, _ in undo["prior"]:
            owner = _owner(k)
            if owner is not None:
                accounts.add(owner)
        raw = store.block_bytes(h)
        if raw is None:
            raise StoreError(f"block {h} is missing")
        block = Block.decode_block(raw)
        blocks.append({"height": str(h), "hash": block.hash.hex(),
                       "era": str(block.header.era), "time": str(block.header.time),
                       "txs": len(block.txs)})
        for i, t in enumerate(block.txs):
            txs.append({"hash": sha256(t).hex(), "height": str(h), "index": i})
    assert target_head is not None
    blocks.reverse()
    txs.sort(key=lambda t: (int(t["height"]), t["index"]))
    return RollbackPlan(head.height, to_height, head.era, head.era + 1, target_head, blocks,
                        txs, sorted(a.hex() for a in accounts), keys)


def head_at(store: Store, height: int, recorded: bytes) -> Head:
    """The head a rollback leaves at ``height``: from that block's producer-signed header
    (what every node agreed on), not from the head record its successor's undo record kept,
    which a write outside the blocks may have changed (``recorded`` is used only where no
    block is stored: the genesis height)."""
    raw = store.block_bytes(height)
    if raw is None:
        return Head.decode(recorded)
    b = Block.decode_block(raw)
    return Head(height, b.hash, b.header.state_root, b.header.era, b.header.time)


def _owner(db_key: bytes) -> bytes | None:
    """The account an ``acct/`` or ``pos/`` database key belongs to (else None)."""
    if db_key.startswith(schema.STATE + schema.ACCOUNT):
        return db_key[len(schema.STATE + schema.ACCOUNT):]
    if db_key.startswith(schema.STATE + POSITION):
        return db_key[len(schema.STATE + POSITION):][:32]
    return None


def begin(store: Store, plan: RollbackPlan, certificate: bytes, reason: str,
          operators: list[bytes], started_ms: int,
          restore_file: str | None = None) -> RollbackOperation:
    """Record the rollback (durably) before any block is undone. With ``restore_file`` (a
    snapshot file of the target height, state/recovery/snapshot_file.py), the last step also makes
    the state equal to the file: writes that bypassed the blocks are undone too."""
    if operation(store) is not None:
        raise OperationRefused("another recovery operation is in progress")
    head = store.head()
    if head is None or head.height != plan.from_height:
        raise OperationRefused("the head moved since the rollback was planned; plan it again")
    if restore_file is not None:
        with SnapshotReader(Path(restore_file)) as r:
            if (r.header.height, r.header.state_root) != (plan.to_height,
                                                          plan.target.state_root):
                raise OperationRefused(f"{restore_file} holds height {r.header.height} (root "
                                 f"{r.header.state_root.hex()}), not the target")
    record = RollbackOperation(plan.from_height, plan.to_height, plan.era, plan.new_era, reason,
                               certificate, tuple(o.hex() for o in operators), started_ms,
                               restore_file)
    record_operation(store, record)  # refused if another operation is recorded
    return record


CHUNK_BYTES = 64 * 1024 * 1024
"""A step reads at most about this much (undo records, blocks, results) before writing."""


CHUNK_BLOCKS = 1000


def step(store: Store, record: RollbackOperation, max_blocks: int = CHUNK_BLOCKS) -> Head:
    """Undo a chunk of blocks from the head down in ONE batch; the last step also finishes
    the operation.

    Within a chunk each key is written once, with its prior from the LOWEST block of the
    chunk that changed it (the value it had before the chunk): the cost is the distinct keys
    the chunk changed, not the sum over its blocks. A chunk ends after
    :data:`CHUNK_BLOCKS` blocks or :data:`CHUNK_BYTES` read, so memory stays bounded and a
    crash loses at most one chunk's work (the head only ever moves down by whole chunks).
    ``max_blocks`` lowers the block limit (node config ``recovery.rollback_chunk_blocks``)."""
    head = store.head()
    assert head is not None
    to_height = record.to_height
    if head.height <= to_height:
        raise OperationRefused("rollback already at its target")
    prior: dict[bytes, bytes | None] = {}
    archive: list[tuple[bytes, bytes]] = []
    deletes: list[bytes] = []
    read = 0
    h = head.height
    prev_raw = b""
    while h > to_height:
        undo = _undo(store, h)
        raw = store.block_bytes(h)
        results = store.db.get(schema.results_key(h))
        if raw is None:
            raise StoreError(f"block {h} is missing")
        block = Block.decode_block(raw)
        era = block.header.era
        for k, v in undo["prior"]:
            prior[k] = v  # lower heights come later: their prior wins
        archive.append((schema.archive_key(era, h, b"b"), raw))
        if results is not None:
            archive.append((schema.archive_key(era, h, b"r"), results))
        for i, t in enumerate(block.txs):
            th = sha256(t)
            deletes.append(schema.tx_key(th))
            archive.append((schema.TX_FATE + th,
                            schema.height_bytes(era) + schema.tx_location(h, i)))
        deletes += [schema.block_key(h), schema.block_hash_key(block.hash),
                    schema.results_key(h), schema.undo_key(h)]
        prev_raw = undo["prev_head"]
        read += len(raw) + len(results or b"") + 64 * len(undo["prior"])
        h -= 1
        if read >= CHUNK_BYTES or head.height - h >= max_blocks:
            break
    prev = head_at(store, h, prev_raw)
    era_abandoned = record.era
    writes: list[tuple[bytes, bytes | None]] = []
    # The abandoned head's accounts and positions, for the compensation report: the first
    # chunk that touches a key still sees its value at the abandoned head.
    for k in prior:
        if _owner(k) is not None:
            zk = schema.abandoned_key(era_abandoned, k[len(schema.STATE):])
            if store.db.get(zk) is None:
                writes.append((zk, encode([store.db.get(k)])))
    writes += prior.items()
    writes += [(k, None) for k in deletes]
    writes += archive
    if prev.height == to_height and not record.restore_file:
        writes += _finish(record)
    store.commit_writes(writes, prev)
    return prev


def _finish(record: RollbackOperation) -> list[tuple[bytes, bytes | None]]:
    """The last writes of a rollback (in its last batch): the new era's certificate, the
    careful-reopening marker, the operation record removed."""
    # Markets must reopen carefully (node/ops/control.py resume), also when this last step ran
    # at startup after a crash.
    return [(schema.fork_key(record.new_era), record.certificate),
            (schema.META_REOPEN, str(record.new_era).encode()),
            (schema.META_OP, None)]


def restore_step(store: Store, record: RollbackOperation) -> Head:
    """After the undo steps reached the target: make the state, AND its tree, equal to the
    snapshot file, in ONE batch that also finishes the rollback.

    Writes that bypassed the blocks (a faulty maintenance step) are invisible to undo
    records; the file holds the state as it was. Each differing key is written, and the
    same changes are applied to the stored tree, which then commits to the file's state
    (checked against the file's root). A tree that was itself rewritten beyond those keys
    would not reach that root: then the tree is rebuilt from the file (O(state), only in
    that case). Idempotent: re-run after a crash it finds nothing left to change."""
    assert record.restore_file is not None
    path = Path(record.restore_file)
    head = store.head()
    assert head is not None
    with SnapshotReader(path) as r:
        want_root = r.header.state_root
        diff = list(differences(store.iter_state(), r.pairs()))
    tree_ov = store.overlay(schema.TREE)
    root = StateTree(tree_ov).apply(diff)
    tree_writes: list[tuple[bytes, bytes | None]] = [
        (schema.TREE + k, v) for k, v in tree_ov.changes()]
    if root != want_root:
        fresh = DictNodeStore()
        with SnapshotReader(path) as r:
            StateTree(fresh).apply(r.pairs())
        tree_writes = [(k, None) for k, _ in store.db.iterator(prefix=schema.TREE)]
        tree_writes += [(schema.TREE + k, v) for k, v in sorted(fresh.data.items())]
    writes: list[tuple[bytes, bytes | None]] = [(schema.STATE + k, v) for k, v in diff]
    store.commit_writes(writes + tree_writes + _finish(record))
    return head


def run(store: Store, record: RollbackOperation,
        after_step: Callable[[Head], None] | None = None,
        max_blocks: int = CHUNK_BLOCKS) -> Head:
    """Step until the head is at the target (also used to resume after a crash)."""
    head = store.head()
    assert head is not None
    while head.height > record.to_height:
        head = step(store, record, max_blocks)
        if after_step is not None:
            after_step(head)
    if record.restore_file and operation(store) is not None:
        head = restore_step(store, record)
        if after_step is not None:
            after_step(head)
    return head
