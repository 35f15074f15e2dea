"""Chain parameters fixed at genesis and kept in state (so they roll back with it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from chain.codec import U8, U64, Bytes32, ChainId, Length, Struct
from state.schema import PARAM_CHAIN
from state.state_view import StateView

KeyList = Annotated[tuple[Bytes32, ...], Length(0, 64)]


@dataclass(frozen=True, slots=True)
class ChainParams(Struct):
    """Who may do what on this chain, as genesis decided."""

    chain_id: ChainId
    genesis_time: U64
    """Genesis time in milliseconds since the Unix epoch; the first block must be later."""
    producer: Bytes32
    """The only key whose block signatures are accepted."""
    faucet: Bytes32
    """The only key that may send ``deposit`` transactions."""
    operators: KeyList
    """Keys that may sign admin commands and fork certificates."""
    operator_threshold: U8
    """How many distinct operator signatures an admin command needs."""
    oracles: KeyList
    """Keys whose price updates are accepted."""


def load_params(view: StateView) -> ChainParams:
    raw = view.get(PARAM_CHAIN)
    if raw is None:
        raise LookupError("state has no chain parameters (store not initialised from genesis)")
    return ChainParams.decode(raw)


def store_params(view: StateView, params: ChainParams) -> None:
    view.put(PARAM_CHAIN, params.encode())


