"""End-of-block take-profit / stop-loss: fire every order whose trigger the oracle has reached.

Runs right after funding (state/block_end.py). For each market in symbol order (``mkt/`` key
order) whose mode is ``active``, with ``P`` = the market's oracle price at the end of the
block, walk ``trig/`` + symbol + ``/u`` then ``/d`` (state/exchange/book.py) from the first key:

* ``u`` (a sell take-profit, a buy stop-loss) fires when ``P >= trigger``;
* ``d`` (a buy take-profit, a sell stop-loss) fires when ``P <= trigger``.

The comparison is on the integers themselves, inclusive: exactly at the trigger fires, one
unit (one tick) short does not; there is no rounding, so nothing is ever rounded in the
trigger's favour. Because the index is ordered nearest-trigger-first, the walk stops at the
first key that has not triggered: its cost follows the orders fired, never the orders waiting.

Each fired order is taken off the index (its ``ord/``, ``trig/`` and ``aord/`` keys) and emits
``order_triggered``; then, with ``cur`` = its owner's position in the market:

* no position opposite the order (flat, or same side) -> ``order_cancelled`` reason
  ``no_position``;
* else a reduce-only market order of the owner for ``min(size, abs(cur))`` at worst the
  order's ``price`` runs through the same matching walk as an ``order`` transaction
  (``execute_taker``): ``fill`` / ``order_cancelled`` events, then ``order_unfilled`` for any
  remainder (nothing rests);
* if that execution fails (the owner cannot pay a fill, ...), every write of this one order
  is reverted, the order is still removed, and ``order_cancelled`` carries the failure's
  result-code name as the reason (e.g. ``insufficient_margin``). The block goes on.
"""

from __future__ import annotations

from chain.block import Attr, Event
from chain.codes import ResultCode
from state.context import TxContext
from state.exchange.book import (
    DIRECTIONS,
    is_triggered,
    order_key_of_index,
    remove,
    trigger_from_key,
    trigger_prefix,
)
from state.exchange.markets import get_market_state
from state.exchange.matching import cancel_event, execute_taker
from state.exchange.positions import get_position
from state.execution_failure import ExecutionFailure
from state.overlay import Overlay
from state.records import MARKET, Market, Order


def _fire(view: Overlay, market: Market, o: Order, oracle: int) -> list[Event]:
    events = [Event("order_triggered", (
        Attr("kind", o.kind), Attr("market", o.market), Attr("oracle_price", str(oracle)),
        Attr("order", str(o.id)), Attr("owner", o.owner.hex()), Attr("side", o.side),
        Attr("size", str(o.size)), Attr("trigger_price", str(o.trigger_price))))]
    mark = view.checkpoint()
    remove(view, o)
    pos = get_position(view, o.owner, o.market)
    cur = pos.size if pos else 0
    if cur == 0 or (cur > 0) == (o.side == "buy"):
        events.append(cancel_event(o, "no_position"))
        return events
    try:
        left, fills = execute_taker(view, market, o.owner, o.side, o.price,
                                    min(o.size, abs(cur)))
    except ExecutionFailure as e:
        view.revert(mark)
        remove(view, o)
        events.append(cancel_event(o, ResultCode(e.code).name.lower()))
        return events
    events.extend(fills)
    if left:
        events.append(Event("order_unfilled", (Attr("order", str(o.id)),
                                               Attr("owner", o.owner.hex()),
                                               Attr("size", str(left)))))
    return events


def process_triggers(view: Overlay, ctx: TxContext) -> list[Event]:
    events: list[Event] = []
    for mkey in list(view.iter_ordered(MARKET)):
        market = view.get_obj(mkey, Market)
        st = get_market_state(view, market.symbol) if market else None
        if market is None or st is None or st.mode != "active":
            continue
        oracle = st.oracle_price  # fills do not move it: one price for the whole walk
        for direction in DIRECTIONS:
            prefix = trigger_prefix(market.symbol, direction)
            after = b""
            while True:
                key = view.first_key_after(prefix, after)
                if key is None or not is_triggered(direction,
                                                   trigger_from_key(key, direction), oracle):
                    break
                after = key
                o = view.get_obj(order_key_of_index(key), Order)
                if o is None:  # pragma: no cover - the index and ord/ are written together
                    view.delete(key)
                    continue
                events.extend(_fire(view, market, o, oracle))
    return events
