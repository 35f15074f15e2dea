"""Ordered walks over a block overlay: the smallest live key after another, a walk in key
order with one database iterator, the live keys of a short range.

The order book, the trigger index and the liquidation index are walked in key order while a
block runs, over committed keys and the block's own writes at once. These walks are the hot
path of matching; their memos (``_floors``, ``_runs``) are what keeps a walk from the start of
a book side cheap after the block has removed the orders at the touch. Mixed into
:class:`state.overlay.Overlay`, whose fields they read.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

from chain.codec import Struct
from state.kv import KVReader

MISSING = object()


ORDERED_PREFIXES = (b"book/", b"trig/", b"pos/", b"aord/", b"mkt/", b"liq/")
"""State key prefixes walked in key order while a block runs (see Overlay.first_key_after)."""


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return b"\xff" * (len(prefix) + 1)
    p[-1] += 1
    return bytes(p)


class OrderedWalks:
    """The ordered-walk half of :class:`~state.overlay.Overlay` (its fields are declared
    there)."""

    __slots__ = ()
    _db: KVReader
    keyspace: bytes
    writes: dict[bytes, bytes | Struct | None]
    priors: dict[bytes, bytes | None]
    _live: list[bytes]
    _floors: dict[bytes, bytes]
    _floor_lens: set[int]
    _runs: dict[bytes, tuple[bytes, bytes | None]]
    _gen: int
    _scans: dict[bytes, list[bytes]]

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
                if self.writes.get(floor, MISSING) is not None:
                    return floor
                lo, inclusive, from_floor = floor, True, True  # nothing live below the memo
            elif after == floor and self.writes.get(after, MISSING) is None:
                from_floor = True  # the memo's key was removed: nothing live up to it
        found = self._first_live(prefix, lo, inclusive)
        if from_floor:
            if prefix not in self._floors:
                self._floor_lens.add(len(prefix))
            self._floors[prefix] = prefix_end(prefix) if found is None else found
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
                               stop=ks + prefix_end(prefix), include_value=False) as it:
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
        out = [k for k in scan if writes.get(k, MISSING) is not None]  # a copy: never
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
        end = ks + prefix_end(prefix)
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
                    writes.get(after, MISSING) is None
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
                    floors[prefix] = prefix_end(prefix) if key is None else key
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
