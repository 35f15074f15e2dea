"""RFC 6962 Merkle tree over an ordered list of byte strings (transactions, results).

Leaves and inner nodes carry different one-byte prefixes (0x00, 0x01) so that no inner node
can be passed off as a leaf (second-preimage resistance). The tree splits at the largest power
of two strictly below n, exactly as in RFC 6962 section 2.1; the root of the empty list is
SHA-256 of the empty string.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """Hash of one leaf: SHA-256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an inner node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly less than n (n >= 2)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def _root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    n = len(hashes)
    if n == 1:
        return hashes[0]
    k = _split(n)
    return node_hash(_root_of_hashes(hashes[:k]), _root_of_hashes(hashes[k:]))


def merkle_root(items: Sequence[bytes]) -> bytes:
    """Root of the RFC 6962 tree over ``items`` (each item is a leaf's raw bytes)."""
    if not items:
        return EMPTY_ROOT
    return _root_of_hashes([leaf_hash(x) for x in items])


def inclusion_proof(items: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path for ``items[index]`` (RFC 6962 section 2.1.1), bottom-up."""
    if not 0 <= index < len(items):
        raise IndexError("leaf index out of range")
    path: list[bytes] = []

    def walk(hashes: Sequence[bytes], m: int) -> None:
        n = len(hashes)
        if n == 1:
            return
        k = _split(n)
        if m < k:
            walk(hashes[:k], m)
            path.append(_root_of_hashes(hashes[k:]))
        else:
            walk(hashes[k:], m - k)
            path.append(_root_of_hashes(hashes[:k]))

    walk([leaf_hash(x) for x in items], index)
    return path


def verify_inclusion(item: bytes, index: int, size: int, path: Sequence[bytes],
                     root: bytes) -> bool:
    """Check an audit path (RFC 9162 section 2.1.3.2 algorithm)."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf_hash(item)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root
