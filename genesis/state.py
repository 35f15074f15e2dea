"""The genesis state: its (key, value) pairs and its state root, computed without a store
(a light client checks the genesis root with this; genesis/initial_store.py writes it)."""

from __future__ import annotations

from genesis.format import Genesis
from state.params import PARAM_CHAIN, ChainParams
from state.records import Account, initial_state, market_key, market_state_key
from state.schema import account_key
from state.tree import StateTree
from state.tree_groups import DictNodeStore


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


def genesis_writes(g: Genesis) -> list[tuple[bytes, bytes]]:
    """The genesis state as sorted (key, value) pairs."""

    writes = [(PARAM_CHAIN, chain_params(g).encode())]
    writes += [(account_key(a.address), Account(a.balance, 0).encode()) for a in g.accounts]
    for gm in g.markets:
        writes.append((market_key(gm.market.symbol), gm.market.encode()))
        writes.append((market_state_key(gm.market.symbol),
                       initial_state(gm.oracle_price, g.genesis_time_ms).encode()))
    return sorted(writes)


def genesis_state_root(g: Genesis) -> bytes:
    """The state root of the genesis state, computed without a store (for light clients)."""
    return StateTree(DictNodeStore()).apply(genesis_writes(g))


