"""A journaled key-value store on LevelDB with atomic block commits and undo records.

A block's state writes go to an :class:`Overlay` (reads fall through it to the database);
nothing touches disk until :meth:`Store.commit_block`, which writes the block, its indexes, its
results, the state writes, an undo record (the prior value of every touched key) and the new
head in ONE ``WriteBatch(transaction=True, sync=True)``. ``transaction=True`` matters: plyvel's
default batch writes the puts made before an exception escapes the ``with`` block.

Undo records make rollback cost proportional to what changed since the target height, never
to the size of the state.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from chain.block import Block
from chain.codec import U64, Bytes32, Struct, encode
from state import schema
from state.checked_state import CheckedStateReader
from state.kv import KV, KVSnapshot, MemoryKV, ScratchKV
from state.kv_level import DEFAULT_LEVELDB_OPTIONS, LevelDBOptions, open_leveldb
from state.overlay import Overlay
from state.overlay_walks import MISSING
from state.store_errors import OperationRefused, StoreError


def decode_local(raw: bytes) -> Any:
    """Decode a record this node wrote itself (undo records, stored results): plain msgpack,
    without the canonical-form checks that data from other parties gets. Undo records are
    the hot path of a rollback; re-checking their form cost more than undoing them."""
    return msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=False)


@dataclass(frozen=True, slots=True)
class Head(Struct):
    """The last committed block: what the next block links to."""

    height: U64
    hash: Bytes32
    state_root: Bytes32
    era: U64
    time: U64


class StoreSnapshot:
    """Reads from one LevelDB snapshot: a commit landing meanwhile is not seen half-way.
    What it serves of the state is checked against the snapshot's tree first
    (state/checked_state.py): a value changed outside the blocks raises, it is not read."""

    def __init__(self, snap: KVSnapshot) -> None:
        self._snap = snap
        self._checked: CheckedStateReader | None = None

    def _state(self) -> CheckedStateReader:
        if self._checked is None:
            self._checked = CheckedStateReader(self._snap)
        return self._checked

    def __enter__(self) -> StoreSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self._snap.close()

    def head(self) -> Head | None:
        raw = self._snap.get(schema.META_HEAD)
        return None if raw is None else Head.decode(raw)

    def state_get(self, key: bytes) -> bytes | None:
        """A state value, checked against the tree (StoredValueMismatch if it differs)."""
        return self._state().get(schema.STATE + key)

    def block_bytes(self, height: int) -> bytes | None:
        return self._snap.get(schema.block_key(height))  # type: ignore[no-any-return]

    def get(self, db_key: bytes) -> bytes | None:
        """A raw database value in this snapshot (for state/ modules: blocks' results,
        the archive)."""
        return self._snap.get(db_key)  # type: ignore[no-any-return]

    def overlay(self) -> Overlay:
        """State reads (typed, prefix walks) from this snapshot, each value checked against
        the tree; never committed."""
        return Overlay(self._state())

    def at_height(self, height: int) -> HistoricalView:
        """State and tree as they were right after block ``height`` (see HistoricalView)."""
        return HistoricalView(self._snap, height)


class HistoricalView:
    """Reads of the database as it was after block ``height``: the current value of a key,
    unless a block above ``height`` changed it, in which case the prior value its undo
    record kept. Cost follows the blocks since ``height`` (their undo records are read once),
    never the size of the state.
    """

    def __init__(self, snap: KVSnapshot, height: int) -> None:
        raw = snap.get(schema.META_HEAD)
        if raw is None:
            raise StoreError("store has no head")
        head = Head.decode(raw)
        if height > head.height:
            raise OperationRefused(f"height {height} is above the head {head.height}")
        self._snap = snap
        self.height = height
        self._prior: dict[bytes, bytes | None] = {}
        for h in range(head.height, height, -1):  # lower heights last: their prior wins
            undo = snap.get(schema.undo_key(h))
            if undo is None:
                raise OperationRefused(f"no undo record for height {h}: height {height} is no "
                                 "longer held")
            for k, v in decode_local(undo)["prior"]:
                self._prior[k] = v

    def get(self, db_key: bytes) -> bytes | None:
        v = self._prior.get(db_key, MISSING)
        return self._snap.get(db_key) if v is MISSING else v  # type: ignore[return-value]

    def keyspace(self, keyspace: bytes) -> KeyspaceReader:
        """Read-only access to one keyspace (a tree ``NodeStore`` for proofs)."""
        return KeyspaceReader(self, keyspace)


class KeyspaceReader:
    """One keyspace of a :class:`HistoricalView`; writes are refused."""

    def __init__(self, view: HistoricalView, keyspace: bytes) -> None:
        self._view = view
        self._ks = keyspace

    def get(self, key: bytes) -> bytes | None:
        return self._view.get(self._ks + key)

    def put(self, key: bytes, value: bytes) -> None:
        raise StoreError("historical views are read-only")

    def delete(self, key: bytes) -> None:
        raise StoreError("historical views are read-only")


@dataclass(frozen=True, slots=True)
class PendingBlock:
    """Everything :meth:`Store.commit_block` writes for one block."""

    height: int
    block_hash: bytes
    block_bytes: bytes
    tx_hashes: list[bytes]
    result_bytes: list[bytes]
    head: Head


class Store:
    """The node's single LevelDB: blocks, indexes, state, undo records and metadata.

    ``db`` is any :class:`state.kv.KV` backend: LevelDB here, or memory / a scratch layer
    (:meth:`in_memory`, :meth:`scratch_of`) for the same code without files or writes.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True,
                 sync: bool = True, options: LevelDBOptions = DEFAULT_LEVELDB_OPTIONS) -> None:
        self.path: str | None = os.fspath(path)
        if create:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.options = options
        self.db: KV = open_leveldb(self.path, create, options)
        self.sync = sync
        self._check_schema()

    def reopen(self) -> None:
        """Close and open the LevelDB again. After a failed write (a full disk, no file
        descriptors) LevelDB refuses every later write until it is reopened, even once the
        cause is gone; reads keep working meanwhile. Only for a store on disk."""
        if self.path is None:
            raise StoreError("only a store on disk can be reopened")
        self.db.close()
        self.db = open_leveldb(self.path, False, self.options)
        self._check_schema()

    @classmethod
    def from_kv(cls, db: KV, *, sync: bool = False, path: str | None = None) -> Store:
        """A store over an open backend (it is closed with the store)."""
        store = cls.__new__(cls)
        store.path, store.db, store.sync = path, db, sync
        store.options = LevelDBOptions()
        try:
            store._check_schema()
        except StoreError:
            db.close()
            raise
        return store

    @classmethod
    def in_memory(cls) -> Store:
        """An empty store held in memory: the same code with no files."""
        return cls.from_kv(MemoryKV())

    @classmethod
    def scratch_of(cls, store: Store) -> Store:
        """A scratch copy of ``store`` as of now, for rehearsals: reads fall through to a
        snapshot of it, writes stay in memory and ``store`` is never written. Costs what
        the scratch writes, not the size of the state; closing it releases the snapshot."""
        return cls.from_kv(ScratchKV(store.db.snapshot(), owns_base=True))

    def _check_schema(self) -> None:
        version = self.db.get(schema.META_SCHEMA)
        if version is None:
            if self.db.get(schema.META_HEAD) is not None:
                raise StoreError("store has a head but no schema version")
        elif schema.height_from(version) != schema.SCHEMA_VERSION:
            raise StoreError(
                f"store schema version {schema.height_from(version)} is not "
                f"{schema.SCHEMA_VERSION}; this binary cannot read it"
            )

    def close(self) -> None:
        if not self.db.closed:
            self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads -----------------------------------------------------------------------------

    def head(self) -> Head | None:
        raw = self.db.get(schema.META_HEAD)
        return None if raw is None else Head.decode(raw)

    def genesis_hash(self) -> bytes | None:
        return self.db.get(schema.META_GENESIS_HASH)

    def state_get(self, key: bytes) -> bytes | None:
        return self.db.get(schema.STATE + key)

    def block_bytes(self, height: int) -> bytes | None:
        return self.db.get(schema.block_key(height))

    def earliest_block_height(self) -> int | None:
        """The lowest height whose block this store holds (above the genesis, or above the
        height a snapshot import started from); None before the first block."""
        with self.db.iterator(prefix=schema.BLOCK, include_value=False) as it:
            for k in it:
                return schema.height_from(k[len(schema.BLOCK):])
        return None

    def block(self, height: int) -> Block | None:
        """The committed block at ``height``, decoded (None above the head)."""
        raw = self.block_bytes(height)
        return None if raw is None else Block.decode_block(raw)

    def height_of(self, block_hash: bytes) -> int | None:
        raw = self.db.get(schema.block_hash_key(block_hash))
        return None if raw is None else schema.height_from(raw)

    def tx_location(self, tx_hash: bytes) -> tuple[int, int] | None:
        raw = self.db.get(schema.tx_key(tx_hash))
        return None if raw is None else schema.tx_location_from(raw)

    def results(self, height: int) -> list[bytes] | None:
        raw = self.db.get(schema.results_key(height))
        return None if raw is None else list(decode_local(raw))

    def undo_record(self, height: int, keyspace: bytes | None = schema.STATE
                    ) -> list[tuple[bytes, bytes | None]] | None:
        """Prior values of the keys block ``height`` changed: in one keyspace (prefix
        stripped), or every database key (``keyspace=None``)."""
        raw = self.db.get(schema.undo_key(height))
        if raw is None:
            return None
        obj = decode_local(raw)
        if keyspace is None:
            return [(k, v) for k, v in obj["prior"]]
        n = len(keyspace)
        return [(k[n:], v) for k, v in obj["prior"] if k[:n] == keyspace]

    def iter_state(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Committed state (key, value) pairs under ``prefix``, in key order."""
        for k, v in self.db.iterator(prefix=schema.STATE + prefix):
            yield k[1:], v

    def dump_state(self) -> list[tuple[bytes, bytes]]:
        """The full committed state, sorted: two stores agree iff their dumps are equal."""
        return list(self.iter_state())

    def overlay(self, keyspace: bytes = schema.STATE) -> Overlay:
        """Uncommitted writes over one keyspace: state values, or state tree nodes."""
        return Overlay(self.db, keyspace)

    def prune_undo(self, below: int, max_records: int = 64) -> int:
        """Delete up to ``max_records`` undo records of heights below ``below`` (oldest
        first), in one batch; returns how many. Idempotent: a crash just leaves some for the
        next call. A rollback or historical read below the oldest kept height then fails
        with "no undo record"."""
        keys: list[bytes] = []
        with self.db.iterator(prefix=schema.UNDO, include_value=False) as it:
            for k in it:
                if schema.height_from(k[1:]) >= below or len(keys) >= max_records:
                    break
                keys.append(k)
        if keys:
            with self.db.write_batch(transaction=True, sync=self.sync) as wb:
                for k in keys:
                    wb.delete(k)
        return len(keys)

    def snapshot(self) -> StoreSnapshot:
        """A consistent read view (head and state from the same instant) while blocks commit."""
        return StoreSnapshot(self.db.snapshot())

    # -- writes ----------------------------------------------------------------------------

    def init_genesis(self, genesis_hash: bytes, chain_id: str,
                     overlays: Sequence[Overlay], head: Head,
                     extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
        """Write the genesis state (and its tree), ``extra`` raw keys and the head in one
        batch; refuses a used store."""
        if self.head() is not None:
            raise StoreError("store already initialised")
        with self.db.write_batch(transaction=True, sync=self.sync) as wb:
            wb.put(schema.META_SCHEMA, schema.height_bytes(schema.SCHEMA_VERSION))
            wb.put(schema.META_GENESIS_HASH, genesis_hash)
            wb.put(schema.META_CHAIN_ID, chain_id.encode())
            for ov in overlays:
                for k, v in ov.changes():
                    if v is not None:
                        wb.put(ov.keyspace + k, v)
            for k, v in extra:
                wb.put(k, v)
            wb.put(schema.META_HEAD, head.encode())

    def commit_writes(self, changes: Sequence[tuple[bytes, bytes | None]],
                      head: Head | None = None) -> None:
        """Apply raw key writes (None deletes) in ONE batch, in order, and with ``head`` move
        the head with them: a rollback step, a snapshot restore, a scratch copy rewound.
        With :meth:`init_genesis` and :meth:`commit_block` the only writers of the head."""
        with self.db.write_batch(transaction=True, sync=self.sync) as wb:
            for k, v in changes:
                if v is None:
                    wb.delete(k)
                else:
                    wb.put(k, v)
            if head is not None:
                wb.put(schema.META_HEAD, head.encode())

    def commit_block(self, overlays: Sequence[Overlay], pending: PendingBlock,
                     extra_meta: Sequence[tuple[bytes, bytes | None]] = ()) -> None:
        """Atomically commit one block: block, indexes, results, the writes of every overlay
        (state values and state tree nodes), the undo record and the new head.

        The undo record lists the prior value of every database key the overlays change,
        keyspace prefix included, so one mechanism rolls back state and tree alike.
        """
        prev = self.db.get(schema.META_HEAD)
        writes = [(ov.keyspace + k, v, ov.priors.get(k)) for ov in overlays
                  for k, v in ov.changes()]
        undo = encode({"prev_head": prev, "prior": [[k, p] for k, _, p in writes]})
        h = pending.height
        loc = schema.tx_location
        with self.db.write_batch(transaction=True, sync=self.sync) as wb:
            wb.put(schema.block_key(h), pending.block_bytes)
            wb.put(schema.block_hash_key(pending.block_hash), schema.height_bytes(h))
            for i, th in enumerate(pending.tx_hashes):
                wb.put(schema.TX_INDEX + th, loc(h, i))
            wb.put(schema.results_key(h), encode(pending.result_bytes))
            for k, v, _ in writes:
                if v is None:
                    wb.delete(k)
                else:
                    wb.put(k, v)
            wb.put(schema.undo_key(h), undo)
            for k, v in extra_meta:
                if not k.startswith(schema.META):
                    raise StoreError("extra writes of a block commit must be metadata")
                if v is None:
                    wb.delete(k)
                else:
                    wb.put(k, v)
            wb.put(schema.META_HEAD, pending.head.encode())
