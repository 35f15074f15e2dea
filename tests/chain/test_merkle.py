"""RFC 6962 Merkle tree: roots against a reference from the RFC text, inclusion proofs."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.merkle import (
    EMPTY_ROOT,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_inclusion,
)

# ---------------------------------------------------------------------------------------------
# Reference implementation, transcribed from RFC 6962 section 2.1:
#
#   MTH({}) = SHA-256()
#   MTH({d(0)}) = SHA-256(0x00 || d(0))
#   For n > 1, let k be the largest power of two smaller than n (k < n <= 2k):
#   MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
#
#   PATH(0, {d(0)}) = {}
#   PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])      for m < k
#   PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])  for m >= k


def _sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    assert k < n <= 2 * k
    return k


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return _sha(b"")
    if n == 1:
        return _sha(b"\x00" + d[0])
    k = _k(n)
    return _sha(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_sides(m: int, n: int) -> list[str]:
    """Which side each audit-path element sits on, bottom-up: the shape of the proof."""
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return ref_sides(m, k) + ["R"]
    return ref_sides(m - k, n - k) + ["L"]


def items(n: int) -> list[bytes]:
    return [f"item-{i}".encode() for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Roots


def test_reference_sanity() -> None:
    assert ref_mth([]) == hashlib.sha256(b"").digest() == EMPTY_ROOT
    a, b, c = b"a", b"b", b"c"
    la, lb, lc = (_sha(b"\x00" + x) for x in (a, b, c))
    assert ref_mth([a, b, c]) == _sha(b"\x01" + _sha(b"\x01" + la + lb) + lc)
    assert [_k(n) for n in range(2, 10)] == [1, 2, 2, 4, 4, 4, 4, 8]


@pytest.mark.parametrize("n", range(41))
def test_root_matches_reference(n: int) -> None:
    d = items(n)
    assert merkle_root(d) == ref_mth(d)


@given(st.lists(st.binary(max_size=20), max_size=70))
def test_root_matches_reference_property(d: list[bytes]) -> None:
    assert merkle_root(d) == ref_mth(d)


def test_leaf_and_node_hash_domain_separation() -> None:
    assert leaf_hash(b"x") == _sha(b"\x00x")
    assert node_hash(b"l", b"r") == _sha(b"\x01lr")
    # An inner node's preimage posed as a leaf gives a different root.
    d = [b"a", b"b"]
    forged_leaf = leaf_hash(b"a") + leaf_hash(b"b")
    assert merkle_root([forged_leaf]) != merkle_root(d)


def test_root_depends_on_order_and_content() -> None:
    d = items(5)
    assert merkle_root(d) != merkle_root(d[::-1])
    assert merkle_root(d) != merkle_root(d[:4])
    assert merkle_root(d) != merkle_root(d + [b""])
    assert merkle_root([b""]) != EMPTY_ROOT


def test_root_accepts_tuples() -> None:
    assert merkle_root(tuple(items(7))) == ref_mth(items(7))


# ---------------------------------------------------------------------------------------------
# Inclusion proofs


@pytest.mark.parametrize("n", range(1, 41))
def test_every_index_proves(n: int) -> None:
    d = items(n)
    root = merkle_root(d)
    for m in range(n):
        path = inclusion_proof(d, m)
        assert path == ref_path(m, d)
        assert verify_inclusion(d[m], m, n, path, root)


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=70), st.data())
def test_inclusion_property(d: list[bytes], data: st.DataObject) -> None:
    m = data.draw(st.integers(0, len(d) - 1))
    root = merkle_root(d)
    path = inclusion_proof(d, m)
    assert path == ref_path(m, d)
    assert verify_inclusion(d[m], m, len(d), path, root)


@pytest.mark.parametrize("n", range(1, 41))
def test_wrong_item_rejected(n: int) -> None:
    d = items(n)
    root = merkle_root(d)
    for m in range(n):
        path = inclusion_proof(d, m)
        assert not verify_inclusion(d[m] + b"x", m, n, path, root)
        assert not verify_inclusion(b"", m, n, path, root)
        # a leaf hash in place of the leaf data is not the leaf
        assert not verify_inclusion(leaf_hash(d[m]), m, n, path, root)
        if n > 1:
            assert not verify_inclusion(d[(m + 1) % n], m, n, path, root)


@pytest.mark.parametrize("n", range(1, 41))
def test_wrong_index_rejected(n: int) -> None:
    d = items(n)
    root = merkle_root(d)
    for m in range(n):
        path = inclusion_proof(d, m)
        for wrong in range(-1, n + 2):
            if wrong != m:
                assert not verify_inclusion(d[m], wrong, n, path, root), (n, m, wrong)


@pytest.mark.parametrize("n", range(1, 41))
def test_wrong_size_rejected(n: int) -> None:
    """A proof for (m, n) checks for another size n' only if the RFC's proof shape is the same.

    The root commits to the tree, not to the size claim: e.g. leaf 0's proof in a 3-leaf tree
    has the same shape as in a 4-leaf tree. Everywhere the shapes differ it must fail, and for
    sizes that do not fit the index (n' <= m) or zero it must always fail.
    """
    d = items(n)
    root = merkle_root(d)
    rejected = 0
    for m in range(n):
        path = inclusion_proof(d, m)
        for wrong in range(0, 45):
            if wrong == n:
                continue
            ok = verify_inclusion(d[m], m, wrong, path, root)
            if wrong <= m:
                assert not ok
            else:
                assert ok == (ref_sides(m, wrong) == ref_sides(m, n)), (n, m, wrong)
            rejected += not ok
        # the neighbouring sizes that change the proof length always fail
        for wrong in (n - 1, n + 1):
            if wrong > m and len(ref_sides(m, wrong)) != len(path):
                assert not verify_inclusion(d[m], m, wrong, path, root)
    assert rejected > 0


@pytest.mark.parametrize("n", range(2, 41))
def test_modified_path_element_rejected(n: int) -> None:
    d = items(n)
    root = merkle_root(d)
    for m in range(n):
        path = inclusion_proof(d, m)
        for j in range(len(path)):
            for pos in (0, 31):
                bad = list(path)
                el = bytearray(bad[j])
                el[pos] ^= 1
                bad[j] = bytes(el)
                assert not verify_inclusion(d[m], m, n, bad, root)
        if len(path) >= 2:
            swapped = list(path)
            swapped[0], swapped[1] = swapped[1], swapped[0]
            assert not verify_inclusion(d[m], m, n, swapped, root)


@pytest.mark.parametrize("n", range(2, 41))
def test_truncated_or_extended_path_rejected(n: int) -> None:
    d = items(n)
    root = merkle_root(d)
    for m in range(n):
        path = inclusion_proof(d, m)
        assert path  # n >= 2: never empty
        assert not verify_inclusion(d[m], m, n, path[:-1], root)
        assert not verify_inclusion(d[m], m, n, path[1:], root)
        assert not verify_inclusion(d[m], m, n, [], root)
        assert not verify_inclusion(d[m], m, n, path + [path[-1]], root)
        assert not verify_inclusion(d[m], m, n, path + [b"\x00" * 32], root)


def test_single_leaf() -> None:
    d = [b"only"]
    assert inclusion_proof(d, 0) == []
    assert verify_inclusion(b"only", 0, 1, [], merkle_root(d))
    assert merkle_root(d) == leaf_hash(b"only")
    assert not verify_inclusion(b"only", 0, 1, [b"\x00" * 32], merkle_root(d))
    assert not verify_inclusion(b"only", 0, 0, [], merkle_root(d))


def test_wrong_root_rejected() -> None:
    d = items(9)
    path = inclusion_proof(d, 4)
    assert not verify_inclusion(d[4], 4, 9, path, merkle_root(d[:8]))
    assert not verify_inclusion(d[4], 4, 9, path, EMPTY_ROOT)


@pytest.mark.parametrize("n, m", [(0, 0), (3, 3), (3, -1), (1, 5)])
def test_inclusion_proof_index_out_of_range(n: int, m: int) -> None:
    with pytest.raises(IndexError):
        inclusion_proof(items(n), m)
