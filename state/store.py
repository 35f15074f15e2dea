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
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack
import plyvel

from chain.codec import U64, Bytes32, Struct, decode, encode
from chain.errors import ChainError
from state import schema
from state.kv import KV, KVReader, KVSnapshot, MemoryKV, ScratchKV

_MISSING = object()


def decode_local(raw: bytes) -> Any:
    """Decode a record this node wrote itself (undo records, stored results): plain msgpack,
    without the canonical-form checks that data from other parties gets. Undo records are
    the hot path of a rollback; re-checking their form cost more than undoing them."""
    return msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=False)


WRITE_BUFFER_BYTES = 64 * 1024 * 1024
ORDERED_PREFIXES = (b"book/", b"trig/", b"pos/", b"aord/", b"mkt/", b"liq/")
"""State key prefixes walked in key order while a block runs (see Overlay.first_key_after)."""


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return b"\xff" * (len(prefix) + 1)
    p[-1] += 1
    return bytes(p)
T = TypeVar("T", bound=Struct)


class StoreError(ChainError):
    """The store is missing, of another layout, or inconsistent with the node's config."""

    reason = "store_error"


@dataclass(frozen=True, slots=True)
class Head(Struct):
    """The last committed block: what the next block links to."""

    height: U64
    hash: Bytes32
    state_root: Bytes32
    era: U64
    time: U64


