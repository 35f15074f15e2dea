"""State proofs: the hashing rules of the authenticated state tree and a light-client verifier.

The state tree (``state/tree.py``) is a binary sparse Merkle tree of depth 256 over the
SHA-256 hashes of the state keys, with *leaf collapsing*: a subtree holding exactly one key is
represented by that key's leaf, wherever it sits. This module is everything a verifier needs
and nothing more (pure code, no I/O, never imports ``state/``), so the rules below are the
complete specification; an independent verifier needs only SHA-256.

Hashing (``H`` = SHA-256, ``||`` = concatenation, bits numbered from the most significant
bit of byte 0, bit 0 first):

* key hash:     ``kh = H(key)`` (32 bytes); the tree is ordered by ``kh``, bit ``d`` of ``kh``
  picks the child at depth ``d`` (0 = left, 1 = right);
* value hash:   ``vh = H(value)``;
* leaf:         ``H(0x00 || kh || vh)``;
* inner node:   ``H(0x01 || left || right)``;
* empty subtree: ``EMPTY = 32 zero bytes`` (not a hash of anything).

The hash of a set ``S`` of (kh, vh) pairs at depth ``d`` is ``EMPTY`` if ``S`` is empty, the
leaf hash of its one element if ``|S| = 1``, and otherwise the inner-node hash of its two
halves split by bit ``d``. The state root is that hash at depth 0 over every key; it depends
only on the set of keys and values, never on the order they were written in. (One child of an
inner node may be ``EMPTY`` when the other holds two or more keys; an inner node never has a
leaf next to an empty sibling: that subtree collapses into the leaf.)

Proof (:class:`StateProof`, canonical msgpack map, keys sorted):

* ``depth``: how many levels the path descends (0..256); the proof ends at the node found at
  depth ``depth`` on the key's path;
* ``bitmap``: ``ceil(depth / 8)`` bytes; bit ``i`` (MSB first) is 1 iff the sibling at depth
  ``i + 1`` (the sibling of the path node at depth ``i + 1``) is non-empty; unused low bits of
  the last byte are 0;
* ``siblings``: the non-empty sibling hashes, top (depth 1) first, one per set bit, none equal
  to ``EMPTY``;
* ``leaf``: nil for an inclusion proof, and for an absence proof that ends at an empty
  subtree; for an absence proof that ends at *another* key's leaf, ``kh' || vh'`` of that
  leaf (64 bytes), with ``kh'`` different from the key's hash but equal on its first
  ``depth`` bits.

Verification: start from the node at the end of the path (the key's leaf when proving a
value; ``EMPTY`` or the other leaf when proving absence), then for ``i = depth - 1 .. 0``
combine with sibling ``i`` (``EMPTY`` where its bitmap bit is 0) as
``H(0x01 || node || sib)`` if bit ``i`` of ``kh`` is 0, else ``H(0x01 || sib || node)``; the
proof holds iff the result equals the root. At 1,000,000 keys the path is ~21 levels deep, so
a proof is about 21 * 34 + 40 ≈ 750 bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated

from chain.codec import U16, Bytes32, Length, Struct
from chain.errors import ChainError

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY = b"\x00" * 32
"""Hash of an empty subtree (and the root of the empty state)."""

KEY_BITS = 256
MAX_PROOF_SIZE = 16 * 1024
"""Largest encoded proof a verifier accepts (256 siblings fit in ~8.8 KiB)."""

Bytes64OrNone = Annotated[bytes, Length(64, 64)] | None


class InvalidProof(ChainError):
    """A state proof that is malformed or does not match the root, key and value."""

    reason = "invalid_proof"


def key_hash(key: bytes) -> bytes:
    """Position of ``key`` in the tree: SHA-256(key)."""
    return hashlib.sha256(key).digest()


def value_hash(value: bytes) -> bytes:
    """SHA-256(value): leaves commit to values by hash, so proofs do not carry them."""
    return hashlib.sha256(value).digest()


def leaf_hash(kh: bytes, vh: bytes) -> bytes:
    """Hash of a leaf: SHA-256(0x00 || kh || vh)."""
    return hashlib.sha256(LEAF_PREFIX + kh + vh).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an inner node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def bit(kh: bytes, i: int) -> int:
    """Bit ``i`` of a key hash, most significant bit of byte 0 first."""
    return (kh[i >> 3] >> (7 - (i & 7))) & 1


@dataclass(frozen=True, slots=True)
class StateProof(Struct):
    """Proof that a key has a given value, or no value, under a state root (see module doc)."""

    depth: U16
    bitmap: bytes
    siblings: tuple[Bytes32, ...]
    leaf: Bytes64OrNone


def _common_prefix_bits(a: bytes, b: bytes) -> int:
    x = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return KEY_BITS - x.bit_length()


def check_proof(root: bytes, key: bytes, value: bytes | None, proof: StateProof) -> None:
    """Raise :class:`InvalidProof` (with the reason) unless ``proof`` shows ``key -> value``.

    ``value`` None asks for a proof of absence.
    """
    if type(root) is not bytes or len(root) != 32:
        raise InvalidProof("root must be 32 bytes", reason="malformed_proof")
    if not isinstance(proof, StateProof):
        raise InvalidProof("not a StateProof", reason="malformed_proof")
    depth, bitmap, siblings, leaf = proof.depth, proof.bitmap, proof.siblings, proof.leaf
    if type(depth) is not int or not 0 <= depth <= KEY_BITS:
        raise InvalidProof(f"depth {depth!r} outside 0..{KEY_BITS}", reason="malformed_proof")
    if type(bitmap) is not bytes or len(bitmap) != (depth + 7) // 8:
        raise InvalidProof("bitmap length does not match depth", reason="malformed_proof")
    bits = int.from_bytes(bitmap, "big")
    pad = len(bitmap) * 8 - depth
    if bits & ((1 << pad) - 1):
        raise InvalidProof("bitmap padding bits are set", reason="malformed_proof")
    if type(siblings) is not tuple or bits.bit_count() != len(siblings):
        raise InvalidProof("sibling count does not match the bitmap", reason="malformed_proof")
    for s in siblings:
        if type(s) is not bytes or len(s) != 32 or s == EMPTY:
            raise InvalidProof("a sibling is not a non-empty 32-byte hash",
                               reason="malformed_proof")
    kh = key_hash(key)
    if value is not None:
        if leaf is not None:
            raise InvalidProof("an inclusion proof carries no other leaf",
                               reason="malformed_proof")
        node = leaf_hash(kh, value_hash(value))
    elif leaf is None:
        node = EMPTY
    else:
        if type(leaf) is not bytes or len(leaf) != 64:
            raise InvalidProof("leaf must be 64 bytes", reason="malformed_proof")
        other = leaf[:32]
        if other == kh:
            raise InvalidProof("the proof shows the key present", reason="key_present")
        if _common_prefix_bits(other, kh) < depth:
            raise InvalidProof("the other leaf is not on the key's path", reason="wrong_path")
        node = leaf_hash(other, leaf[32:])
    k = int.from_bytes(kh, "big")
    j = len(siblings)
    for i in range(depth - 1, -1, -1):
        if (bits >> (pad + depth - 1 - i)) & 1:
            j -= 1
            sib = siblings[j]
        else:
            sib = EMPTY
        if (k >> (KEY_BITS - 1 - i)) & 1:
            node = node_hash(sib, node)
        else:
            node = node_hash(node, sib)
    if node != root:
        raise InvalidProof("the proof does not lead to the root", reason="root_mismatch")


def verify(root: bytes, key: bytes, value: bytes | None, proof: StateProof) -> bool:
    """True iff ``proof`` shows ``key -> value`` (``None``: key absent) under ``root``."""
    try:
        check_proof(root, key, value, proof)
    except InvalidProof:
        return False
    return True


def decode_proof(data: bytes) -> StateProof:
    """Strictly decode a proof from its canonical bytes (raises ``DecodeError``)."""
    return StateProof.decode(data, max_size=MAX_PROOF_SIZE)
