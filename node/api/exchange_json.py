"""Read-only views of the exchange for RPC: accounts with margin, positions, orders, books."""

from __future__ import annotations

from typing import Any

from state.accounts import get_account
from state.exchange.book import account_orders, best_orders
from state.exchange.funding import settle
from state.exchange.margin import (
    liquidation_price,
    maintenance_requirement,
    margin_status,
    unrealized_pnl,
)
from state.exchange.markets import get_market, get_market_state
from state.exchange.positions import account_positions, get_position
from state.overlay import Overlay
from state.records import Order, Position


def order_json(o: Order) -> dict[str, Any]:
    return {
        "id": str(o.id), "owner": o.owner.hex(), "market": o.market, "side": o.side,
        "kind": o.kind, "tif": o.tif, "price": str(o.price), "size": str(o.size),
        "orig_size": str(o.orig_size), "reduce_only": o.reduce_only,
        "trigger_price": str(o.trigger_price), "arrival": str(o.arrival),
    }


def position_json(view: Overlay, owner: bytes, symbol: str, pos: Position) -> dict[str, Any]:
    """A position with its mark-to-oracle figures and single-market liquidation price."""
    m = get_market(view, symbol)
    st = get_market_state(view, symbol)
    out: dict[str, Any] = {
        "market": symbol, "size": str(pos.size), "cost": str(pos.cost),
        "entry_price": None if pos.size == 0 else str(pos.entry_price()),
        "realized_pnl": str(pos.realized_pnl), "funding_index": str(pos.funding_index),
    }
    if m is not None and st is not None and pos.size:
        collateral = get_account(view, owner).balance
        others = [(p, s2.oracle_price, m2.maintenance_margin_ppm)
                  for sym, p in account_positions(view, owner) if sym != symbol and p.size
                  for m2, s2 in [(get_market(view, sym), get_market_state(view, sym))]
                  if m2 is not None and s2 is not None]
        unsettled = sum(settle(p.size, p.funding_index, s2.funding_index).collateral_delta
                        for sym, p in account_positions(view, owner) if p.size
                        for s2 in [get_market_state(view, sym)] if s2 is not None)
        liq = liquidation_price(collateral, pos, m.maintenance_margin_ppm, others, unsettled)
        out.update({
            "oracle_price": str(st.oracle_price),
            "unrealized_pnl": str(unrealized_pnl(pos, st.oracle_price)),
            "maintenance_margin": str(maintenance_requirement(
                pos.size, st.oracle_price, m.maintenance_margin_ppm)),
            "liquidation_price": None if liq is None else str(liq),
        })
    return out


def account_exchange_json(view: Overlay, owner: bytes) -> dict[str, Any]:
    """Collateral, equity, margin used and positions of an account."""
    eq, required = margin_status(view, owner)
    maint = 0
    positions = []
    for symbol, pos in account_positions(view, owner):
        positions.append(position_json(view, owner, symbol, pos))
        m = get_market(view, symbol)
        st = get_market_state(view, symbol)
        if m is not None and st is not None and pos.size:
            maint += maintenance_requirement(pos.size, st.oracle_price, m.maintenance_margin_ppm)
    return {
        "collateral": str(get_account(view, owner).balance),
        "equity": str(eq),
        "initial_margin": str(required),
        "maintenance_margin": str(maint),
        "free_collateral": str(eq - required),
        "positions": positions,
        "open_orders": len(account_orders(view, owner)),
    }


def orderbook_json(view: Overlay, symbol: str, depth: int) -> dict[str, Any]:
    """Aggregated price levels, best first: ``[price, total size, order count]``."""

    def levels(side: str) -> list[list[Any]]:
        out: list[list[Any]] = []
        for o in best_orders(view, symbol, side):
            if out and out[-1][0] == o.price:
                out[-1][1] += o.size
                out[-1][2] += 1
            elif len(out) == depth:
                break
            else:
                out.append([o.price, o.size, 1])
        return [[str(p), str(s), n] for p, s, n in out]

    return {"market": symbol, "bids": levels("buy"), "asks": levels("sell")}


def position_of(view: Overlay, owner: bytes, symbol: str) -> dict[str, Any] | None:
    pos = get_position(view, owner, symbol)
    return None if pos is None else position_json(view, owner, symbol, pos)


def orders_json(view: Overlay, owner: bytes, symbol: str | None) -> list[dict[str, Any]]:
    return [order_json(o) for o in account_orders(view, owner)
            if symbol is None or o.market == symbol]
