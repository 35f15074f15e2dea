"""Markets: the parameters genesis fixes for each perpetual, and the state that moves.

Scales (docs/PROTOCOL.md §1.1): prices are micro-USDC per one whole base unit, sizes are
10^-8 base units, margin and fee fractions are parts per million (ppm), funding rates are
parts per billion (ppb) per funding interval, times are milliseconds.

State keys: ``mkt/<symbol>`` holds the :class:`Market` parameters (fixed at genesis),
``mks/<symbol>`` the :class:`MarketState` (oracle price, funding index, open interest, mode).
Two keys so that the per-block writes (oracle, funding) never rewrite the parameters.
"""

from __future__ import annotations

from state.records import Market, MarketState, market_key, market_state_key
from state.state_view import StateView


def get_market(view: StateView, symbol: str) -> Market | None:
    return view.get_obj(market_key(symbol), Market)


def get_market_state(view: StateView, symbol: str) -> MarketState | None:
    return view.get_obj(market_state_key(symbol), MarketState)


def put_market_state(view: StateView, symbol: str, state: MarketState) -> None:
    view.put_obj(market_state_key(symbol), state)
