"""Key-value backends behind one plyvel-shaped API: LevelDB, memory, and a scratch layer.

Why this exists: the store, the state machine, rollback and replay reach the database only
through a small subset of ``plyvel.DB`` (:class:`KV`). Two more implementations of that
subset let the same code run

* fully in memory (:class:`MemoryKV`: tests and tools, no files), and
* on a scratch copy-on-write layer over a consistent snapshot (:class:`ScratchKV`): reads
  fall through to the snapshot, writes (deletes as tombstones) stay in memory and the real
  database is never written. An operator's rehearsal of a recovery rolls back and replays
  blocks there at a cost that follows what changes, not the size of the state.

Both iterate with plyvel's own iterator logic (:class:`PlyvelIterator`, a port of plyvel 1.5's
state machine) over a raw cursor, so ranges, include flags, reverse order and ``seek`` match
LevelDB exactly, quirks included. Like LevelDB, an iterator (and a snapshot) sees the data as
it was when it was opened: a later write first hands the entry it replaces to each open view
(:class:`View`), so opening one costs O(1), never a copy.
"""

from __future__ import annotations

from typing import Protocol

from state.kv_iteration import (
    ABSENT,
    TOMB,
    Cursor,
    KVIterator,
    Layer,
    LayerCursor,
    NoBase,
    PlyvelIterator,
    View,
    as_value,
    check_key,
    increment,
)


class KVReader(Protocol):
    """Reads: what an ``Overlay`` needs from a database or a snapshot."""

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None: ...
    def iterator(self, prefix: bytes | None = None, start: bytes | None = None,
                 stop: bytes | None = None, include_start: bool = True,
                 include_stop: bool = False, reverse: bool = False, include_key: bool = True,
                 include_value: bool = True, fill_cache: bool = True) -> KVIterator: ...


class KVSnapshot(KVReader, Protocol):
    """A read-only consistent view; ``raw_iterator`` lets a :class:`ScratchKV` sit on it."""

    def raw_iterator(self) -> Cursor: ...
    def close(self) -> None: ...
    def __enter__(self) -> KVSnapshot: ...
    def __exit__(self, *exc: object) -> None: ...


class KVBatch(Protocol):
    """What ``write_batch()`` returns, used as a context manager."""

    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...
    def __enter__(self) -> KVBatch: ...
    def __exit__(self, *exc: object) -> None: ...


class KV(KVReader, Protocol):
    """The subset of ``plyvel.DB`` the node uses; every backend implements exactly this."""

    @property
    def closed(self) -> bool: ...
    def put(self, key: bytes, value: bytes, sync: bool = False) -> None: ...
    def delete(self, key: bytes, sync: bool = False) -> None: ...
    def write_batch(self, transaction: bool = False, sync: bool = False) -> KVBatch: ...
    def snapshot(self) -> KVSnapshot: ...
    def close(self) -> None: ...


class _Reader:
    """Reads of a view, over an optional base: shared by the stores and their snapshots."""

    _base: KVSnapshot | None

    def raw_iterator(self) -> Cursor:
        """A raw cursor on the data as of now (so a :class:`ScratchKV` can sit on this)."""
        raise NotImplementedError

    def _lookup(self, e: object, key: bytes, default: bytes | None) -> bytes | None:
        if e is ABSENT:
            return default if self._base is None else self._base.get(key, default)
        return default if e is TOMB else e  # type: ignore[return-value]

    def iterator(self, prefix: bytes | None = None, start: bytes | None = None,
                 stop: bytes | None = None, include_start: bool = True,
                 include_stop: bool = False, reverse: bool = False, include_key: bool = True,
                 include_value: bool = True, fill_cache: bool = True) -> PlyvelIterator:
        """Like plyvel's ``iterator`` (``fill_cache`` is ignored): a view as of now."""
        for name, v in (("prefix", prefix), ("start", start), ("stop", stop)):
            if v is not None:
                check_key(name, v)
        if prefix is not None:
            if start is not None or stop is not None:
                raise TypeError("'prefix' cannot be used together with 'start' or 'stop'")
            start, stop, include_start, include_stop = prefix, increment(prefix), True, False
        return PlyvelIterator(self.raw_iterator(), start, stop, include_start, include_stop,
                              reverse,
                         include_key, include_value)


