"""The authenticated state tree: a binary sparse Merkle tree with leaf collapsing.

The hashing rules and the proof format are specified in ``chain/stateproof.py`` (shared with
light clients); this module stores the tree and keeps its root current block by block.

Why a binary sparse Merkle tree with leaf collapsing, not a Jellyfish (radix-16) tree: both
give the same root and the same proofs (Jellyfish hashes binary inside each node), so the
choice is about update cost in Python. With 1,000 changed keys out of 1,000,000 a binary tree
rehashes only the ~11,000 nodes on the dirty paths (one hash each); a radix-16 node must
rebuild its internal binary hashes (up to 15) whenever any child changes, about 4x more
hashing, unless it stores all 30 internal hashes, which makes every node write ~1 KiB.
Leaf collapsing keeps the depth at ~log2(n) (~21 at a million keys) instead of 256. The price
is node *reads*: ~12,500 per 1,000-change block at a million keys where radix-16 storage would
need ~4x fewer; on LevelDB those reads dominate (see bench/RESULTS.md). Grouping 4 binary
levels per stored node would change only this module, not the root, proofs or verifier.

Storage: one node per non-empty, non-collapsed position, keyed by its path:

* node key: ``depth`` (2 bytes, big-endian) ``||`` the first ``depth`` bits of the key hash,
  packed MSB first into ``ceil(depth / 8)`` bytes with the unused low bits zero. Keys sort by
  depth, then left to right, so siblings are adjacent and the root (``b"\\x00\\x00"``) is
  first;
* node value (fixed 65-byte layout): ``0x00 || kh || vh`` for a leaf, ``0x01 || left ||
  right`` for an inner node. That is exactly the node's hash preimage, so a node's hash is
  SHA-256 of its stored value.

Nodes are overwritten in place (one version: the current state). Old versions are not kept
as garbage: through the block overlay, every node write lands in the block's undo record, so
rolling the state back rolls the tree back with it. Deleting every key leaves the node store
empty.

The tree keeps only its root node in memory; after the store is rolled back underneath it,
:meth:`StateTree.reload` picks up the rolled-back root. (A hash-keyed cache of the top levels
was tried: it cut LevelDB reads by a quarter once warm but made no measurable difference in
time on this machine, so it was left out.)

Per block, :meth:`StateTree.apply` takes the block's net changes, sorts them by key hash and
walks the tree once, splitting the batch at each level, so every dirty node is read, hashed
and written once per block however many of its keys changed.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Protocol

from chain.stateproof import EMPTY, KEY_BITS, StateProof, key_hash, value_hash

_LEAF = 0
_NODE = 1
_sha256 = hashlib.sha256

# A node in memory: (kind, hash, a, b) with (a, b) = (kh, vh) for a leaf, (left, right) for an
# inner node. ``None`` is the empty subtree.
Node = tuple[int, bytes, bytes, bytes]


class NodeStore(Protocol):
    """Where tree nodes live: a block overlay in the node, a dict in tests."""

    def get(self, node_key: bytes) -> bytes | None: ...

    def put(self, node_key: bytes, value: bytes) -> None: ...

    def delete(self, node_key: bytes) -> None: ...


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
    """Store key of the node at ``depth`` whose position is the ``depth``-bit integer ``path``."""
    n = (depth + 7) >> 3
    return depth.to_bytes(2, "big") + (path << ((n << 3) - depth)).to_bytes(n, "big")


def _encode(node: Node) -> bytes:
    return (b"\x00" if node[0] == _LEAF else b"\x01") + node[2] + node[3]


def _decode(raw: bytes, h: bytes) -> Node:
    if len(raw) != 65 or raw[0] > 1:
        raise ValueError("corrupt state tree node")
    return (raw[0], h, raw[1:33], raw[33:65])


def _leaf(kh: bytes, vh: bytes) -> Node:
    return (_LEAF, _sha256(b"\x00" + kh + vh).digest(), kh, vh)


def _inner(left: bytes, right: bytes) -> Node:
    return (_NODE, _sha256(b"\x01" + left + right).digest(), left, right)


def _boundary(depth: int, path: int) -> bytes:
    """Smallest key hash in the right half of the subtree at (depth, path)."""
    return ((((path << 1) | 1)) << (KEY_BITS - 1 - depth)).to_bytes(32, "big")


class StateTree:
    """A sparse Merkle tree over state keys, persisted node by node in a :class:`NodeStore`."""

    def __init__(self, store: NodeStore) -> None:
        self.store = store
        self._root: Node | None = None
        self.reload()

    def reload(self) -> None:
        """Re-read the root from the store (after the store was rolled back underneath)."""
        raw = self.store.get(node_key(0, 0))
        self._root = None if raw is None else _decode(raw, _sha256(raw).digest())

    @property
    def root(self) -> bytes:
        """The current state root (``EMPTY`` for no keys)."""
        return EMPTY if self._root is None else self._root[1]

    # -- updates ------------------------------------------------------------------------------

    def apply(self, changes: Iterable[tuple[bytes, bytes | None]]) -> bytes:
        """Apply one block's net changes (``None`` deletes) and return the new root.

        Each key may appear once. Deleting an absent key is a no-op.
        """
        items = sorted(
            ((key_hash(k), None if v is None else value_hash(v)) for k, v in changes),
            key=itemgetter(0),
        )
        if not items:
            return self.root
        khs = [kh for kh, _ in items]
        for i in range(1, len(khs)):
            if khs[i] == khs[i - 1]:
                raise ValueError("a key appears twice in one block's changes")
        new = self._update(0, 0, self._root, items, khs, 0, len(items))
        rk = node_key(0, 0)
        if new is None:
            if self._root is not None:
                self.store.delete(rk)
        elif new is not self._root:
            self.store.put(rk, _encode(new))
        self._root = new
        return self.root

    def _load(self, depth: int, path: int, h: bytes) -> Node | None:
        """The node at (depth, path), whose hash the parent says is ``h``."""
        if h == EMPTY:
            return None
        raw = self.store.get(node_key(depth, path))
        if raw is None:
            raise ValueError(f"state tree node missing at depth {depth}")
        return _decode(raw, h)

    def _update(self, depth: int, path: int, node: Node | None,
                items: Sequence[tuple[bytes, bytes | None]], khs: Sequence[bytes],
                lo: int, hi: int) -> Node | None:
        """New node at (depth, path) after ``items[lo:hi]``; writes every node below it.

        The caller writes (or deletes) the returned node itself, because a single remaining
        leaf may still collapse further up.
        """
        if node is None or node[0] == _LEAF:
            # At most one key lives here: merge it with the changes and build afresh.
            final: list[tuple[bytes, bytes]] = []
            if node is not None:
                okh = node[2]
                j = bisect_left(khs, okh, lo, hi)
                if j == hi or khs[j] != okh:
                    final.append((okh, node[3]))
            for j in range(lo, hi):
                vh = items[j][1]
                if vh is not None:
                    final.append((khs[j], vh))
            if len(final) == 1 and node is not None and final[0] == (node[2], node[3]):
                return node
            final.sort()
            return self._build(depth, path, [kh for kh, _ in final], final, 0, len(final))

        _, _, lh, rh = node
        mid = bisect_left(khs, _boundary(depth, path), lo, hi)
        d1 = depth + 1
        lpath = path << 1
        rpath = lpath | 1
        store = self.store
        lnew: Node | None = None
        rnew: Node | None = None
        nlh, nrh = lh, rh
        if mid > lo:
            lnew = self._update(d1, lpath, self._load(d1, lpath, lh), items, khs, lo, mid)
            nlh = EMPTY if lnew is None else lnew[1]
        if hi > mid:
            rnew = self._update(d1, rpath, self._load(d1, rpath, rh), items, khs, mid, hi)
            nrh = EMPTY if rnew is None else rnew[1]
        if nlh == lh and nrh == rh:
            return node

        if nlh == EMPTY or nrh == EMPTY:
            # This subtree is now empty or may be a single leaf, which moves up to here.
            result: Node | None = None
            if nlh != EMPTY:
                result = lnew if mid > lo else self._load(d1, lpath, lh)
            elif nrh != EMPTY:
                result = rnew if hi > mid else self._load(d1, rpath, rh)
            if result is None or result[0] == _LEAF:
                # Nothing stays stored below this position.
                if lh != EMPTY:
                    store.delete(node_key(d1, lpath))
                if rh != EMPTY:
                    store.delete(node_key(d1, rpath))
                return result
        if mid > lo and nlh != lh:
            if lnew is None:
                store.delete(node_key(d1, lpath))
            else:
                store.put(node_key(d1, lpath), _encode(lnew))
        if hi > mid and nrh != rh:
            if rnew is None:
                store.delete(node_key(d1, rpath))
            else:
                store.put(node_key(d1, rpath), _encode(rnew))
        return _inner(nlh, nrh)

    def _build(self, depth: int, path: int, khs: Sequence[bytes],
               items: Sequence[tuple[bytes, bytes]], lo: int, hi: int) -> Node | None:
        """Node for the sorted ``items[lo:hi]`` at (depth, path); writes every node below it."""
        n = hi - lo
        if n == 0:
            return None
        if n == 1:
            kh, vh = items[lo]
            return _leaf(kh, vh)
        mid = bisect_left(khs, _boundary(depth, path), lo, hi)
        d1 = depth + 1
        lpath = path << 1
        put = self.store.put
        left = self._build(d1, lpath, khs, items, lo, mid)
        right = self._build(d1, lpath | 1, khs, items, mid, hi)
        if left is None:
            lh = EMPTY
        else:
            lh = left[1]
            put(node_key(d1, lpath), _encode(left))
        if right is None:
            rh = EMPTY
        else:
            rh = right[1]
            put(node_key(d1, lpath | 1), _encode(right))
        return _inner(lh, rh)

    # -- proofs -------------------------------------------------------------------------------

    def prove(self, key: bytes) -> StateProof:
        """Proof of ``key``'s current value, or of its absence, against :attr:`root`."""
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

