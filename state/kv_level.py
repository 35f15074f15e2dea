"""The LevelDB backend of :class:`state.kv.KV`: plyvel, with every read checked.

Why not ``plyvel.DB`` itself: LevelDB checks a table block's checksum only when a read asks
for it (``verify_checksums``), and a block once in the block cache is never checked again,
so ONE unchecked read of a damaged block puts the damage in the cache for every later read:
a flipped byte in a table file then changes a served block silently. Here every read of the
database, of its snapshots and of their iterators asks for it, and the database is opened
with ``paranoid_checks`` (a damaged write-ahead log record refuses the open instead of
being skipped, which would bring back a store with one commit missing in the middle).

LevelDB's ``Corruption`` becomes :class:`~state.store_errors.StoreDamaged` (a
:class:`~state.store_errors.CorruptValue`, reason ``store_damaged``): the node's own
failure, which halts the producer and answers a typed error to a reader, never a changed
value. The memory and scratch backends never meet one of their own (a scratch layer over a
damaged LevelDB snapshot raises it from the base). Cost: one CRC32C of a 4 KiB block per read
that reaches a table (LevelDB maps table files into memory and reads those blocks afresh each
time: ~1.1 us per read measured here) and one Python call. Tables carry a bloom filter (10
bits per key) so a read of an absent key (every new order id, every first write) touches no
block at all: that pays the checks back on block execution (bench/RESULTS.md, Issue 11).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import plyvel

from state.store_errors import StoreDamaged, StoreError


def damaged(what: str, e: Exception) -> StoreDamaged:
    """The typed failure for LevelDB's ``Corruption`` met while doing ``what``."""
    return StoreDamaged(f"the store's files are damaged ({what}): {e}; restore the store "
                        "from a backup or a snapshot (docs/OPERATIONS.md §6)")


class CheckedIterator:
    """A plyvel iterator whose ``Corruption`` (raised while stepping) is typed."""

    __slots__ = ("_it",)

    def __init__(self, it: Any) -> None:
        self._it = it

    def __iter__(self) -> CheckedIterator:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._it)
        except plyvel.CorruptionError as e:
            raise damaged("iterating", e) from e

    def seek(self, target: bytes) -> None:
        try:
            self._it.seek(target)
        except plyvel.CorruptionError as e:
            raise damaged("seeking", e) from e

    def close(self) -> None:
        self._it.close()

    def __enter__(self) -> CheckedIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self._it.close()


class CheckedCursor:
    """A plyvel raw iterator (what a scratch layer reads its base with), typed failures."""

    __slots__ = ("_it",)

    def __init__(self, it: Any) -> None:
        self._it = it

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._it, name)(*args)
        except plyvel.CorruptionError as e:
            raise damaged(f"cursor {name}", e) from e

    def valid(self) -> bool:
        return self._it.valid()  # type: ignore[no-any-return]

    def seek(self, target: bytes) -> None:
        self._call("seek", target)

    def seek_to_first(self) -> None:
        self._call("seek_to_first")

    def seek_to_last(self) -> None:
        self._call("seek_to_last")

    def next(self) -> None:
        self._call("next")

    def prev(self) -> None:
        self._call("prev")

    def key(self) -> bytes:
        return self._call("key")  # type: ignore[no-any-return]

    def value(self) -> bytes:
        return self._call("value")  # type: ignore[no-any-return]

    def close(self) -> None:
        self._it.close()


class CheckedBatch:
    """A plyvel write batch as a context manager: ``with`` yields plyvel's own batch (no
    cost per op); a ``Corruption`` when it is written is typed. LevelDB answers one to
    every write after a paranoid compaction met a damaged file."""

    __slots__ = ("_wb",)

    def __init__(self, wb: Any) -> None:
        self._wb = wb

    def put(self, key: bytes, value: bytes) -> None:
        self._wb.put(key, value)

    def delete(self, key: bytes) -> None:
        self._wb.delete(key)

    def __enter__(self) -> Any:
        return self._wb.__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            self._wb.__exit__(*exc)
        except plyvel.CorruptionError as e:
            raise damaged("writing a batch", e) from e