class _Snapshot(_Reader):
    """A frozen view of a memory or scratch store (over the same base); it survives later
    writes at no copying cost, and its iterators survive its close, as plyvel's do."""

    def __init__(self, view: View, base: KVSnapshot | None) -> None:
        self._view: View | None = view
        self._base = base

    def _open(self) -> View:
        if self._view is None:
            raise RuntimeError("Database or snapshot is closed")
        return self._view

    def raw_iterator(self) -> Cursor:
        base = NoBase() if self._base is None else self._base.raw_iterator()
        return LayerCursor(self._open().hold(), base)

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        check_key("key", key)
        return self._lookup(self._open().entry(key), key, default)

    def close(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None

    def __enter__(self) -> _Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Batch:
    """A write batch: ops in order, applied at once when written. Leaving the ``with``
    block by an exception writes nothing with ``transaction=True`` and, exactly as
    plyvel does, the ops made so far without it."""

    def __init__(self, kv: _LayerKV, transaction: bool) -> None:
        self._kv, self._transaction = kv, transaction
        self._ops: list[tuple[bytes, object]] = []

    def put(self, key: bytes, value: bytes) -> None:
        check_key("key", key)
        self._ops.append((key, as_value(value)))

    def delete(self, key: bytes) -> None:
        check_key("key", key)
        self._ops.append((key, self._kv._gone))

    def clear(self) -> None:
        self._ops.clear()

    def write(self) -> None:
        self._kv._layer.write(self._ops)

    def __enter__(self) -> _Batch:
        self._kv._open()
        return self

    def __exit__(self, *exc: object) -> None:
        if not (self._transaction and exc[0] is not None):
            self.write()
        self.clear()


class _LayerKV(_Reader):
    """A :class:`KV` on an in-memory layer over an optional read-only base."""

    def __init__(self, base: KVSnapshot | None, owns_base: bool) -> None:
        self._layer = Layer()
        self._base = base
        self._owns_base = owns_base
        self._gone = ABSENT if base is None else TOMB  # what a delete leaves

    @property
    def closed(self) -> bool:
        return self._layer.closed

    @property
    def written_count(self) -> int:
        """Entries held in memory (a scratch layer's puts and tombstones): its memory cost."""
        return len(self._layer.data)

    def _open(self) -> Layer:
        if self._layer.closed:
            raise RuntimeError("Database is closed")
        return self._layer

    def raw_iterator(self) -> Cursor:
        base = NoBase() if self._base is None else self._base.raw_iterator()
        return LayerCursor(View(self._open()), base)

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        check_key("key", key)
        layer = self._open()
        with layer.lock:
            e = layer.data.get(key, ABSENT)
        return self._lookup(e, key, default)

    def put(self, key: bytes, value: bytes, sync: bool = False) -> None:
        """Write one key (``sync`` is accepted and means nothing in memory)."""
        check_key("key", key)
        self._layer.write(((key, as_value(value)),))

    def delete(self, key: bytes, sync: bool = False) -> None:
        check_key("key", key)
        self._layer.write(((key, self._gone),))

    def write_batch(self, transaction: bool = False, sync: bool = False) -> _Batch:
        self._open()
        return _Batch(self, transaction)

    def snapshot(self) -> _Snapshot:
        """A stable view: later writes do not show in it (O(1), nothing copied)."""
        return _Snapshot(View(self._open()), self._base)

    def close(self) -> None:
        """Close this store, its iterators and snapshots (and an owned base)."""
        with self._layer.lock:
            if self._layer.closed:
                return
            self._layer.closed = True
            self._layer.views.clear()
        if self._owns_base and self._base is not None:
            self._base.close()


class MemoryKV(_LayerKV):
    """A :class:`KV` held wholly in memory, keys in byte order (a sorted dict)."""

    def __init__(self) -> None:
        super().__init__(None, False)


class ScratchKV(_LayerKV):
    """A :class:`KV` whose writes stay in memory over a read-only ``base`` (a plyvel
    snapshot, or another backend's): reads try the layer, then the base; deletes are
    tombstones; iterators merge both. The base is never written; ``close`` closes it only
    if ``owns_base``. Memory and cost follow what was written, not the base's size."""

    def __init__(self, base: KVSnapshot, *, owns_base: bool = False) -> None:
        super().__init__(base, owns_base)
