"""The exchange's JSON-RPC methods: accounts with margin, positions, orders, order books and
markets, each read from one consistent store snapshot.
"""

from __future__ import annotations

from typing import Any

from node.api.exchange_json import account_exchange_json, orderbook_json, orders_json, position_of
from node.api.rpc_params import (
    INVALID_PARAMS,
    NOT_FOUND,
    Params,
    RPCError,
    only_params,
    param_hex32,
    param_symbol,
    parse_u64,
)
from node.node import Node
from node.wire_json import (
    jsonify,
)
from state.records import (
    BAD_DEBT,
    INSURANCE_ADDRESS,
    MARKET,
    Account,
    Market,
    MarketState,
    Pool,
    market_key,
    market_state_key,
)
from state.schema import account_key


async def rpc_account(node: Node, params: Params) -> Any:
    only_params(params, {"address"})
    addr = param_hex32(params, "address")
    with node.store.snapshot() as snap:  # state and height from the same commit
        raw = snap.state_get(account_key(addr))
        head = snap.head()
        exchange = account_exchange_json(snap.overlay(), addr)
    acct = Account(0, 0) if raw is None else Account.decode(raw)
    pending = node.mempool.pending_nonce(addr)
    return {
        "address": addr.hex(),
        "balance": str(acct.balance),
        "nonce": str(acct.nonce),
        "next_nonce": str(acct.nonce if pending is None else pending),
        "height": str(head.height if head else node.head.height),
        "exists": raw is not None,
        **exchange,
    }


async def rpc_orderbook(node: Node, params: Params) -> Any:
    only_params(params, {"symbol", "depth"})
    symbol = param_symbol(params)
    depth = parse_u64(params.get("depth", 20), "depth")
    if not 1 <= depth <= 500:
        raise RPCError(INVALID_PARAMS, "depth must be an integer in 1..500")
    with node.store.snapshot() as snap:
        if snap.state_get(market_key(symbol)) is None:
            raise RPCError(NOT_FOUND, f"no market {symbol!r}")
        head = snap.head()
        out = orderbook_json(snap.overlay(), symbol, depth)
    out["height"] = str(head.height if head else node.head.height)
    return out


async def rpc_position(node: Node, params: Params) -> Any:
    only_params(params, {"address", "symbol"})
    addr = param_hex32(params, "address")
    symbol = param_symbol(params)
    with node.store.snapshot() as snap:
        head = snap.head()
        pos = position_of(snap.overlay(), addr, symbol)
    return {"address": addr.hex(), "position": pos,
            "height": str(head.height if head else node.head.height)}


async def rpc_orders(node: Node, params: Params) -> Any:
    only_params(params, {"address", "symbol"})
    addr = param_hex32(params, "address")
    symbol = param_symbol(params) if "symbol" in params else None
    with node.store.snapshot() as snap:
        head = snap.head()
        orders = orders_json(snap.overlay(), addr, symbol)
    return {"address": addr.hex(), "orders": orders,
            "height": str(head.height if head else node.head.height)}


def _market_json(symbol: str, raw_m: bytes | None, raw_s: bytes | None) -> dict[str, Any]:
    if raw_m is None or raw_s is None:
        raise RPCError(NOT_FOUND, f"no market {symbol!r}")
    return {"symbol": symbol,
            "params": jsonify(Market.decode(raw_m).to_obj()),
            "state": jsonify(MarketState.decode(raw_s).to_obj())}


async def rpc_market(node: Node, params: Params) -> Any:
    only_params(params, {"symbol"})
    symbol = param_symbol(params)
    with node.store.snapshot() as snap:
        head = snap.head()
        out = _market_json(symbol, snap.state_get(market_key(symbol)),
                           snap.state_get(market_state_key(symbol)))
    out["height"] = str(head.height if head else node.head.height)
    return out


async def rpc_markets(node: Node, params: Params) -> Any:
    only_params(params, set())
    with node.store.snapshot() as snap:
        head = snap.head()
        symbols = [k[len(MARKET):].decode() for k, _ in node.store.iter_state(MARKET)]
        markets = [_market_json(s, snap.state_get(market_key(s)),
                                snap.state_get(market_state_key(s))) for s in symbols]
        fund = snap.state_get(account_key(INSURANCE_ADDRESS))
        debt = snap.state_get(BAD_DEBT)
    return {"markets": markets, "height": str(head.height if head else node.head.height),
            "insurance_fund": {
                "address": INSURANCE_ADDRESS.hex(),
                "balance": str(Account.decode(fund).balance if fund else 0),
                "bad_debt": str(Pool.decode(debt).amount if debt else 0)}}