class Overlay:
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
        # before the write (_MISSING: none), in two lists (no tuple per write); only while a
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
        v = self.priors.get(key, _MISSING)
        if v is _MISSING:
            v = self._db.get(self.keyspace + key)
            self.priors[key] = v  # type: ignore[assignment]
        return v  # type: ignore[return-value]

    def get(self, key: bytes) -> bytes | None:
        v = self.writes.get(key, _MISSING)
        if v is _MISSING:
            return self._base(key)
        if v is None or type(v) is bytes:
            return v  # type: ignore[return-value]
        return v.encode()  # type: ignore[attr-defined,no-any-return]

    def get_obj(self, key: bytes, cls: type[T]) -> T | None:
        """The current value of ``key`` decoded as ``cls`` (or None if absent)."""
        v = self.writes.get(key, _MISSING)
        if v is _MISSING:
            obj = self._base_objs.get(key, _MISSING)
            if obj is _MISSING or (obj is not None and type(obj) is not cls):
                raw = self._base(key)
                obj = None if raw is None else cls.decode(raw)
                self._base_objs[key] = obj  # type: ignore[assignment]
            return obj  # type: ignore[return-value]
        if v is None:
            return None
        if type(v) is bytes:
            return cls.decode(v)
        return v  # type: ignore[return-value]

    def prior_obj(self, key: bytes, cls: type[T]) -> T | None:
        """The committed value of ``key`` (before this block) decoded as ``cls``."""
        obj = self._base_objs.get(key, _MISSING)
        if obj is _MISSING or (obj is not None and type(obj) is not cls):
            raw = self._base(key)
            obj = None if raw is None else cls.decode(raw)
        return obj  # type: ignore[return-value]

    def _write(self, key: bytes, value: bytes | Struct | None) -> None:
        writes = self.writes
        old = writes.get(key, _MISSING)
        priors = self.priors
        if key not in priors:
            priors[key] = self._db.get(self.keyspace + key)
        if key.startswith(ORDERED_PREFIXES):
            if (value is None) != (old is _MISSING or old is None):
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
            if old is _MISSING:
                del writes[key]
            else:
                writes[key] = old  # type: ignore[assignment]
            if (cur is None) != (old is _MISSING or old is None) and \
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

    def first_key_after(self, prefix: bytes, after: bytes = b"") -> bytes | None:
        """The smallest live key under ``prefix`` greater than ``after`` (overlay applied).

        Cost does not grow with the size of the range: at most one database seek (none from
        the start of the prefix while the memo's key is live) plus a bisection of this
        block's live writes; ``prefix`` must be one of ``ORDERED_PREFIXES`` (the order book
        and the liquidation index are walked with this).
        """
        if not prefix.startswith(ORDERED_PREFIXES):
            raise ValueError(f"{prefix!r} is not an ordered keyspace")
        lo = max(prefix, after)
        inclusive = after < prefix
        floor = self._floors.get(prefix)
        from_floor = inclusive
        if floor is not None:
            if lo < floor:
                # The memo is the smallest live key when set (or the prefix end: none) and
                # stays so until it is deleted: a live write below it lowers it, a revert
                # drops it. So unless this block deleted it, it is the answer, no seek.
                if not floor.startswith(prefix):
                    return None
                if self.writes.get(floor, _MISSING) is not None:
                    return floor
                lo, inclusive, from_floor = floor, True, True  # nothing live below the memo
            elif after == floor and self.writes.get(after, _MISSING) is None:
                from_floor = True  # the memo's key was removed: nothing live up to it
        found = self._first_live(prefix, lo, inclusive)
        if from_floor:
            if prefix not in self._floors:
                self._floor_lens.add(len(prefix))
            self._floors[prefix] = _prefix_end(prefix) if found is None else found
        return found

    def _first_live_written(self, prefix: bytes, lo: bytes, inclusive: bool) -> bytes | None:
        """The smallest key under ``prefix`` this block wrote a live value to, from ``lo``
        (``lo`` at or above ``prefix``): one bisection of the live written keys, however
        many keys the block deleted under ``prefix`` (e.g. cancelled orders)."""
        live = self._live
        i = bisect_left(live, lo) if inclusive else bisect_right(live, lo)
        if i < len(live) and live[i].startswith(prefix):
            return live[i]
        return None

    def _first_live(self, prefix: bytes, lo: bytes, inclusive: bool) -> bytes | None:
        """The smallest live key under ``prefix`` at or above ``lo`` (above if not inclusive)."""
        writes = self.writes
        cand = self._first_live_written(prefix, lo, inclusive)
        ks = self.keyspace
        n = len(ks)
        with self._db.iterator(start=ks + lo, include_start=inclusive,
                               stop=ks + _prefix_end(prefix), include_value=False) as it:
            for full in it:
                k = full[n:]
                if cand is not None and k >= cand:
                    break
                if k in writes and writes[k] is None:
                    continue  # deleted in this block
                return k
        return cand

    def live_keys(self, prefix: bytes) -> list[bytes]:
        """Live keys under an ordered ``prefix``, in key order, as a list taken now: one
        database iterator (once per overlay and prefix) less this block's deletions, plus a
        bisection of this block's live writes (for short ranges read whole, e.g. an
        account's positions). Same keys as ``list(iter_ordered(prefix))``."""
        if not prefix.startswith(ORDERED_PREFIXES):
            raise ValueError(f"{prefix!r} is not an ordered keyspace")
        writes = self.writes
        scan = self._scans.get(prefix)
        if scan is None:
            n = len(self.keyspace)
            scan = [full[n:] for full in self._db.iterator(prefix=self.keyspace + prefix,
                                                           include_value=False)]
            self._scans[prefix] = scan
        out = [k for k in scan if writes.get(k, _MISSING) is not None]  # a copy: never
        # change the cached scan
        live = self._live
        i = bisect_left(live, prefix)
        j = i
        while j < len(live) and live[j].startswith(prefix):
            j += 1
        if i == j:
            return out
        return sorted(set(out).union(live[i:j]))

    def written_keys(self, prefix: bytes) -> list[bytes]:
        """Keys under an ordered ``prefix`` that this block has written (put or deleted, net
        of reverts), in key order: one pass over the block's writes (the liquidation step
        asks once per block)."""
        if not prefix.startswith(ORDERED_PREFIXES):
            raise ValueError(f"{prefix!r} is not an ordered keyspace")
        return sorted(k for k in self.writes if k.startswith(prefix))

    def walk_ordered(self, prefix: bytes) -> Iterator[bytes]:
        """Live keys under an ordered ``prefix`` in key order, like :meth:`iter_ordered`
        (each step is the smallest live key above the previous one, read when the step is
        asked for, so the caller may write between steps), but with one database iterator
        for the whole walk instead of one per step. The memo of :meth:`first_key_after` is
        kept up to date the same way, and a run of committed keys this block deleted (the
        orders filled at the touch) is stepped over once, then jumped (``_runs``)."""
        key = self.first_key_after(prefix)
        if key is None:
            return
        ks = self.keyspace
        n = len(ks)
        end = ks + _prefix_end(prefix)
        writes = self.writes
        floors = self._floors
        runs = self._runs
        yield key  # most walks stop at the first key: open the iterator only if asked on
        after = key
        it = self._db.iterator(start=ks + key, include_start=False, stop=end,
                               include_value=False)
        try:
            gen = self._gen
            nxt = next(it, None)
            db_cur = None if nxt is None else nxt[n:]  # smallest db key > the last seek
            while True:
                floor = floors.get(prefix)
                if floor is not None and after < floor:
                    key = self.first_key_after(prefix, after)  # memo ahead of us: rare
                    if key is None:
                        return
                    it.seek(ks + key)
                    gen = self._gen
                    nxt = next(it, None)
                    if nxt is not None and nxt[n:] == key:
                        nxt = next(it, None)
                    db_cur = None if nxt is None else nxt[n:]
                    yield key
                    after = key
                    continue
                from_floor = floor is not None and after == floor and \
                    writes.get(after, _MISSING) is None
                if gen != self._gen:  # a revert: deleted keys we skipped may be back
                    gen = self._gen
                    it.seek(ks + after)
                    nxt = next(it, None)
                    if nxt is not None and nxt[n:] == after:
                        nxt = next(it, None)
                    db_cur = None if nxt is None else nxt[n:]
                # database candidate: smallest db key > after not deleted in this block
                dead_from = None  # the first deleted db key stepped over (> after)
                while db_cur is not None and (db_cur <= after or (
                        db_cur in writes and writes[db_cur] is None)):
                    if db_cur > after:
                        if dead_from is None:
                            dead_from = db_cur
                        run = runs.get(prefix)
                        if run is not None and run[0] <= db_cur and (
                                run[1] is None or db_cur < run[1]):
                            db_cur = run[1]  # every db key up to run[1] is deleted: jump
                            if db_cur is None:
                                break
                            it.seek(ks + db_cur)
                            nxt = next(it, None)  # db_cur itself
                            continue
                    nxt = next(it, None)
                    db_cur = None if nxt is None else nxt[n:]
                if dead_from is not None:
                    self._floor_lens.add(len(prefix))  # so that _write finds the run
                    runs[prefix] = (dead_from, db_cur)
                # overlay candidate: smallest live written key > after
                cand = self._first_live_written(prefix, after, False)
                if db_cur is not None and (cand is None or db_cur < cand):
                    key = db_cur
                else:
                    key = cand
                if from_floor:
                    floors[prefix] = _prefix_end(prefix) if key is None else key
                if key is None:
                    return
                yield key
                after = key
        finally:
            it.close()

    def iter_ordered(self, prefix: bytes) -> Iterator[bytes]:
        """Live keys under an ordered ``prefix``, in key order, one seek per key (cost follows
        the keys visited, not the block's write set). Safe to write while iterating."""
        k = self.first_key_after(prefix)
        while k is not None:
            yield k
            k = self.first_key_after(prefix, k)

    def changes(self) -> list[tuple[bytes, bytes | None]]:
        """Net writes that differ from the committed value, sorted by key (memoised)."""
        if self._changes is None:
            out = []
            priors = self.priors
            for k, v in self.writes.items():
                if v is not None and type(v) is not bytes:
                    v = v.encode()  # type: ignore[union-attr]
                if priors.get(k, _MISSING) != v:
                    out.append((k, v))
            out.sort()
            self._changes = out  # type: ignore[assignment]
        return self._changes  # type: ignore[return-value]


