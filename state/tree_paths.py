"""The state tree's path walks: one change walked down its key's path and back up (the hot
loop of an update: most dirty nodes lie below the level where a block's changes part ways),
and the builders of fresh subtrees (state/tree.py).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from chain.stateproof import EMPTY, KEY_BITS
from state.tree_groups import (
    _GMASK,
    _HDR,
    _LEAF,
    _NO_CHECK,
    _NODE,
    _REC,
    GroupStore,
    Rec,
    _boundary,
    _sha256,
)


class PathWalks(GroupStore):
    """Single-path updates and subtree builds over the group storage."""

    def _update_one(self, depth: int, path: int, h: bytes, rec: bytes | None, kh: bytes,
                    vh: bytes | None, pvh: object = _NO_CHECK) -> Rec | None:
        """:meth:`_update` for a single change: one walk down the key's path and back up.

        The node at (depth, path) is given by its hash ``h`` and record ``rec`` (None:
        empty).

        Most dirty nodes lie below the level where the block's changes part ways, so this is
        the hot loop; it reads and writes group slots directly instead of via _raw/_set.
        """
        k = int.from_bytes(kh, "big")
        groups = self._groups
        sha = _sha256
        stack: list[bytes] = []  # record of each inner node passed
        # Group and record offset of each child position passed (None: not in the buffer).
        # Two flat lists rather than tuples: no container allocations in the hot loop.
        lents: list[list | None] = []
        loffs: list[int] = []
        d, p = depth, path
        top = rec
        if rec is None:
            kind = -1
            rec = b""
        else:
            kind = rec[0]
        ent = None
        idx = 0
        while kind == _NODE:
            bit = (k >> (KEY_BITS - 1 - d)) & 1
            stack.append(rec)
            ch = rec[33:] if bit else rec[1:33]
            d += 1
            p = (p << 1) | bit
            if ch == EMPTY:
                kind = -1
                lents.append(None)
                loffs.append(0)
                break
            r = d & _GMASK
            if r == 0 or ent is None:
                gp = p >> r
                gkey = (1 << (d - r)) | gp
                ent = groups.get(gkey)
                if ent is None:
                    ent = self._group(gkey)
                idx = (1 << r) | (p ^ (gp << r))
            else:
                idx = (idx << 1) | bit
            mods = ent[2]
            if mods is not None and idx in mods:
                rec = mods[idx]
                lents.append(None)
                loffs.append(0)
            else:
                bm = ent[0]
                if (bm >> idx) & 1:
                    off = _HDR + _REC * (bm & ((1 << idx) - 1)).bit_count()
                    rec = ent[1][off:off + _REC]
                    if type(rec) is not bytes:
                        rec = bytes(rec)
                    lents.append(ent)
                    loffs.append(off)
                else:
                    rec = None
            if rec is None:
                raise ValueError(f"state tree node missing at depth {d}")
            kind = rec[0]
        # (d, p) is now empty (kind -1) or a leaf (kh', vh') = (a, b).
        if kind > _NODE:
            raise ValueError(f"corrupt state tree node at depth {d}")
        a = rec[1:33]
        b = rec[33:]
        if pvh is not _NO_CHECK:
            tvh = b if kind == _LEAF and a == kh else None
            if tvh != pvh:
                self._mismatch.append((kh, tvh, pvh))  # type: ignore[arg-type]
        nrec: bytes | None
        if kind == -1:
            if vh is None:
                return None if top is None else (top, h)
            nrec = b"\x00" + kh + vh
            nh = sha(nrec).digest()
            nleaf = True
        elif a == kh:
            if vh == b:
                return None if top is None else (top, h)
            if vh is None:
                nrec = None
                nh = EMPTY
                nleaf = False
            else:
                nrec = b"\x00" + kh + vh
                nh = sha(nrec).digest()
                nleaf = True
        else:
            if vh is None:
                return None if top is None else (top, h)
            if a < kh:
                nrec, nh = self._pair(d, p, a, b, kh, vh)
            else:
                nrec, nh = self._pair(d, p, kh, vh, a, b)
            nleaf = False
        while d > depth:
            prec = stack.pop()
            lent = lents.pop()
            off = loffs.pop()
            bit = p & 1
            sib = prec[1:33] if bit else prec[33:]
            if nrec is None or (nleaf and sib == EMPTY):
                # Delete (d, p): the subtree emptied, or its lone leaf moves up.
                self._set(d, p, None)
                if nrec is None and sib != EMPTY:
                    sp = p ^ 1
                    srec = self._raw(d, sp)
                    if srec is None:
                        raise ValueError(f"state tree node missing at depth {d}")
                    if srec[0] == _LEAF:
                        # The sibling leaf is alone under the parent now: it moves up.
                        self._set(d, sp, None)
                        nrec = srec
                        nh = sib
                        nleaf = True
                    else:
                        nrec = b"\x01" + sib + EMPTY if bit else b"\x01" + EMPTY + sib
                        nh = sha(nrec).digest()
                        nleaf = False
            else:
                if lent is None:
                    self._set(d, p, nrec)
                else:
                    # The slot was just read from the group's buffer: overwrite it in place.
                    buf = lent[1]
                    if type(buf) is bytes:
                        buf = lent[1] = bytearray(buf)
                    buf[off:off + _REC] = nrec
                nrec = b"\x01" + sib + nh if bit else b"\x01" + nh + sib
                nh = sha(nrec).digest()
                nleaf = False
            d -= 1
            p >>= 1
        if nrec is None:
            return None
        return nrec, nh

    def _build(self, depth: int, path: int, khs: Sequence[bytes],
               items: Sequence[tuple[bytes, bytes]], lo: int, hi: int) -> Rec | None:
        """(record, hash) for the sorted ``items[lo:hi]`` at (depth, path); writes every node
        below it."""
        n = hi - lo
        if n == 0:
            return None
        if n == 1:
            kh, vh = items[lo]
            rec = b"\x00" + kh + vh
            return rec, _sha256(rec).digest()
        if n == 2:
            (kh0, vh0), (kh1, vh1) = items[lo], items[lo + 1]
            return self._pair(depth, path, kh0, vh0, kh1, vh1)
        mid = bisect_left(khs, _boundary(depth, path), lo, hi)
        d1 = depth + 1
        lpath = path << 1
        put = self._set
        left = self._build(d1, lpath, khs, items, lo, mid)
        right = self._build(d1, lpath | 1, khs, items, mid, hi)
        if left is None:
            lh = EMPTY
        else:
            lh = left[1]
            put(d1, lpath, left[0])
        if right is None:
            rh = EMPTY
        else:
            rh = right[1]
            put(d1, lpath | 1, right[0])
        rec = b"\x01" + lh + rh
        return rec, _sha256(rec).digest()

    def _pair(self, depth: int, path: int, kh0: bytes, vh0: bytes, kh1: bytes, vh1: bytes
              ) -> tuple[bytes, bytes]:
        """:meth:`_build` of exactly two leaves (``kh0 < kh1``, both under (depth, path)):
        the record and hash of the node at (depth, path); writes every node below it.

        The two key hashes first differ at bit ``split``: the leaves sit at depth
        ``split + 1`` under an inner node at ``split``, which hangs from (depth, path) by a
        chain of inner nodes with one empty child each (what _build makes level by level).
        """
        sha = _sha256
        put = self._set
        k0 = int.from_bytes(kh0, "big")
        d = KEY_BITS - (k0 ^ int.from_bytes(kh1, "big")).bit_length() + 1  # split + 1
        p = k0 >> (KEY_BITS - d)  # the leaves' positions: p (kh0) and p | 1 (kh1)
        r0 = b"\x00" + kh0 + vh0
        r1 = b"\x00" + kh1 + vh1
        put(d, p, r0)
        put(d, p | 1, r1)
        rec = b"\x01" + sha(r0).digest() + sha(r1).digest()
        h = sha(rec).digest()
        d -= 1
        p >>= 1
        while d > depth:
            put(d, p, rec)
            rec = b"\x01" + EMPTY + h if p & 1 else b"\x01" + h + EMPTY
            h = sha(rec).digest()
            d -= 1
            p >>= 1
        return rec, h
