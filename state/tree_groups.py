"""Where the state tree's nodes live: 4 binary levels per stored group (the storage layout
of state/tree.py's docstring), cached for the duration of one update or proof walk.

Only this module and the tree modules built on it know the grouped layout; the hashing,
the root and the proofs are exactly binary (chain/stateproof.py).
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from chain.stateproof import KEY_BITS

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


class GroupStore:
    """The tree's node storage: group records read from the node store on first use, written
    back once per changed group at the end of an update (:meth:`_flush`)."""

    def __init__(self, store: NodeStore) -> None:
        self.store = store
        self._root: Node | None = None
        # Groups read or written during one apply (or one proof walk); empty between calls.
        # gkey -> [bitmap, stored bytes, {slot: record or None} or None, store key]
        self._groups: dict[int, list] = {}
        self._check = False  # the prior-value check of the apply in progress
        self._mismatch: list[tuple[bytes, bytes | None, bytes | None]] = []

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
