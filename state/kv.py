"""Key-value backends behind one plyvel-shaped API: LevelDB, memory, and a scratch layer.

Why this exists: the store, the state machine, rollback and replay reach the database only
through a small subset of ``plyvel.DB`` (:class:`KV`). Two more implementations of that
subset let the same code run

* fully in memory (:class:`MemoryKV`: tests and tools, no files), and
* on a scratch copy-on-write layer over a consistent snapshot (:class:`ScratchKV`): reads
  fall through to the snapshot, writes (deletes as tombstones) stay in memory and the real
  database is never written. An operator's rehearsal of a recovery rolls back and replays
  blocks there at a cost that follows what changes, not the size of the state.

Both iterate with plyvel's own iterator logic (:class:`_Iterator`, a port of plyvel 1.5's
state machine) over a raw cursor, so ranges, include flags, reverse order and ``seek`` match
LevelDB exactly, quirks included. Like LevelDB, an iterator (and a snapshot) sees the data as
it was when it was opened: a later write first hands the entry it replaces to each open view
(:class:`_View`), so opening one costs O(1), never a copy.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any, Protocol

from sortedcontainers import SortedDict

_ABSENT = object()  # no entry in the layer: the base's value (if any) shows through
_TOMB = object()  # deleted in a scratch layer: hides the base's value
_UNSET = object()


class KVIterator(Protocol):
    """What ``iterator()`` returns (plyvel's ``Iterator``, as this code uses it)."""

    def __iter__(self) -> KVIterator: ...
    def __next__(self) -> Any: ...
    def seek(self, target: bytes) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> KVIterator: ...
    def __exit__(self, *exc: object) -> None: ...


class Cursor(Protocol):
    """A raw cursor (plyvel's ``RawIterator`` subset): how a scratch layer reads its base."""

    def valid(self) -> bool: ...
    def seek(self, target: bytes) -> None: ...
    def seek_to_first(self) -> None: ...
    def seek_to_last(self) -> None: ...
    def next(self) -> None: ...
    def prev(self) -> None: ...
    def key(self) -> bytes: ...
    def value(self) -> bytes: ...
    def close(self) -> None: ...


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


def _check(name: str, v: object) -> None:
    """plyvel's argument check: keys and bounds are ``bytes`` exactly."""
    if type(v) is not bytes:
        raise TypeError(f"Argument '{name}' has incorrect type (expected bytes, got "
                        f"{type(v).__name__})")


def _value(v: object) -> bytes:
    """A value as plyvel takes it: any bytes-like object, stored as bytes."""
    return v if type(v) is bytes else memoryview(v).tobytes()  # type: ignore[arg-type]


def _increment(prefix: bytes) -> bytes | None:
    """plyvel's ``bytes_increment``: the end of a prefix range (None: no end)."""
    p = prefix.rstrip(b"\xff")
    return p[:-1] + bytes([p[-1] + 1]) if p else None


class _Layer:
    """Sorted in-memory entries (key -> bytes, or a tombstone) and the views open on them."""

    __slots__ = ("data", "views", "lock", "closed")

    def __init__(self) -> None:
        self.data = SortedDict()
        self.views: weakref.WeakSet[_View] = weakref.WeakSet()
        self.lock = threading.RLock()  # a batch lands whole for readers in other threads
        self.closed = False

    def write(self, ops: Iterable[tuple[bytes, object]]) -> None:
        """Apply (key, entry) ops in order; entry ``_ABSENT`` removes the key."""
        with self.lock:
            if self.closed:
                raise RuntimeError("Database is closed")
            data = self.data
            views = list(self.views) if self.views else ()
            for k, e in ops:
                for v in views:
                    if v.before is None:
                        v.before = SortedDict()
                    if k not in v.before:
                        v.before[k] = data.get(k, _ABSENT)
                if e is _ABSENT:
                    data.pop(k, None)
                else:
                    data[k] = e


def _near(d: Any, key: bytes | None, inclusive: bool, forward: bool) -> Any:
    """The first key of sorted dict ``d`` from ``key`` in a direction (None: from the end)."""
    if forward:
        i = 0 if key is None else d.bisect_left(key) if inclusive else d.bisect_right(key)
        return d.keys()[i] if i < len(d) else None
    i = len(d) if key is None else d.bisect_right(key) if inclusive else d.bisect_left(key)
    return d.keys()[i - 1] if i > 0 else None


class _View:
    """A layer's entries as they were when the view was opened (an implicit snapshot).

    A later write first records the entry it replaces in ``before``: O(1) to open, O(open
    views) per write, never a copy. Held by iterators and snapshots (``refs``); the layer
    forgets it when the last holder closes or is garbage-collected (a weak reference).
    """

    __slots__ = ("_layer", "before", "_refs", "__weakref__")

    def __init__(self, layer: _Layer) -> None:
        self._layer = layer
        self.before: Any = None  # a SortedDict once a write lands under the view
        self._refs = 1
        with layer.lock:
            if layer.closed:
                raise RuntimeError("Database is closed")
            layer.views.add(self)

    def hold(self) -> _View:
        with self._layer.lock:
            self._refs += 1
        return self

    def release(self) -> None:
        with self._layer.lock:
            self._refs -= 1
            if self._refs == 0:
                self._layer.views.discard(self)

    def entry(self, key: bytes) -> object:
        """The key's entry in the view: bytes, ``_TOMB`` or ``_ABSENT``."""
        with self._layer.lock:
            if self._layer.closed:
                raise RuntimeError("Database is closed")
            e = _UNSET if self.before is None else self.before.get(key, _UNSET)
            return self._layer.data.get(key, _ABSENT) if e is _UNSET else e

    def step(self, key: bytes | None, inclusive: bool, forward: bool
             ) -> tuple[bytes, object] | None:
        """The nearest (key, entry) from ``key`` in a direction (None: from the end):
        two bisections per key the view sees (removed entries are stepped over)."""
        layer = self._layer
        with layer.lock:
            if layer.closed:
                raise RuntimeError("Database is closed")
            data, before = layer.data, self.before
            while True:
                a = _near(data, key, inclusive, forward)
                b = _near(before, key, inclusive, forward) if before else None
                if b is None or (a is not None and (a < b if forward else a > b)):
                    if a is None:
                        return None
                    k, e = a, data[a]
                else:
                    k, e = b, before[b]
                if e is not _ABSENT:
                    return k, e
                key, inclusive = k, False


class _NoBase:
    """The empty base cursor of a memory store."""

    def valid(self) -> bool:
        return False

    def _stay(self, *target: bytes) -> None:
        """Nothing to move: the cursor is never valid."""

    seek = seek_to_first = seek_to_last = next = prev = close = _stay

    def key(self) -> bytes:
        raise RuntimeError("cursor is not positioned")

    value = key


class _LayerCursor:
    """A :class:`Cursor` over a layer's view merged with its base's cursor: layer entries
    win, tombstones hide base keys. Going forward the base cursor sits at the smallest base
    key >= the current key (backward: the largest <=), so each step moves it once; it seeks
    only on ``seek`` and when the direction turns."""

    __slots__ = ("_view", "_base", "_cur", "_fwd", "_hi")

    def __init__(self, view: _View, base: Cursor) -> None:
        self._view, self._base = view, base
        self._cur: tuple[bytes, Any] | None = None
        self._fwd = True
        self._hi: bytes | None = None

    def bound(self, hi: bytes) -> None:
        """A forward iterator never yields keys above ``hi``: moving forward, once both the
        layer and the base are past it, the cursor goes invalid instead of stepping over
        every tombstone beyond (a rollback in a scratch layer deletes runs of blocks, undo
        records and index entries: without the bound, opening an iterator on a short range
        below them stepped over all of them)."""
        self._hi = hi

    def valid(self) -> bool:
        return self._cur is not None

    def key(self) -> bytes:
        if self._cur is None:
            raise RuntimeError("cursor is not positioned")
        return self._cur[0]

    def value(self) -> bytes:
        self.key()
        return self._cur[1]  # type: ignore[index,no-any-return]

    def close(self) -> None:
        self._view.release()
        self._base.close()

    def _settle(self, key: bytes | None, inclusive: bool, forward: bool) -> None:
        """Position on the nearest live key from ``key``; the base cursor is already at the
        nearest base key in that range."""
        base, view = self._base, self._view
        self._fwd = forward
        hi = self._hi if forward else None
        top = view.step(key, inclusive, forward)
        while True:
            b = base.key() if base.valid() else None
            if top is None or (b is not None and (b < top[0] if forward else b > top[0])):
                self._cur = None if b is None else (b, base.value())
                return
            k, e = top
            if e is not _TOMB:
                self._cur = top
                return
            if hi is not None and k > hi and (b is None or b > hi):
                self._cur = None  # nothing at or below the bound is left
                return
            if b == k:
                base.next() if forward else base.prev()
            top = view.step(k, False, forward)

    def seek(self, target: bytes) -> None:
        self._base.seek(target)
        self._settle(target, True, True)

    def seek_to_first(self) -> None:
        self._base.seek_to_first()
        self._settle(None, True, True)

    def seek_to_last(self) -> None:
        self._base.seek_to_last()
        self._settle(None, True, False)

    def next(self) -> None:
        k, base = self.key(), self._base
        if not base.valid():
            if not self._fwd:
                base.seek_to_first()  # no base key <= k: the first is > k
        elif not self._fwd or base.key() == k:
            base.next()  # to the smallest base key > k
        self._settle(k, False, True)

    def prev(self) -> None:
        k, base = self.key(), self._base
        if not base.valid():
            if self._fwd:
                base.seek_to_last()  # no base key >= k: the last is < k
        elif self._fwd or base.key() == k:
            base.prev()  # to the largest base key < k
        self._settle(k, False, False)


_BEFORE, _AFTER, _BETWEEN, _POSITIONED = range(4)


class _Iterator:
    """plyvel 1.5's ``Iterator`` state machine, step for step, over a :class:`Cursor`, so
    every backend iterates as LevelDB does, its quirks included: a seek on a forward
    iterator can land on an excluded ``start``; after a seek a reverse iterator yields keys
    below the target, starting with at most one below ``start`` (or the prefix); a reverse
    iterator whose largest key in range equals ``start`` (the prefix) yields nothing."""

    __slots__ = ("_c", "_start", "_stop", "_inc_start", "_inc_stop", "_reverse", "_keys",
                 "_values", "_state")

    def __init__(self, cursor: Cursor, start: bytes | None, stop: bytes | None,
                 include_start: bool, include_stop: bool, reverse: bool, include_key: bool,
                 include_value: bool) -> None:
        self._c: Cursor | None = cursor
        if stop is not None and not reverse and isinstance(cursor, _LayerCursor):
            cursor.bound(stop)
        self._start, self._stop = start, stop
        self._inc_start, self._inc_stop = include_start, include_stop
        self._reverse, self._keys, self._values = reverse, include_key, include_value
        self._state = _AFTER if reverse else _BEFORE

    def __iter__(self) -> _Iterator:
        return self

    def __enter__(self) -> _Iterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._c is not None:
            self._c.close()
            self._c = None

    def _cursor(self) -> Cursor:
        if self._c is None:
            raise RuntimeError("Database or iterator is closed")
        return self._c

    def _current(self, c: Cursor) -> Any:
        if self._keys:
            return (c.key(), c.value()) if self._values else c.key()
        return c.value() if self._values else None

    def __next__(self) -> Any:
        return self._prev() if self._reverse else self._next()

    def _next(self) -> Any:
        c, start, stop = self._cursor(), self._start, self._stop
        if self._state == _BETWEEN:
            c.next()
            if not c.valid():
                self._state = _AFTER
                raise StopIteration
        elif self._state == _POSITIONED:
            self._state = _BETWEEN
        elif self._state == _BEFORE:
            c.seek_to_first() if start is None else c.seek(start)
            if not c.valid():
                raise StopIteration
            if start is not None and not self._inc_start and c.key() == start:
                c.next()
                if not c.valid():
                    raise StopIteration
            self._state = _BETWEEN
        else:
            raise StopIteration
        if stop is not None and (c.key() > stop or (c.key() == stop and not self._inc_stop)):
            self._state = _AFTER
            raise StopIteration
        return self._current(c)

    def _prev(self) -> Any:
        c, start, stop = self._cursor(), self._start, self._stop
        if self._state == _POSITIONED:
            c.prev()
            if not c.valid():
                self._state = _BEFORE
                raise StopIteration
        elif self._state == _BEFORE:
            raise StopIteration
        elif self._state == _AFTER:
            if stop is None:
                c.seek_to_last()
            else:
                c.seek(stop)
                if not c.valid():
                    c.seek_to_last()
                elif not self._inc_stop:
                    c.prev()
                if c.valid() and c.key() > stop:
                    c.prev()
            if not c.valid() or (start is not None and start >= c.key()):
                raise StopIteration
        out = self._current(c)
        c.prev()
        if not c.valid():
            self._state = _BEFORE
        elif start is None or c.key() > start or (c.key() == start and self._inc_start):
            self._state = _BETWEEN
        else:
            self._state = _BEFORE
        return out

    def seek(self, target: bytes) -> None:
        c = self._cursor()
        _check("target", target)
        if self._start is not None and target < self._start:
            target = self._start
        if self._stop is not None and target > self._stop:
            target = self._stop
        c.seek(target)
        self._state = _POSITIONED if c.valid() else _AFTER


class _Reader:
    """Reads of a view, over an optional base: shared by the stores and their snapshots."""

    _base: KVSnapshot | None

    def raw_iterator(self) -> Cursor:
        """A raw cursor on the data as of now (so a :class:`ScratchKV` can sit on this)."""
        raise NotImplementedError

    def _lookup(self, e: object, key: bytes, default: bytes | None) -> bytes | None:
        if e is _ABSENT:
            return default if self._base is None else self._base.get(key, default)
        return default if e is _TOMB else e  # type: ignore[return-value]

    def iterator(self, prefix: bytes | None = None, start: bytes | None = None,
                 stop: bytes | None = None, include_start: bool = True,
                 include_stop: bool = False, reverse: bool = False, include_key: bool = True,
                 include_value: bool = True, fill_cache: bool = True) -> _Iterator:
        """Like plyvel's ``iterator`` (``fill_cache`` is ignored): a view as of now."""
        for name, v in (("prefix", prefix), ("start", start), ("stop", stop)):
            if v is not None:
                _check(name, v)
        if prefix is not None:
            if start is not None or stop is not None:
                raise TypeError("'prefix' cannot be used together with 'start' or 'stop'")
            start, stop, include_start, include_stop = prefix, _increment(prefix), True, False
        return _Iterator(self.raw_iterator(), start, stop, include_start, include_stop, reverse,
                         include_key, include_value)


class _Snapshot(_Reader):
    """A frozen view of a memory or scratch store (over the same base); it survives later
    writes at no copying cost, and its iterators survive its close, as plyvel's do."""

    def __init__(self, view: _View, base: KVSnapshot | None) -> None:
        self._view: _View | None = view
        self._base = base

    def _open(self) -> _View:
        if self._view is None:
            raise RuntimeError("Database or snapshot is closed")
        return self._view

    def raw_iterator(self) -> Cursor:
        base = _NoBase() if self._base is None else self._base.raw_iterator()
        return _LayerCursor(self._open().hold(), base)

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        _check("key", key)
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
        _check("key", key)
        self._ops.append((key, _value(value)))

    def delete(self, key: bytes) -> None:
        _check("key", key)
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
        self._layer = _Layer()
        self._base = base
        self._owns_base = owns_base
        self._gone = _ABSENT if base is None else _TOMB  # what a delete leaves

    @property
    def closed(self) -> bool:
        return self._layer.closed

    @property
    def written_count(self) -> int:
        """Entries held in memory (a scratch layer's puts and tombstones): its memory cost."""
        return len(self._layer.data)

    def _open(self) -> _Layer:
        if self._layer.closed:
            raise RuntimeError("Database is closed")
        return self._layer

    def raw_iterator(self) -> Cursor:
        base = _NoBase() if self._base is None else self._base.raw_iterator()
        return _LayerCursor(_View(self._open()), base)

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        _check("key", key)
        layer = self._open()
        with layer.lock:
            e = layer.data.get(key, _ABSENT)
        return self._lookup(e, key, default)

    def put(self, key: bytes, value: bytes, sync: bool = False) -> None:
        """Write one key (``sync`` is accepted and means nothing in memory)."""
        _check("key", key)
        self._layer.write(((key, _value(value)),))

    def delete(self, key: bytes, sync: bool = False) -> None:
        _check("key", key)
        self._layer.write(((key, self._gone),))

    def write_batch(self, transaction: bool = False, sync: bool = False) -> _Batch:
        self._open()
        return _Batch(self, transaction)

    def snapshot(self) -> _Snapshot:
        """A stable view: later writes do not show in it (O(1), nothing copied)."""
        return _Snapshot(_View(self._open()), self._base)

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