class StoreSnapshot:
    """Reads from one LevelDB snapshot: a commit landing meanwhile is not seen half-way."""

    def __init__(self, snap: KVSnapshot) -> None:
        self._snap = snap

    def __enter__(self) -> StoreSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self._snap.close()

    def head(self) -> Head | None:
        raw = self._snap.get(schema.META_HEAD)
        return None if raw is None else Head.decode(raw)

    def state_get(self, key: bytes) -> bytes | None:
        return self._snap.get(schema.STATE + key)  # type: ignore[no-any-return]

    def block_bytes(self, height: int) -> bytes | None:
        return self._snap.get(schema.block_key(height))  # type: ignore[no-any-return]

    def overlay(self) -> Overlay:
        """State reads (typed, prefix walks) from this snapshot; never committed."""
        return Overlay(self._snap)

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
            raise StoreError(f"height {height} is above the head {head.height}")
        self._snap = snap
        self.height = height
        self._prior: dict[bytes, bytes | None] = {}
        for h in range(head.height, height, -1):  # lower heights last: their prior wins
            undo = snap.get(schema.undo_key(h))
            if undo is None:
                raise StoreError(f"no undo record for height {h}: height {height} is no "
                                 "longer held")
            for k, v in decode_local(undo)["prior"]:
                self._prior[k] = v

    def get(self, db_key: bytes) -> bytes | None:
        v = self._prior.get(db_key, _MISSING)
        return self._snap.get(db_key) if v is _MISSING else v  # type: ignore[return-value]

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
                 sync: bool = True) -> None:
        self.path: str | None = os.fspath(path)
        if create:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            # A 64 MiB memtable (LevelDB's default is 4 MiB): large batches (full blocks,
            # rollback chunks) otherwise stall on level-0 compaction (bench/RESULTS.md).
            self.db: KV = plyvel.DB(self.path, create_if_missing=create,
                                    write_buffer_size=WRITE_BUFFER_BYTES)
        except plyvel.IOError as e:
            raise StoreError(f"cannot open store at {self.path}: {e}") from e
        except plyvel.Error as e:
            raise StoreError(f"cannot open store at {self.path}: {e}") from e
        self.sync = sync
        self._check_schema()

    @classmethod
    def from_kv(cls, db: KV, *, sync: bool = False, path: str | None = None) -> Store:
        """A store over an open backend (it is closed with the store)."""
        store = cls.__new__(cls)
        store.path, store.db, store.sync = path, db, sync
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

    def halt_record(self) -> dict[str, Any] | None:
        """Why and since when production is halted, or None."""
        raw = self.db.get(schema.META_HALT)
        return None if raw is None else dict(decode(raw))

    def set_halt(self, record: dict[str, Any] | None) -> None:
        """Record (or with None, clear) a halt; durable before it returns."""
        if record is None:
            self.db.delete(schema.META_HALT, sync=True)
        else:
            self.db.put(schema.META_HALT, encode(record), sync=True)

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
                     overlays: Sequence[Overlay], head: Head) -> None:
        """Write the genesis state (and its tree) and head in one batch; refuses a used store."""
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
