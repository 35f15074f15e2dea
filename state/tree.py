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

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter

from chain.stateproof import EMPTY, KEY_BITS, StateProof, key_hash, value_hash
from state.tree_groups import (
    _GMASK,
    _HDR,
    _LEAF,
    _NO_CHECK,
    _NODE,
    _REC,
    Node,
    NodeStore,
    PriorMismatch,
    Rec,
    _boundary,
    _decode,
    _encode,
    _sha256,
)
from state.tree_paths import PathWalks


class StateTree(PathWalks):
    """A sparse Merkle tree over state keys, persisted group by group in a :class:`NodeStore`."""

    def __init__(self, store: NodeStore) -> None:
        super().__init__(store)
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

