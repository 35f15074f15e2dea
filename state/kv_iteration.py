"""How the in-memory and scratch backends iterate exactly as LevelDB does.

A scratch layer (state/kv.py) holds its writes, tombstones included, in a sorted dict and
merges them with its base's cursor; iterators follow plyvel 1.5's state machine step for
step, quirks included, so every backend yields the same keys for the same calls (the
contract suite, tests/state/test_kv_contract.py, holds them to it). Views give iterators and
snapshots the data as of their opening at O(1) cost: a later write first records the entry
it replaces in each open view.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any, Protocol

from sortedcontainers import SortedDict

ABSENT = object()  # no entry in the layer: the base's value (if any) shows through


TOMB = object()  # deleted in a scratch layer: hides the base's value


UNSET = object()


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


def check_key(name: str, v: object) -> None:
    """plyvel's argument check: keys and bounds are ``bytes`` exactly."""
    if type(v) is not bytes:
        raise TypeError(f"Argument '{name}' has incorrect type (expected bytes, got "
                        f"{type(v).__name__})")


def as_value(v: object) -> bytes:
    """A value as plyvel takes it: any bytes-like object, stored as bytes."""
    return v if type(v) is bytes else memoryview(v).tobytes()  # type: ignore[arg-type]


def increment(prefix: bytes) -> bytes | None:
    """plyvel's ``bytes_increment``: the end of a prefix range (None: no end)."""
    p = prefix.rstrip(b"\xff")
    return p[:-1] + bytes([p[-1] + 1]) if p else None


class Layer:
    """Sorted in-memory entries (key -> bytes, or a tombstone) and the views open on them."""

    __slots__ = ("data", "views", "lock", "closed")

    def __init__(self) -> None:
        self.data = SortedDict()
        self.views: weakref.WeakSet[View] = weakref.WeakSet()
        self.lock = threading.RLock()  # a batch lands whole for readers in other threads
        self.closed = False

    def write(self, ops: Iterable[tuple[bytes, object]]) -> None:
        """Apply (key, entry) ops in order; entry ``ABSENT`` removes the key."""
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
                        v.before[k] = data.get(k, ABSENT)
                if e is ABSENT:
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


class View:
    """A layer's entries as they were when the view was opened (an implicit snapshot).

    A later write first records the entry it replaces in ``before``: O(1) to open, O(open
    views) per write, never a copy. Held by iterators and snapshots (``refs``); the layer
    forgets it when the last holder closes or is garbage-collected (a weak reference).
    """

    __slots__ = ("_layer", "before", "_refs", "__weakref__")

    def __init__(self, layer: Layer) -> None:
        self._layer = layer
        self.before: Any = None  # a SortedDict once a write lands under the view
        self._refs = 1
        with layer.lock:
            if layer.closed:
                raise RuntimeError("Database is closed")
            layer.views.add(self)

    def hold(self) -> View:
        with self._layer.lock:
            self._refs += 1
        return self

    def release(self) -> None:
        with self._layer.lock:
            self._refs -= 1
            if self._refs == 0:
                self._layer.views.discard(self)

    def entry(self, key: bytes) -> object:
        """The key's entry in the view: bytes, ``TOMB`` or ``ABSENT``."""
        with self._layer.lock:
            if self._layer.closed:
                raise RuntimeError("Database is closed")
            e = UNSET if self.before is None else self.before.get(key, UNSET)
            return self._layer.data.get(key, ABSENT) if e is UNSET else e

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
                if e is not ABSENT:
                    return k, e
                key, inclusive = k, False


class NoBase:
    """The empty base cursor of a memory store."""

    def valid(self) -> bool:
        return False

    def _stay(self, *target: bytes) -> None:
        """Nothing to move: the cursor is never valid."""

    seek = seek_to_first = seek_to_last = next = prev = close = _stay

    def key(self) -> bytes:
        raise RuntimeError("cursor is not positioned")

    value = key


class LayerCursor:
    """A :class:`Cursor` over a layer's view merged with its base's cursor: layer entries
    win, tombstones hide base keys. Going forward the base cursor sits at the smallest base
    key >= the current key (backward: the largest <=), so each step moves it once; it seeks
    only on ``seek`` and when the direction turns."""

    __slots__ = ("_view", "_base", "_cur", "_fwd", "_hi")

    def __init__(self, view: View, base: Cursor) -> None:
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
            if e is not TOMB:
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


class PlyvelIterator:
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
        if stop is not None and not reverse and isinstance(cursor, LayerCursor):
            cursor.bound(stop)
        self._start, self._stop = start, stop
        self._inc_start, self._inc_stop = include_start, include_stop
        self._reverse, self._keys, self._values = reverse, include_key, include_value
        self._state = _AFTER if reverse else _BEFORE

    def __iter__(self) -> PlyvelIterator:
        return self

    def __enter__(self) -> PlyvelIterator:
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
        check_key("target", target)
        if self._start is not None and target < self._start:
            target = self._start
        if self._stop is not None and target > self._stop:
            target = self._stop
        c.seek(target)
        self._state = _POSITIONED if c.valid() else _AFTER
