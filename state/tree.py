"""The authenticated state tree: a binary sparse Merkle tree with leaf collapsing.

The hashing rules and the proof format are specified in ``chain/stateproof.py`` (shared with
light clients); this module stores the tree and keeps its root current block by block.

The tree is binary (one hash per dirty node, ~12,500 per 1,000-change block at a million
keys); leaf collapsing keeps the depth at ~log2(n) (~21 at a million keys) instead of 256.
Storage groups 4 binary levels per stored entry (a radix-16 layout, as in Jellyfish), so a
path costs ~4x fewer node-store reads (~3,100 instead of ~12,500 per such block) while the
hashing, the root and the proofs stay exactly binary. Only this module knows the layout.

Storage: one *group* per group root, a non-empty, non-collapsed binary position whose depth
is a multiple of 4 (:data:`GROUP_LEVELS`); the group holds the binary nodes at that depth
and the 3 depths below it that lie under it:

* group key: ``node_key(depth, path)`` of the group root: ``depth`` (2 bytes, big-endian)
  ``||`` the first ``depth`` bits of the key hash, packed MSB first into ``ceil(depth / 8)``
  bytes with the unused low bits zero. Keys sort by depth, then left to right; the group of
  the root (``b"\\x00\\x00"``) is first;
* group value: a 2-byte big-endian bitmap of the present *slots*, then one 65-byte record per
  present slot in ascending slot order. The binary node ``r`` levels below the group root
  (``r`` in 0..3) at relative path ``q`` (``r`` bits) is slot ``(1 << r) | q`` (1..15; bit 0
  of the bitmap is always 0 and bit 1, the group root, always 1);
* record: ``0x00 || kh || vh`` for a leaf, ``0x01 || left || right`` for an inner node,
  exactly the node's hash preimage (a node's hash is SHA-256 of its record).

A binary node is stored (has a record) iff it is non-empty and not collapsed, as before; a
group exists iff its root is stored, and its bytes depend only on the tree's contents
(history-independent). Groups are overwritten in place (one version: the current state), so
through the block overlay every group write lands in the block's undo record and rolling the
state back rolls the tree back with it. Deleting every key leaves the node store empty. The
price of grouping is write size: a group is up to 2 + 15 * 65 = 977 bytes, so a block
writes ~3,100 groups of ~0.7 KiB on average instead of ~12,500 nodes of 65 bytes.

The tree keeps only its root node in memory; after the store is rolled back underneath it,
:meth:`StateTree.reload` picks up the rolled-back root. Groups read or written are cached only
for the duration of one :meth:`StateTree.apply` (or one proof lookup) and written back at its
end, one store write per changed group; nothing is cached across calls. (A hash-validated
cross-block cache of the groups down to depth 12 was tried again with this layout: it cut
reads from ~3,100 to ~2,050 per block but made no measurable difference in time, so it was
left out.)

Per block, :meth:`StateTree.apply` takes the block's net changes, sorts them by key hash and
walks the tree once, splitting the batch at each level, so every dirty node is read, hashed
and written once per block however many of its keys changed; below the level where the
changes part ways, each change is one iterative walk down its path and back up.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Protocol

from chain.stateproof import EMPTY, KEY_BITS, StateProof, key_hash, value_hash

_LEAF = 0
_NODE = 1
_sha256 = hashlib.sha256

# A node in memory: (kind, hash, a, b) with (a, b) = (kh, vh) for a leaf, (left, right) for an
# inner node. ``None`` is the empty subtree.
Node = tuple[int, bytes, bytes, bytes]
Rec = tuple[bytes, bytes]
"""A node while a block is applied: (record, hash), the record as stored (``kind || a ||
b``, the hash's preimage)."""


class NodeStore(Protocol):
    """Where tree nodes live: a block overlay in the node, a dict in tests."""

    def get(self, node_key: bytes) -> bytes | None: ...

    def put(self, node_key: bytes, value: bytes) -> None: ...

    def delete(self, node_key: bytes) -> None: ...


_NO_CHECK = object()
"""``_update_one``'s prior value hash when the prior-value check is off."""


class PriorMismatch(ValueError):
    """Values the block read from the store that the committed tree does not hold: the store
    was written outside the blocks. ``mismatches``: (key, the tree's value hash or None,
    the stored value's hash or None) per key, in key-hash order."""

    def __init__(self, mismatches: list[tuple[bytes, bytes | None, bytes | None]]) -> None:
        super().__init__(f"{len(mismatches)} stored value(s) differ from the state tree")
        self.mismatches = mismatches


class DictNodeStore:
    """An in-memory node store (tests and benchmarks)."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, node_key: bytes) -> bytes | None:
        return self.data.get(node_key)

    def put(self, node_key: bytes, value: bytes) -> None:
        self.data[node_key] = value

    def delete(self, node_key: bytes) -> None:
        self.data.pop(node_key, None)


def node_key(depth: int, path: int) -> bytes:
    """Store key of the node at ``depth`` whose position is the ``depth``-bit integer ``path``.

    Only group roots (``depth`` a multiple of :data:`GROUP_LEVELS`) are stored.
    """
    n = (depth + 7) >> 3
    return depth.to_bytes(2, "big") + (path << ((n << 3) - depth)).to_bytes(n, "big")


GROUP_LEVELS = 4
"""Binary levels per stored group (radix-16 layout). Part of the storage format: the code
assumes 4 (15 slots, a 2-byte bitmap)."""

_GMASK = GROUP_LEVELS - 1
_REC = 65  # one binary node record: kind || a || b
_HDR = 2  # group header: bitmap of the present slots 1..15


_SLOTS: dict[int, tuple[int, ...]] = {}  # bitmap -> its set bits, ascending (pure memo)


def _slots(bm: int) -> tuple[int, ...]:
    s = _SLOTS.get(bm)
    if s is None:
        s = _SLOTS[bm] = tuple(i for i in range(bm.bit_length()) if (bm >> i) & 1)
    return s


def _encode(node: Node) -> bytes:
    return (b"\x00" if node[0] == _LEAF else b"\x01") + node[2] + node[3]


def _decode(raw: bytes, h: bytes) -> Node:
    if len(raw) != 65 or raw[0] > 1:
        raise ValueError("corrupt state tree node")
    return (raw[0], h, raw[1:33], raw[33:65])


def _boundary(depth: int, path: int) -> bytes:
    """Smallest key hash in the right half of the subtree at (depth, path)."""
    return ((((path << 1) | 1)) << (KEY_BITS - 1 - depth)).to_bytes(32, "big")


class StateTree:
    """A sparse Merkle tree over state keys, persisted group by group in a :class:`NodeStore`."""

    def __init__(self, store: NodeStore) -> None:
        self.store = store
        self._root: Node | None = None
        # Groups read or written during one apply (or one proof walk); empty between calls.
        # gkey -> [bitmap, stored bytes, {slot: record or None} or None, store key]
        self._groups: dict[int, list] = {}
        self._check = False  # the prior-value check of the apply in progress
        self._mismatch: list[tuple[bytes, bytes | None, bytes | None]] = []
        self.reload()

    def reload(self) -> None:
        """Re-read the root from the store (after the store was rolled back underneath)."""
        self._groups = {}
        raw = self._raw(0, 0)
        self._groups = {}
        self._root = None if raw is None else _decode(raw, _sha256(raw).digest())

    @property
    def root(self) -> bytes:
        """The current state root (``EMPTY`` for no keys)."""
        return EMPTY if self._root is None else self._root[1]

    # -- group storage ------------------------------------------------------------------------

    def _group(self, gkey: int) -> list:
        """The group ``gkey`` (``1 << depth | prefix``), read from the store on first use.

        An entry is ``[bitmap, buffer, mods, store key, stored bytes]``: records of slots that
        exist in ``bitmap`` are overwritten in place in ``buffer`` (a bytearray once written);
        slots added or removed go to ``mods`` (slot -> record, None for removed).
        """
        ent = self._groups.get(gkey)
        if ent is None:
            g = gkey.bit_length() - 1
            n = (g + 7) >> 3
            skey = g.to_bytes(2, "big") + ((gkey ^ (1 << g)) << ((n << 3) - g)).to_bytes(n, "big")
            raw = self.store.get(skey)
            if raw is None:
                ent = [0, b"", None, skey, b""]
            else:
                bm = (raw[0] << 8) | raw[1] if len(raw) > _HDR else 0
                if len(raw) != _HDR + _REC * bm.bit_count() or bm & 1 or not bm & 2:
                    raise ValueError("corrupt state tree node group")
                ent = [bm, raw, None, skey, raw]
            self._groups[gkey] = ent
        return ent

    def _raw(self, depth: int, path: int) -> bytes | None:
        """The current record of the binary node at (depth, path), or None."""
        r = depth & _GMASK
        gp = path >> r
        gkey = (1 << (depth - r)) | gp
        ent = self._groups.get(gkey)
        if ent is None:
            ent = self._group(gkey)
        idx = (1 << r) | (path ^ (gp << r))
        mods = ent[2]
        if mods is not None and idx in mods:
            return mods[idx]  # type: ignore[no-any-return]
        bm = ent[0]
        if not (bm >> idx) & 1:
            return None
        off = _HDR + _REC * (bm & ((1 << idx) - 1)).bit_count()
        return bytes(ent[1][off:off + _REC])

    def _set(self, depth: int, path: int, rec: bytes | None) -> None:
        """Record a node write (``None``: delete) in its group; flushed at the end of apply."""
        r = depth & _GMASK
        gp = path >> r
        gkey = (1 << (depth - r)) | gp
        ent = self._groups.get(gkey)
        if ent is None:
            ent = self._group(gkey)
        idx = (1 << r) | (path ^ (gp << r))
        mods = ent[2]
        bm = ent[0]
        if rec is not None and (bm >> idx) & 1 and (mods is None or idx not in mods):
            buf = ent[1]
            if type(buf) is bytes:
                buf = ent[1] = bytearray(buf)
            off = _HDR + _REC * (bm & ((1 << idx) - 1)).bit_count()
            buf[off:off + _REC] = rec
            return
        if mods is None:
            mods = ent[2] = {}
        mods[idx] = rec

    def _flush(self) -> None:
        """Write every group changed during this apply (or delete it once it is empty)."""
        store = self.store
        for bm, buf, mods, skey, raw in self._groups.values():
            if mods is None:
                if type(buf) is bytearray:
                    new = bytes(buf)
                    if new != raw:
                        store.put(skey, new)
                continue
            nbm = bm
            for idx, rec in mods.items():
                if rec is None:
                    nbm &= ~(1 << idx)
                else:
                    nbm |= 1 << idx
            if not nbm:
                if raw:
                    store.delete(skey)
                continue
            parts = [nbm.to_bytes(_HDR, "big")]
            for i in _slots(nbm):
                rec = mods.get(i)
                if rec is None:  # not in mods (a slot removed there is not in nbm): kept
                    off = _HDR + _REC * (bm & ((1 << i) - 1)).bit_count()
                    rec = buf[off:off + _REC]
                parts.append(rec)
            new = b"".join(parts)
            if new != raw:
                store.put(skey, new)

    # -- updates ------------------------------------------------------------------------------

    def apply(self, changes: Iterable[tuple[bytes, bytes | None]],
              priors: Mapping[bytes, bytes | None] | None = None) -> bytes:
        """Apply one block's net changes (``None`` deletes) and return the new root.

        Each key may appear once. Deleting an absent key is a no-op.

        With ``priors`` (each changed key's value as the block read it from the store), the
        walk also checks, at each changed key's leaf (which it reads anyway), that the tree
        commits to exactly that prior value: a value written into the store outside any
        block (a faulty maintenance step) is then caught by the first block that writes the
        key, before it builds on it. A mismatch raises :class:`PriorMismatch` naming every
        such key; nothing is written.
        """
        if priors is None:
            items = sorted(
                ((key_hash(k), None if v is None else value_hash(v)) for k, v in changes),
                key=itemgetter(0),
            )
        else:
            keys_of: dict[bytes, bytes] = {}
            rows = []
            for k, v in changes:
                kh = key_hash(k)
                keys_of[kh] = k
                p = priors.get(k)
                rows.append((kh, None if v is None else value_hash(v),
                             None if p is None else value_hash(p)))
            items = sorted(rows, key=itemgetter(0))  # type: ignore[arg-type]
        if not items:
            return self.root
        khs = [it[0] for it in items]
        for i in range(1, len(khs)):
            if khs[i] == khs[i - 1]:
                raise ValueError("a key appears twice in one block's changes")
        self._groups = {}
        self._check = priors is not None
        self._mismatch = []
        root = self._root
        old_h = EMPTY if root is None else root[1]
        try:
            new = self._update(0, 0, None if root is None else _encode(root), old_h, items, khs,
                               0, len(items))
            if self._mismatch:
                raise PriorMismatch([(keys_of[kh], tvh, pvh)
                                     for kh, tvh, pvh in sorted(self._mismatch)])
            if new is None:
                if root is not None:
                    self._set(0, 0, None)
            elif new[1] != old_h:
                self._set(0, 0, new[0])
            self._flush()
        finally:
            self._groups = {}
        self._root = None if new is None else _decode(new[0], new[1])
        return self.root

    def _load(self, depth: int, path: int, h: bytes) -> Node | None:
        """The node at (depth, path), whose hash the parent says is ``h``."""
        if h == EMPTY:
            return None
        raw = self._raw(depth, path)
        if raw is None:
            raise ValueError(f"state tree node missing at depth {depth}")
        return _decode(raw, h)

    def _update(self, depth: int, path: int, rec: bytes | None, h: bytes,
                items: Sequence[tuple[bytes, bytes | None]], khs: Sequence[bytes],
                lo: int, hi: int) -> Rec | None:
        """New (record, hash) at (depth, path) after ``items[lo:hi]``, given the current
        record ``rec`` (None: empty) and hash ``h``; writes every node below it.

        The caller writes (or deletes) the returned node itself, because a single remaining
        leaf may still collapse further up.
        """
        if hi - lo == 1:
            pv = items[lo][2] if self._check else _NO_CHECK  # type: ignore[misc]
            return self._update_one(depth, path, h, rec, khs[lo], items[lo][1], pv)
        if rec is None or rec[0] == _LEAF:
            # At most one key lives here: merge it with the changes and build afresh.
            if self._check:
                for j in range(lo, hi):
                    tvh = rec[33:] if rec is not None and rec[1:33] == khs[j] else None
                    if tvh != items[j][2]:  # type: ignore[misc]
                        self._mismatch.append((khs[j], tvh, items[j][2]))  # type: ignore[misc]
            final: list[tuple[bytes, bytes]] = []
            if rec is not None:
                okh = rec[1:33]
                j = bisect_left(khs, okh, lo, hi)
                if j == hi or khs[j] != okh:
                    final.append((okh, rec[33:]))
            for j in range(lo, hi):
                vh = items[j][1]
                if vh is not None:
                    final.append((khs[j], vh))
            if len(final) == 1 and rec is not None and final[0] == (rec[1:33], rec[33:]):
                return rec, h
            final.sort()
            return self._build(depth, path, [kh for kh, _ in final], final, 0, len(final))

        lh = rec[1:33]
        rh = rec[33:]
        mid = bisect_left(khs, _boundary(depth, path), lo, hi)
        d1 = depth + 1
        lpath = path << 1
        rpath = lpath | 1
        put = self._set
        lnew: Rec | None = None
        rnew: Rec | None = None
        nlh, nrh = lh, rh
        lent = rent = None
        loff = roff = 0
        if mid > lo:
            lrec, lent, loff = self._slot(d1, lpath, lh)
            if mid - lo == 1:  # straight to the single-change walk
                pv = items[lo][2] if self._check else _NO_CHECK  # type: ignore[misc]
                lnew = self._update_one(d1, lpath, lh, lrec, khs[lo], items[lo][1], pv)
            else:
                lnew = self._update(d1, lpath, lrec, lh, items, khs, lo, mid)
            nlh = EMPTY if lnew is None else lnew[1]
        if hi > mid:
            rrec, rent, roff = self._slot(d1, rpath, rh)
            if hi - mid == 1:
                pv = items[mid][2] if self._check else _NO_CHECK  # type: ignore[misc]
                rnew = self._update_one(d1, rpath, rh, rrec, khs[mid], items[mid][1], pv)
            else:
                rnew = self._update(d1, rpath, rrec, rh, items, khs, mid, hi)
            nrh = EMPTY if rnew is None else rnew[1]
        if nlh == lh and nrh == rh:
            return rec, h

        if nlh == EMPTY or nrh == EMPTY:
            # This subtree is now empty or may be a single leaf, which moves up to here.
            result: Rec | None = None
            if nlh != EMPTY:
                result = lnew if mid > lo else self._present(d1, lpath, lh)
            elif nrh != EMPTY:
                result = rnew if hi > mid else self._present(d1, rpath, rh)
            if result is None or result[0][0] == _LEAF:
                # Nothing stays stored below this position.
                if lh != EMPTY:
                    put(d1, lpath, None)
                if rh != EMPTY:
                    put(d1, rpath, None)
                return result
        if mid > lo and nlh != lh:
            if lent is not None and lnew is not None:  # in place, where it was read
                buf = lent[1]
                if type(buf) is bytes:
                    buf = lent[1] = bytearray(buf)
                buf[loff:loff + _REC] = lnew[0]
            else:
                put(d1, lpath, None if lnew is None else lnew[0])
        if hi > mid and nrh != rh:
            if rent is not None and rnew is not None:
                buf = rent[1]
                if type(buf) is bytes:
                    buf = rent[1] = bytearray(buf)
                buf[roff:roff + _REC] = rnew[0]
            else:
                put(d1, rpath, None if rnew is None else rnew[0])
        nrec = b"\x01" + nlh + nrh
        return nrec, _sha256(nrec).digest()

    def _slot(self, depth: int, path: int, h: bytes) -> tuple[bytes | None, list | None, int]:
        """:meth:`_rec`, with where the record lies: (record, group entry, offset) if it was
        read from the group's buffer (an unchanged slot of the stored group: a new record
        for the same node may overwrite it there), else (record, None, 0). Only the node's
        parent writes the node, so the place stays valid while its subtree is updated."""
        if h == EMPTY:
            return None, None, 0
        r = depth & _GMASK
        gp = path >> r
        gkey = (1 << (depth - r)) | gp
        ent = self._groups.get(gkey)
        if ent is None:
            ent = self._group(gkey)
        idx = (1 << r) | (path ^ (gp << r))
        mods = ent[2]
        raw: bytes | None
        if mods is not None and idx in mods:
            raw = mods[idx]
            ent = None
            off = 0
        else:
            bm = ent[0]
            if not (bm >> idx) & 1:
                raw = None
            else:
                off = _HDR + _REC * (bm & ((1 << idx) - 1)).bit_count()
                raw = bytes(ent[1][off:off + _REC])
        if raw is None or len(raw) != _REC or raw[0] > 1:
            raise ValueError(f"state tree node missing or corrupt at depth {depth}")
        return raw, ent, off

    def _present(self, depth: int, path: int, h: bytes) -> Rec:
        """(record, hash) of the node at (depth, path) whose hash is ``h`` (not ``EMPTY``)."""
        rec = self._rec(depth, path, h)
        if rec is None:
            raise ValueError(f"state tree node missing at depth {depth}")
        return rec, h

    def _rec(self, depth: int, path: int, h: bytes) -> bytes | None:
        """The record of the node at (depth, path) whose hash is ``h`` (None if empty)."""
        if h == EMPTY:
            return None
        raw = self._raw(depth, path)
        if raw is None or len(raw) != _REC or raw[0] > 1:
            raise ValueError(f"state tree node missing or corrupt at depth {depth}")
        return raw

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

    # -- proofs -------------------------------------------------------------------------------

    def prove(self, key: bytes) -> StateProof:
        """Proof of ``key``'s current value, or of its absence, against :attr:`root`."""
        self._groups = {}
        try:
            return self._prove(key)
        finally:
            self._groups = {}

    def _prove(self, key: bytes) -> StateProof:
        kh = key_hash(key)
        k = int.from_bytes(kh, "big")
        node = self._root
        depth = 0
        path = 0
        flags = 0
        siblings: list[bytes] = []
        while node is not None and node[0] == _NODE:
            b = (k >> (KEY_BITS - 1 - depth)) & 1
            child, sib = (node[3], node[2]) if b else (node[2], node[3])
            flags <<= 1
            if sib != EMPTY:
                flags |= 1
                siblings.append(sib)
            depth += 1
            path = (path << 1) | b
            node = self._load(depth, path, child)
        nbytes = (depth + 7) >> 3
        bitmap = (flags << ((nbytes << 3) - depth)).to_bytes(nbytes, "big")
        leaf = None
        if node is not None and node[2] != kh:
            leaf = node[2] + node[3]
        return StateProof(depth=depth, bitmap=bitmap, siblings=tuple(siblings), leaf=leaf)

    def value_hash_of(self, key: bytes) -> bytes | None:
        """The committed value hash of ``key`` (None if absent): a cheap consistency check."""
        self._groups = {}
        try:
            return self._value_hash_of(key)
        finally:
            self._groups = {}

    def _value_hash_of(self, key: bytes) -> bytes | None:
        kh = key_hash(key)
        k = int.from_bytes(kh, "big")
        node = self._root
        depth = path = 0
        while node is not None and node[0] == _NODE:
            b = (k >> (KEY_BITS - 1 - depth)) & 1
            depth += 1
            path = (path << 1) | b
            node = self._load(depth, path, node[3] if b else node[2])
        if node is not None and node[2] == kh:
            return node[3]
        return None

