"""The block overlay: a block's uncommitted writes over the committed state, journaled for
transaction reverts, with the ordered walks the order book and the liquidation index use.

Nothing touches the store until the block commits (state/store.py); the overlay records the
committed value of every key it reads or writes (``priors``), which becomes the block's undo
record and what the state tree checks each changed key against.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import TypeVar

from chain.codec import Struct
from chain.errors import DecodeError
from state import schema
from state.kv import KVReader
from state.overlay_walks import MISSING, ORDERED_PREFIXES, OrderedWalks
from state.store_errors import CorruptValue

T = TypeVar("T", bound=Struct)


def _decode_stored(db_key: bytes, raw: bytes, cls: type[T]) -> T:
    """A committed value decoded as ``cls``; one that does not decode is the store's failure
    (:class:`~state.store.CorruptValue`), not the reading transaction's fault."""
    try:
        return cls.decode(raw)
    except DecodeError as e:
        raise CorruptValue(f"stored value of {db_key!r} does not decode as {cls.__name__}: "
                           f"{e.message}", reason="corrupt_value") from e


class Overlay(OrderedWalks):
    """Uncommitted writes over the store's state keyspace, with checkpoints for tx reverts.

    ``get`` reads through to the database; the first read or write of a key records its
    committed value in ``priors``, which becomes the block's undo record.

    Typed access (``get_obj``/``put_obj``) keeps decoded values and encodes each written
    value once, when the block's changes are taken: an account touched five times in a block
    is decoded once and encoded once. Values are immutable structs, so sharing them is safe.
    """

    __slots__ = ("_db", "keyspace", "writes", "priors", "_jkeys", "_jolds", "_marks",
                 "_base_objs",
                 "_changes", "_live", "_floors", "_floor_lens", "_runs", "_gen", "_scans")

    def __init__(self, db: KVReader, keyspace: bytes = schema.STATE) -> None:
        self._db = db
        self.keyspace = keyspace
        self.writes: dict[bytes, bytes | Struct | None] = {}
        self.priors: dict[bytes, bytes | None] = {}
        # the journal of writes, for revert: each written key and the overlay's value of it
        # before the write (MISSING: none), in two lists (no tuple per write); only while a
        # checkpoint is outstanding (the tree's node writes and a block's end steps need none)
        self._jkeys: list[bytes] = []
        self._jolds: list[object] = []
        self._marks: list[int] = []  # checkpoints not yet released, ascending
        self._base_objs: dict[bytes, Struct | None] = {}
        self._changes: list[tuple[bytes, bytes | None]] | None = None
        # keys under ORDERED_PREFIXES whose current write in this block is live, sorted
        self._live: list[bytes] = []
        # prefix -> F: no live key under prefix is below F (memo of first_key_after, so a
        # walk from the start of a book side skips this block's removed orders only once).
        self._floors: dict[bytes, bytes] = {}
        self._floor_lens: set[int] = set()
        # prefix -> (A, B): every committed key under prefix from A up to (not including) B
        # (None: the prefix end) was deleted in this block, so a walk that meets one jumps
        # to B with one seek instead of stepping over each (the book's filled orders at the
        # touch). Dropped by a live write of a committed key inside it and by revert;
        # their prefix lengths are in _floor_lens.
        self._runs: dict[bytes, tuple[bytes, bytes | None]] = {}
        self._gen = 0  # bumped by revert: open walks re-seek their database iterator
        # prefix -> committed keys under it (live_keys): the database does not change under
        # an overlay, as ``priors`` already assumes
        self._scans: dict[bytes, list[bytes]] = {}

    def _base(self, key: bytes) -> bytes | None:
        v = self.priors.get(key, MISSING)
        if v is MISSING:
            v = self._db.get(self.keyspace + key)
            self.priors[key] = v  # type: ignore[assignment]
        return v  # type: ignore[return-value]

    def get(self, key: bytes) -> bytes | None:
        v = self.writes.get(key, MISSING)
        if v is MISSING:
            return self._base(key)
        if v is None or type(v) is bytes:
            return v  # type: ignore[return-value]
        return v.encode()  # type: ignore[attr-defined,no-any-return]

    def get_obj(self, key: bytes, cls: type[T]) -> T | None:
        """The current value of ``key`` decoded as ``cls`` (or None if absent)."""
        v = self.writes.get(key, MISSING)
        if v is MISSING:
            obj = self._base_objs.get(key, MISSING)
            if obj is MISSING or (obj is not None and type(obj) is not cls):
                raw = self._base(key)
                obj = None if raw is None else _decode_stored(self.keyspace + key, raw, cls)
                self._base_objs[key] = obj  # type: ignore[assignment]
            return obj  # type: ignore[return-value]
        if v is None:
            return None
        if type(v) is bytes:
            return cls.decode(v)
        return v  # type: ignore[return-value]

    def prior_obj(self, key: bytes, cls: type[T]) -> T | None:
        """The committed value of ``key`` (before this block) decoded as ``cls``."""
        obj = self._base_objs.get(key, MISSING)
        if obj is MISSING or (obj is not None and type(obj) is not cls):
            raw = self._base(key)
            obj = None if raw is None else _decode_stored(self.keyspace + key, raw, cls)
        return obj  # type: ignore[return-value]

    def _write(self, key: bytes, value: bytes | Struct | None) -> None:
        writes = self.writes
        old = writes.get(key, MISSING)
        priors = self.priors
        if key not in priors:
            priors[key] = self._db.get(self.keyspace + key)
        if key.startswith(ORDERED_PREFIXES):
            if (value is None) != (old is MISSING or old is None):
                self._set_live(key, value is not None)
            if value is not None and (self._floors or self._runs):
                floors, runs = self._floors, self._runs
                for n in self._floor_lens:
                    f = floors.get(key[:n])
                    if f is not None and key < f:
                        floors[key[:n]] = key  # a live key below the memo lowers it
                    r = runs.get(key[:n])
                    if r is not None and r[0] <= key and (r[1] is None or key < r[1]) \
                            and priors[key] is not None:
                        del runs[key[:n]]  # a committed key of the run is live again
        if self._marks:  # else no revert can reach this write: nothing to journal
            self._jkeys.append(key)
            self._jolds.append(old)
        writes[key] = value
        self._changes = None

    def _set_live(self, key: bytes, live: bool) -> None:
        """Add an ordered key to (or take it off) the sorted list of live written keys."""
        lv = self._live
        i = bisect_left(lv, key)
        if live:
            lv.insert(i, key)
        else:
            del lv[i]

    def put(self, key: bytes, value: bytes) -> None:
        self._write(key, value)

    def put_obj(self, key: bytes, value: Struct) -> None:
        """Write a struct value; it is encoded once, when the changes are taken."""
        self._write(key, value)

    def delete(self, key: bytes) -> None:
        self._write(key, None)

    def checkpoint(self) -> int:
        """A mark to :meth:`revert` to (e.g. before applying one transaction). It is
        outstanding until released (:meth:`release`) or voided by a revert to an earlier mark;
        writes are journaled only while a mark is outstanding."""
        mark = len(self._jkeys)
        self._marks.append(mark)
        return mark

    def release(self, mark: int) -> None:
        """The writes since ``mark`` are final for the caller: it will not revert to ``mark``
        or to a mark taken after it (e.g. a transaction is done). The values the journal
        kept for those reverts can go: a block's intermediate accounts, positions and pools
        would otherwise stay alive, for the garbage collector to scan, until it is done.

        With no earlier checkpoint outstanding the journal is emptied; otherwise it keeps
        what a revert to an earlier mark needs: each key written since ``mark``, with its
        value at ``mark``."""
        jkeys, jolds, marks = self._jkeys, self._jolds, self._marks
        while marks and marks[-1] > mark:
            marks.pop()  # taken after ``mark``: void
        if marks and marks[-1] == mark:
            marks.pop()  # ``mark`` itself (another checkpoint of the same length stays)
        if not marks:
            jkeys.clear()
            jolds.clear()
            return
        if len(jkeys) - mark < 2:
            return
        first: dict[bytes, object] = {}
        for i in range(mark, len(jkeys)):
            first.setdefault(jkeys[i], jolds[i])
        del jkeys[mark:]
        del jolds[mark:]
        jkeys.extend(first)
        jolds.extend(first.values())

    def revert(self, mark: int) -> None:
        """Undo every write made since ``mark``."""
        jkeys, jolds, writes, marks = self._jkeys, self._jolds, self.writes, self._marks
        while marks and marks[-1] > mark:
            marks.pop()  # marks taken since are void; ``mark`` stays (it may be used again)
        self._changes = None
        self._floors.clear()  # a revert may bring removed keys back
        self._runs.clear()
        self._gen += 1
        while len(jkeys) > mark:
            key = jkeys.pop()
            old = jolds.pop()
            cur = writes[key]
            if old is MISSING:
                del writes[key]
            else:
                writes[key] = old  # type: ignore[assignment]
            if (cur is None) != (old is MISSING or old is None) and \
                    key.startswith(ORDERED_PREFIXES):
                self._set_live(key, cur is None)

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, value) pairs under ``prefix`` in key order, overlay applied."""
        merged: dict[bytes, bytes | None] = {}
        full = self.keyspace + prefix
        for k, v in self._db.iterator(prefix=full):
            merged[k[1:]] = v
        for k in self.writes:
            if k.startswith(prefix):
                merged[k] = self.get(k)
        for k in sorted(merged):
            v = merged[k]
            if v is not None:
                yield k, v

    def changes(self) -> list[tuple[bytes, bytes | None]]:
        """Net writes that differ from the committed value, sorted by key (memoised)."""
        if self._changes is None:
            out = []
            priors = self.priors
            for k, v in self.writes.items():
                if v is not None and type(v) is not bytes:
                    v = v.encode()  # type: ignore[union-attr]
                if priors.get(k, MISSING) != v:
                    out.append((k, v))
            out.sort()
            self._changes = out  # type: ignore[assignment]
        return self._changes  # type: ignore[return-value]