class _CheckedReads:
    """Reads of a plyvel database or snapshot, each verifying checksums."""

    __slots__ = ("_r",)

    _r: Any

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        try:
            return self._r.get(key, default, verify_checksums=True)  # type: ignore[no-any-return]
        except plyvel.CorruptionError as e:
            raise damaged(f"reading key {key[:40]!r}", e) from e

    def iterator(self, prefix: bytes | None = None, start: bytes | None = None,
                 stop: bytes | None = None, include_start: bool = True,
                 include_stop: bool = False, reverse: bool = False, include_key: bool = True,
                 include_value: bool = True, fill_cache: bool = True) -> CheckedIterator:
        try:
            return CheckedIterator(self._r.iterator(
                prefix=prefix, start=start, stop=stop, include_start=include_start,
                include_stop=include_stop, reverse=reverse, include_key=include_key,
                include_value=include_value, fill_cache=fill_cache, verify_checksums=True))
        except plyvel.CorruptionError as e:
            raise damaged("opening an iterator", e) from e

    def raw_iterator(self) -> CheckedCursor:
        """A raw cursor (so a :class:`~state.kv.ScratchKV` can sit on this)."""
        return CheckedCursor(self._r.raw_iterator(verify_checksums=True))


class LevelSnapshot(_CheckedReads):
    """A plyvel snapshot with checked reads."""

    __slots__ = ()

    def __init__(self, snap: Any) -> None:
        self._r = snap

    def close(self) -> None:
        self._r.close()

    def __enter__(self) -> LevelSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self._r.close()


class LevelKV(_CheckedReads):
    """LevelDB at ``path`` (``paranoid_checks``, checked reads); writes are plyvel's."""

    __slots__ = ("path",)

    def __init__(self, path: str, *, create_if_missing: bool = False, **options: Any
                 ) -> None:
        """``options``: more of plyvel's open options (``write_buffer_size``, ...)."""
        self.path = path
        try:
            self._r = plyvel.DB(path, create_if_missing=create_if_missing,
                                paranoid_checks=True, **options)
        except plyvel.CorruptionError as e:
            raise damaged(f"opening {path}", e) from e

    @property
    def closed(self) -> bool:
        return self._r.closed  # type: ignore[no-any-return]

    def put(self, key: bytes, value: bytes, sync: bool = False) -> None:
        try:
            self._r.put(key, value, sync=sync)
        except plyvel.CorruptionError as e:  # (paranoid: a compaction met damage)
            raise damaged("writing", e) from e

    def delete(self, key: bytes, sync: bool = False) -> None:
        try:
            self._r.delete(key, sync=sync)
        except plyvel.CorruptionError as e:
            raise damaged("writing", e) from e

    def write_batch(self, transaction: bool = False, sync: bool = False) -> CheckedBatch:
        """plyvel's batch; its write's ``Corruption`` typed (ops go to plyvel directly)."""
        return CheckedBatch(self._r.write_batch(transaction=transaction, sync=sync))

    def snapshot(self) -> LevelSnapshot:
        return LevelSnapshot(self._r.snapshot())

    def compact_range(self) -> None:
        """Compact the whole database (tests and tools: moves the log into tables)."""
        self._r.compact_range()

    def close(self) -> None:
        self._r.close()


WRITE_BUFFER_BYTES = 64 * 1024 * 1024
"""Default memtable size of a store opened without options (bench/RESULTS.md, issue 5)."""
MAX_OPEN_FILES = 256
"""LevelDB keeps at most this many table files open by default (its own default, 1,000,
would take nearly all of a 1,024 descriptor limit); the node budgets its connections
around the configured number."""


@dataclass(frozen=True, slots=True)
class LevelDBOptions:
    """Bounds on LevelDB's own memory (the node sets them from ``[storage]``)."""

    cache_bytes: int = 8 * 1024 * 1024
    write_buffer_bytes: int = WRITE_BUFFER_BYTES
    max_open_files: int = MAX_OPEN_FILES


DEFAULT_LEVELDB_OPTIONS = LevelDBOptions()


def open_leveldb(path: str | os.PathLike[str], create: bool, options: LevelDBOptions
                 ) -> LevelKV:
    """Open the store's LevelDB, checked, with its memory bounded; a refusal is a
    :class:`~state.store_errors.StoreError` naming the path."""
    try:
        # A memtable larger than LevelDB's 4 MiB default: large batches (full blocks,
        # rollback chunks) otherwise stall on level-0 compaction (bench/RESULTS.md).
        # Cache, memtable and open tables are LevelDB's resident memory: all bounded.
        # The bloom filters (~1.25 bytes per key, held per open table) spare a read of an
        # absent key its checked block reads.
        return LevelKV(os.fspath(path), create_if_missing=create,
                       write_buffer_size=options.write_buffer_bytes,
                       lru_cache_size=options.cache_bytes,
                       max_open_files=options.max_open_files, bloom_filter_bits=10)
    except plyvel.Error as e:
        raise StoreError(f"cannot open store at {path}: {e}") from e
