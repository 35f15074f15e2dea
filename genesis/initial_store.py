"""Writing a validated genesis into an empty store: the head before block one.

Apart from genesis/state.py (the genesis state and its root, computed without a store) so
that a light client can check the genesis root without loading the store.
"""

from __future__ import annotations

from genesis.format import Genesis
from genesis.state import genesis_writes
from state.schema import TREE
from state.store import Head, Store
from state.tree import StateTree


def init_store(store: Store, g: Genesis) -> Head:
    """Write the genesis state into an empty store and return the genesis head.

    The genesis head sits at ``initial_height - 1`` with the genesis hash as its block hash,
    so the first block links to the genesis document itself.
    """
    overlay = store.overlay()
    for k, v in genesis_writes(g):
        overlay.put(k, v)
    tree = store.overlay(TREE)
    root = StateTree(tree).apply(overlay.changes())
    head = Head(g.initial_height - 1, g.hash, root, 0, g.genesis_time_ms)
    store.init_genesis(g.hash, g.chain_id, (overlay, tree), head)
    return head
