"""Authenticated state tree: incremental roots against a from-scratch reference, proofs.

The reference below is written from the specification in ``chain/stateproof.py`` with
hashlib only, so a change to the hashing rules in either module breaks these tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.errors import DecodeError
from chain.stateproof import EMPTY, InvalidProof, StateProof, check_proof, decode_proof, verify
from state.tree import StateTree
from state.tree_groups import DictNodeStore, node_key

# ---------------------------------------------------------------------------------------------
# Reference: the root of a key set, recomputed from scratch.


def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def ref_root(state: dict[bytes, bytes]) -> bytes:
    """Root of ``state`` straight from the spec (recursive split by key-hash bits)."""
    items = sorted((int.from_bytes(_h(k), "big"), _h(v)) for k, v in state.items())

    def root(depth: int, xs: list[tuple[int, bytes]]) -> bytes:
        if not xs:
            return b"\x00" * 32
        if len(xs) == 1:
            kh, vh = xs[0]
            return _h(b"\x00" + kh.to_bytes(32, "big") + vh)
        left = [x for x in xs if not (x[0] >> (255 - depth)) & 1]
        right = [x for x in xs if (x[0] >> (255 - depth)) & 1]
        return _h(b"\x01" + root(depth + 1, left) + root(depth + 1, right))

    return root(0, items)


def fresh(state: dict[bytes, bytes]) -> tuple[StateTree, DictNodeStore]:
    store = DictNodeStore()
    tree = StateTree(store)
    tree.apply(sorted(state.items()))
    return tree, store


def _prefix_groups(bits: int, tries: int, seed: str) -> list[list[bytes]]:
    """Groups of real keys whose SHA-256 hashes share their first ``bits`` bits."""
    groups: dict[int, list[bytes]] = defaultdict(list)
    for i in range(tries):
        k = f"{seed}/{i}".encode()
        groups[int.from_bytes(_h(k)[:4], "big") >> (32 - bits)].append(k)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g))


# Keys that share 16 bits (several per group) and 24 bits (pairs) of their key hash.
SHARE16 = _prefix_groups(16, 200_000, "p16")[0]
SHARE24 = _prefix_groups(24, 60_000, "p24")[:3]


def _common_bits(a: bytes, b: bytes) -> int:
    x = int.from_bytes(_h(a), "big") ^ int.from_bytes(_h(b), "big")
    return 256 - x.bit_length()


def test_colliding_key_fixtures_really_collide() -> None:
    assert len(SHARE16) >= 3
    assert all(_common_bits(SHARE16[0], k) >= 16 for k in SHARE16[1:])
    assert len(SHARE24) == 3
    assert all(_common_bits(a, b) >= 24 for a, b in (g[:2] for g in SHARE24))


# ---------------------------------------------------------------------------------------------
# Small trees


def test_empty_tree() -> None:
    store = DictNodeStore()
    tree = StateTree(store)
    assert tree.root == EMPTY == ref_root({})
    proof = tree.prove(b"anything")
    assert proof == StateProof(depth=0, bitmap=b"", siblings=(), leaf=None)
    assert verify(tree.root, b"anything", None, proof)
    assert not verify(tree.root, b"anything", b"", proof)
    assert not verify(_h(b"x"), b"anything", None, proof)
    assert store.data == {}


def test_single_key() -> None:
    tree, store = fresh({b"k": b"v"})
    assert tree.root == _h(b"\x00" + _h(b"k") + _h(b"v")) == ref_root({b"k": b"v"})
    assert list(store.data) == [node_key(0, 0)]
    p = tree.prove(b"k")
    assert p.depth == 0 and p.leaf is None
    assert verify(tree.root, b"k", b"v", p)
    assert not verify(tree.root, b"k", b"w", p)
    assert not verify(tree.root, b"k", None, p)
    absent = tree.prove(b"other")
    assert absent.leaf == _h(b"k") + _h(b"v")
    assert verify(tree.root, b"other", None, absent)
    assert not verify(tree.root, b"other", b"v", absent)
    assert not verify(tree.root, b"k", None, absent)  # the other leaf IS the key


def test_two_keys_hand_computed() -> None:
    a, b = b"a", b"b"
    la, lb = _h(b"\x00" + _h(a) + _h(b"1")), _h(b"\x00" + _h(b) + _h(b"2"))
    ka, kb = int.from_bytes(_h(a), "big"), int.from_bytes(_h(b), "big")
    # Walk down the shared prefix: empty siblings on the way, leaves side by side at the split.
    d = 256 - (ka ^ kb).bit_length()
    node = _h(b"\x01" + la + lb) if ka < kb else _h(b"\x01" + lb + la)
    for i in range(d - 1, -1, -1):
        bit = (ka >> (255 - i)) & 1
        node = _h(b"\x01" + EMPTY + node) if bit else _h(b"\x01" + node + EMPTY)
    tree, _ = fresh({a: b"1", b: b"2"})
    assert tree.root == node
    p = tree.prove(a)
    assert p.depth == d + 1 and p.siblings == (lb,)
    assert verify(tree.root, a, b"1", p)


def test_node_keys_sort_by_depth_then_position() -> None:
    assert node_key(0, 0) == b"\x00\x00"
    assert node_key(1, 1) == b"\x00\x01\x80"
    assert node_key(9, 0b101) == b"\x00\x09\x02\x80"
    keys = [node_key(d, p) for d in range(6) for p in range(1 << d)]
    assert keys == sorted(keys)


@pytest.mark.parametrize("group", [SHARE16, *SHARE24])
def test_long_shared_prefixes(group: list[bytes]) -> None:
    state = {k: k[::-1] for k in group}
    state.update({f"filler/{i}".encode(): b"x" for i in range(50)})
    tree, _ = fresh(state)
    assert tree.root == ref_root(state)
    deepest = max(tree.prove(k).depth for k in group)
    assert deepest > 16
    for k, v in state.items():
        assert verify(tree.root, k, v, tree.prove(k))
    # Absence along the same long path: a key of the group that is not in the tree.
    gone = group[0]
    del state[gone]
    tree.apply([(gone, None)])
    assert tree.root == ref_root(state)
    p = tree.prove(gone)
    assert verify(tree.root, gone, None, p)
    assert not verify(tree.root, gone, gone[::-1], p)
    # Removing the rest of the group collapses the deep leaves back up.
    tree.apply(sorted((k, None) for k in group[1:]))
    for k in group:
        state.pop(k, None)
    assert tree.root == ref_root(state)
    assert tree.root == fresh(state)[0].root


# ---------------------------------------------------------------------------------------------
# Differential: incremental blocks against the reference, every intermediate root proven


KEYS = [f"k{i}".encode() for i in range(40)] + SHARE16[:4] + [g[0] for g in SHARE24] + [
    g[1] for g in SHARE24
]

change = st.tuples(st.sampled_from(KEYS), st.one_of(st.none(), st.binary(max_size=8)))
block = st.lists(change, max_size=12)


@settings(max_examples=150, deadline=None)
@given(blocks=st.lists(block, min_size=1, max_size=12))
def test_incremental_matches_reference(blocks: list[list[tuple[bytes, bytes | None]]]) -> None:
    store = DictNodeStore()
    tree = StateTree(store)
    state: dict[bytes, bytes] = {}
    for raw in blocks:
        net = dict(raw)  # last write to a key wins: the block's net change set
        root = tree.apply(sorted(net.items()))
        for k, v in net.items():
            if v is None:
                state.pop(k, None)
            else:
                state[k] = v
        assert root == tree.root == ref_root(state)
        # The node store holds exactly what a from-scratch build holds: no stale nodes.
        assert store.data == fresh(state)[1].data
        assert StateTree(store).root == root  # reopening reads the same root
        for k in KEYS:
            assert verify(root, k, state.get(k), tree.prove(k))
    tree.apply(sorted((k, None) for k in KEYS))
    assert tree.root == EMPTY
    assert store.data == {}


def test_random_blocks_larger_tree() -> None:
    rng = random.Random(7)
    store = DictNodeStore()
    tree = StateTree(store)
    state: dict[bytes, bytes] = {}
    universe = [f"acct/{i}".encode() for i in range(600)]
    for _ in range(25):
        net = {
            rng.choice(universe): (None if rng.random() < 0.3 else rng.randbytes(rng.randrange(9)))
            for _ in range(rng.randrange(0, 80))
        }
        before = tree.root
        tree.apply(sorted(net.items()))
        if not net:
            assert tree.root == before
        for k, v in net.items():
            if v is None:
                state.pop(k, None)
            else:
                state[k] = v
        assert tree.root == ref_root(state)
        for k in rng.sample(universe, 30):
            assert verify(tree.root, k, state.get(k), tree.prove(k))
    assert store.data == fresh(state)[1].data
    tree.apply([(k, None) for k in sorted(universe)])
    assert tree.root == EMPTY and store.data == {}


def test_block_partitioning_does_not_change_the_result() -> None:
    final = {f"x{i}".encode(): bytes([i]) for i in range(100)}
    one, s1 = fresh(final)
    store = DictNodeStore()
    tree = StateTree(store)
    keys = sorted(final)
    tree.apply([(k, b"old") for k in keys[::2]])
    tree.apply([(k, final[k]) for k in keys[1::2]] + [(b"zz-temp", b"t")])
    tree.apply(sorted([(k, final[k]) for k in keys[::2]] + [(b"zz-temp", None)]))
    assert tree.root == one.root and store.data == s1.data


def test_empty_and_noop_changes_leave_root_and_store_alone() -> None:
    tree, store = fresh({b"a": b"1", b"b": b"2", b"c": b"3"})
    root, snapshot = tree.root, dict(store.data)
    assert tree.apply([]) == root and store.data == snapshot
    assert tree.apply([(b"absent", None)]) == root and store.data == snapshot
    assert tree.apply([(b"a", b"1")]) == root and store.data == snapshot


def test_duplicate_key_in_one_block_is_refused() -> None:
    tree, _ = fresh({})
    with pytest.raises(ValueError):
        tree.apply([(b"a", b"1"), (b"a", None)])


def test_delete_all_leaves_nothing() -> None:
    state = {f"k{i}".encode(): b"v" for i in range(300)}
    tree, store = fresh(state)
    # 300 leaves and 299 inner nodes, stored 4 binary levels per group (65 bytes a node).
    assert sum((len(v) - 2) // 65 for v in store.data.values()) >= 599
    assert len(store.data) > 60
    tree.apply([(k, None) for k in sorted(state)[:150]])
    tree.apply([(k, None) for k in sorted(state)[150:]])
    assert tree.root == EMPTY
    assert store.data == {}


# ---------------------------------------------------------------------------------------------
# Tampered proofs


@pytest.fixture(scope="module")
def big() -> tuple[StateTree, dict[bytes, bytes]]:
    state = {f"acct/{i}".encode(): f"balance {i}".encode() for i in range(2000)}
    state.update({k: b"deep" for g in SHARE24 for k in g[:2]})
    return fresh(state)[0], state


def _bits_str(p: StateProof) -> str:
    return "".join(f"{b:08b}" for b in p.bitmap)[: p.depth]


def _pack(bits: str) -> bytes:
    n = (len(bits) + 7) // 8
    return int(bits.ljust(n * 8, "0") or "0", 2).to_bytes(n, "big") if n else b""


def _truncate(p: StateProof) -> StateProof:
    bits = _bits_str(p)
    sibs = p.siblings[:-1] if bits.endswith("1") else p.siblings
    return dataclasses.replace(p, depth=p.depth - 1, bitmap=_pack(bits[:-1]), siblings=sibs)


def test_tampered_inclusion_proofs_are_refused(big: tuple[StateTree, dict[bytes, bytes]]) -> None:
    tree, state = big
    root = tree.root
    for k in [b"acct/1", b"acct/1999", SHARE24[0][0]]:
        v = state[k]
        p = tree.prove(k)
        assert verify(root, k, v, p)
        assert decode_proof(p.encode()) == p
        assert len(p.encode()) <= 1024
        assert not verify(root, k, v + b"!", p), "changed value"
        assert not verify(root, k, None, p), "present key claimed absent"
        assert not verify(root, b"acct/2", v, p), "wrong key"
        assert not verify(_h(root), k, v, p), "wrong root"
        assert not verify(root, k, v, _truncate(p)), "truncated"
        leafy = dataclasses.replace(p, leaf=_h(k) + _h(v))
        assert not verify(root, k, v, leafy), "inclusion with a leaf"
        for name, bad in _tampered(p):
            assert not verify(root, k, v, bad), name


def test_tampered_absence_proofs_are_refused(big: tuple[StateTree, dict[bytes, bytes]]) -> None:
    tree, state = big
    root = tree.root
    saw_leaf = saw_empty = False
    for i in range(40):
        k = f"missing/{i}".encode()
        p = tree.prove(k)
        assert verify(root, k, None, p)
        assert not verify(root, k, b"", p), "absent key claimed present"
        assert not verify(root, b"acct/1", None, p), "present key claimed absent"
        assert not verify(root, k, None, _truncate(p)), "truncated"
        for name, bad in _tampered(p):
            assert not verify(root, k, None, bad), name
        if p.leaf is None:
            saw_empty = True
            continue
        saw_leaf = True
        changed = p.leaf[:32] + bytes([p.leaf[32] ^ 1]) + p.leaf[33:]
        assert not verify(root, k, None, dataclasses.replace(p, leaf=changed)), "leaf value"
        assert not verify(root, k, None, dataclasses.replace(p, leaf=None)), "dropped leaf"
        # The other leaf is a real key with its real value.
        owner = next(x for x in state if _h(x) == p.leaf[:32])
        assert verify(root, owner, state[owner], tree.prove(owner))
    assert saw_leaf and saw_empty  # both kinds of absence proof were exercised


def _tampered(p: StateProof) -> list[tuple[str, StateProof]]:
    r = dataclasses.replace
    out: list[tuple[str, StateProof]] = []
    bits = _bits_str(p)
    if p.siblings:
        s0 = bytes([p.siblings[0][0] ^ 1]) + p.siblings[0][1:]
        out.append(("changed sibling", r(p, siblings=(s0, *p.siblings[1:]))))
        s1 = p.siblings[-1][:-1] + bytes([p.siblings[-1][-1] ^ 0x80])
        out.append(("changed last sibling", r(p, siblings=(*p.siblings[:-1], s1))))
        out.append(("dropped sibling", r(p, siblings=p.siblings[:-1])))
        out.append(("empty sibling spelled out", r(p, siblings=(*p.siblings[:-1], EMPTY))))
    if len(p.siblings) > 1:
        out.append(("reordered siblings", r(p, siblings=p.siblings[::-1])))
    out.append(("extra sibling", r(p, siblings=(*p.siblings, _h(b"extra")))))
    out.append(("extra level", r(p, depth=p.depth + 1, bitmap=_pack(bits + "1"),
                                 siblings=(*p.siblings, _h(b"extra")))))
    out.append(("extra empty level", r(p, depth=p.depth + 1, bitmap=_pack(bits + "0"))))
    out.append(("depth without bitmap", r(p, depth=p.depth + 8)))
    if p.depth:
        flipped = _pack(("1" if bits[0] == "0" else "0") + bits[1:])
        out.append(("flipped bitmap bit", r(p, bitmap=flipped)))
    if p.depth % 8:
        pad = p.bitmap[:-1] + bytes([p.bitmap[-1] | 1])
        out.append(("padding bit set", r(p, bitmap=pad)))
    return out


def test_check_proof_names_the_reason(big: tuple[StateTree, dict[bytes, bytes]]) -> None:
    tree, state = big
    p = tree.prove(b"acct/5")
    with pytest.raises(InvalidProof) as e:
        check_proof(tree.root, b"acct/5", b"nope", p)
    assert e.value.reason == "root_mismatch"
    with pytest.raises(InvalidProof) as e:
        check_proof(tree.root, b"acct/5", state[b"acct/5"], dataclasses.replace(p, depth=300))
    assert e.value.reason == "malformed_proof"
    absent = next(tree.prove(k) for k in (f"m{i}".encode() for i in range(99))
                  if tree.prove(k).leaf is not None)
    forged = dataclasses.replace(absent, leaf=_h(b"acct/5") + _h(state[b"acct/5"]))
    with pytest.raises(InvalidProof) as e:
        check_proof(tree.root, b"acct/5", None, forged)
    assert e.value.reason == "key_present"
    k = next(m for m in (f"m{i}".encode() for i in range(99))
             if _common_bits(m, b"acct/5") == 0 and tree.prove(m).depth)
    far = dataclasses.replace(tree.prove(k), leaf=_h(b"acct/5") + _h(b"x"))
    with pytest.raises(InvalidProof) as e:
        check_proof(tree.root, k, None, far)
    assert e.value.reason == "wrong_path"


def test_no_second_encoding_of_a_valid_proof(big: tuple[StateTree, dict[bytes, bytes]]) -> None:
    """A valid proof has one form: no spelled-out empty siblings, no padding bits."""
    tree, state = big
    k = SHARE24[0][0]
    p = tree.prove(k)
    bits = _bits_str(p)
    assert "0" in bits  # the deep shared prefix has empty siblings
    # Spell out the first empty sibling as EMPTY with its bitmap bit set.
    i = bits.index("0")
    before = bits[:i].count("1")
    spelled = dataclasses.replace(
        p, bitmap=_pack(bits[:i] + "1" + bits[i + 1:]),
        siblings=(*p.siblings[:before], EMPTY, *p.siblings[before:]))
    assert not verify(tree.root, k, state[k], spelled)
    # Set a padding bit and slip an unused sibling in front.
    q = p if p.depth % 8 else tree.prove(next(x for x in state if tree.prove(x).depth % 8))
    kq = k if q is p else next(x for x in state if tree.prove(x) == q)
    padded = dataclasses.replace(q, bitmap=q.bitmap[:-1] + bytes([q.bitmap[-1] | 1]),
                                 siblings=(_h(b"junk"), *q.siblings))
    assert verify(tree.root, kq, state[kq], q)
    assert not verify(tree.root, kq, state[kq], padded)


def test_encoded_proof_is_strict(big: tuple[StateTree, dict[bytes, bytes]]) -> None:
    tree, _ = big
    data = tree.prove(b"acct/7").encode()
    assert decode_proof(data).encode() == data
    with pytest.raises(DecodeError):
        decode_proof(data[:-1])  # truncated bytes
    with pytest.raises(DecodeError):
        decode_proof(data + b"\x00")  # trailing element
    short = dataclasses.replace(decode_proof(data), siblings=(b"\x01" * 31,)).encode()
    with pytest.raises(DecodeError):
        decode_proof(short)


@settings(max_examples=40, deadline=None)
@given(depth=st.integers(0, 40), nbits=st.integers(0, 6), salt=st.binary(max_size=4),
       leaf=st.one_of(st.none(), st.binary(min_size=64, max_size=64)),
       value=st.one_of(st.none(), st.binary(max_size=4)))
def test_arbitrary_proofs_do_not_verify(depth: int, nbits: int, salt: bytes,
                                        leaf: bytes | None, value: bytes | None) -> None:
    tree, _ = fresh({b"a": b"1", b"b": b"2", b"c": b"3"})
    bitmap = _pack("1" * min(nbits, depth) + "0" * (depth - min(nbits, depth)))
    sibs = tuple(_h(salt + bytes([i])) for i in range(min(nbits, depth)))
    p = StateProof(depth=depth, bitmap=bitmap, siblings=sibs, leaf=leaf)
    assert not verify(tree.root, b"a", value, p)


def test_proof_size_is_logarithmic() -> None:
    state = {f"acct/{i}".encode(): b"v" for i in range(20_000)}
    tree, _ = fresh(state)
    sizes = [len(tree.prove(f"acct/{i}".encode()).encode()) for i in range(0, 20_000, 97)]
    assert max(sizes) <= 1024
    assert sum(sizes) / len(sizes) < 34 * 20 + 40  # ~log2(20,000) = 14.3 levels


def test_store_rolled_back_underneath() -> None:
    """Undo records restore node keys like state keys; ``reload`` then serves the old root."""
    rng = random.Random(3)
    store = DictNodeStore()
    tree = StateTree(store)
    state = {f"r{i}".encode(): b"v" for i in range(300)}
    tree.apply(sorted(state.items()))
    saved_nodes, saved_state, saved_root = dict(store.data), dict(state), tree.root
    for _ in range(5):
        net = {f"r{rng.randrange(400)}".encode(): rng.choice([None, b"w", b"x"]) for _ in range(60)}
        tree.apply(sorted(net.items()))
    assert tree.root != saved_root
    store.data.clear()
    store.data.update(saved_nodes)  # what replaying the undo records does to the node keys
    tree.reload()
    assert tree.root == saved_root
    for k in [f"r{i}".encode() for i in range(400)]:
        assert verify(tree.root, k, saved_state.get(k), tree.prove(k))
    net = {f"r{i}".encode(): (None if i % 3 else b"z") for i in range(0, 400, 7)}
    tree.apply(sorted(net.items()))
    for k, v in net.items():
        if v is None:
            saved_state.pop(k, None)
        else:
            saved_state[k] = v
    assert tree.root == ref_root(saved_state)
    assert store.data == fresh(saved_state)[1].data


def test_group_layout() -> None:
    """Each store entry is a group: a slot bitmap, then the 65-byte records of its slots,
    the first being the group root whose hash its parent (or the root) names."""
    state = {f"g{i}".encode(): bytes([i % 7]) for i in range(500)}
    tree, store = fresh(state)
    single, _ = fresh({b"k": b"v"})
    assert single.store.data == {  # type: ignore[attr-defined]
        node_key(0, 0): b"\x00\x02" + b"\x00" + _h(b"k") + _h(b"v")}
    hashes = set()
    for k, v in store.data.items():
        depth = int.from_bytes(k[:2], "big")
        bm = int.from_bytes(v[:2], "big")
        assert depth % 4 == 0 and bm & 2 and not bm & 1
        assert len(v) == 2 + 65 * bin(bm).count("1")
        hashes.add(_h(v[2:67]))
    assert tree.root in hashes


def test_the_prior_value_check_names_exactly_the_keys_the_tree_does_not_hold() -> None:
    """apply(changes, priors): each changed key's prior (as the block read it from the store)
    must be what the tree commits to; otherwise PriorMismatch names it and nothing changes."""
    from state.tree_groups import PriorMismatch

    store = DictNodeStore()
    base = {f"k{i}".encode(): f"v{i}".encode() for i in range(200)}
    root = StateTree(store).apply(sorted(base.items()))
    before = dict(store.data)
    changes = [(b"k1", b"x"), (b"k2", None), (b"new", b"y")]
    good: dict[bytes, bytes | None] = {b"k1": base[b"k1"], b"k2": base[b"k2"], b"new": None}
    cases: list[tuple[dict[bytes, bytes | None], set[bytes]]] = [
        ({**good, b"k1": b"tampered"}, {b"k1"}),  # rewritten in the store
        ({**good, b"new": b"ghost"}, {b"new"}),   # appeared in the store
        ({**good, b"k1": None}, {b"k1"}),         # vanished from the store
        ({**good, b"k1": None, b"k2": b"z"}, {b"k1", b"k2"}),
    ]
    for priors, wrong in cases:
        t = StateTree(store)
        try:
            t.apply(changes, priors)
        except PriorMismatch as e:
            assert {k for k, _, _ in e.mismatches} == wrong
        else:
            raise AssertionError(f"mismatch of {wrong} not detected")
        assert store.data == before and t.root == root  # nothing written
    expect = {**base, b"k1": b"x", b"new": b"y"}
    del expect[b"k2"]
    assert StateTree(store).apply(changes, good) == StateTree(DictNodeStore()).apply(
        sorted(expect.items()))


def test_the_prior_value_check_on_a_single_change_and_on_an_empty_tree() -> None:
    from state.tree_groups import PriorMismatch

    empty = StateTree(DictNodeStore())
    try:
        empty.apply([(b"a", b"1"), (b"b", b"2")], {b"a": b"old", b"b": None})
    except PriorMismatch as e:
        assert [k for k, _, _ in e.mismatches] == [b"a"]
    else:
        raise AssertionError("mismatch not detected")
    t = StateTree(DictNodeStore())
    t.apply([(b"a", b"1"), (b"b", b"2")])
    for prior, ok in ((b"1", True), (b"9", False), (None, False)):
        try:
            StateTree(t.store).apply([(b"a", b"3")], {b"a": prior})
            assert ok
        except PriorMismatch:
            assert not ok
