"""Turning a validated genesis into the store's initial state (the head before block one)."""

from __future__ import annotations

from genesis.format import Genesis
from state.accounts import Account, put_account
from state.commitment import EMPTY_ROOT, chained_root
from state.params import ChainParams, store_params
from state.store import Head, Store


def chain_params(g: Genesis) -> ChainParams:
    return ChainParams(
        chain_id=g.chain_id,
        genesis_time=g.genesis_time_ms,
        producer=g.producer.pub_key,
        faucet=g.faucet.pub_key,
        operators=tuple(k.pub_key for k in g.operators),
        operator_threshold=g.operator_threshold,
        oracles=tuple(k.pub_key for k in g.oracles),
    )


def init_store(store: Store, g: Genesis) -> Head:
    """Write the genesis state into an empty store and return the genesis head.

    The genesis head sits at ``initial_height - 1`` with the genesis hash as its block hash,
    so the first block links to the genesis document itself.
    """
    overlay = store.overlay()
    store_params(overlay, chain_params(g))
    for a in g.accounts:
        put_account(overlay, a.address, Account(a.balance, 0))
    root = chained_root(EMPTY_ROOT, overlay.changes())
    head = Head(g.initial_height - 1, g.hash, root, 0, g.genesis_time_ms)
    store.init_genesis(g.hash, g.chain_id, overlay, head)
    return head
