"""Reads of one state key as of a height, with the proof and the signed header a light
client checks it against (the ``query`` RPC); from one consistent store snapshot."""

from __future__ import annotations

from dataclasses import dataclass

from chain.block import Block, SignedHeader
from chain.stateproof import StateProof
from state.checked_state import check_value
from state.schema import STATE, TREE
from state.store import Store
from state.store_errors import StoreError
from state.tree import StateTree


@dataclass(frozen=True)
class QueryAnswer:
    """A state key's value at a height, with the proof and the signed header to check it."""

    key: bytes
    value: bytes | None
    height: int
    proof: StateProof | None
    signed_header: SignedHeader | None
    """None at the genesis height (its state root follows from the genesis file)."""


def query_state(store: Store, key: bytes, height: int | None, prove: bool) -> QueryAnswer:
    """Read ``key`` as of ``height`` (default: the head) from one consistent snapshot."""
    with store.snapshot() as snap:
        head = snap.head()
        if head is None:
            raise StoreError("store has no genesis")
        h = head.height if height is None else height
        view = snap.at_height(h)
        value = view.get(STATE + key)
        tree = StateTree(view.keyspace(TREE))
        check_value(tree, key, value)  # never a value the tree does not hold
        proof = tree.prove(key) if prove else None
        raw = snap.block_bytes(h)
        sh = Block.signed_header_of(raw) if raw is not None else None
    return QueryAnswer(key, value, h, proof, sh)
