"""The exchange's transactions: place an order (matching it against the book, or storing a
take-profit / stop-loss on the trigger index), cancel one, cancel all of an account's orders,
withdraw collateral.

The matching walk is ``execute_taker``: ``place_order`` and the end-of-block trigger step
(state/exchange/triggers.py) run the same code.

Collateral is the account's settlement balance (``Account.balance``). Every fill settles
both positions' funding first, then applies the fill (state/exchange/positions.py) at the maker's
price; fees go to the fee pool. Open interest is kept per market (long side == short side).

Margin rules (a first, simple version, documented in docs/PROTOCOL.md):
* after a taker's fills, an account whose exposure grew must still meet its initial margin
  at oracle prices, else the whole transaction fails (``insufficient_margin``);
* a maker whose fill would leave it below initial margin (with grown exposure) does not
  trade: its resting order is cancelled and matching continues;
* a resting order is accepted only if the account would meet initial margin with the order
  fully filled at its limit price (other open orders are not counted).
"""

from __future__ import annotations

from dataclasses import fields
from typing import cast

from chain.block import Attr, Event
from chain.codes import ResultCode
from chain.tx import CancelAll, CancelOrder, PlaceOrder, Transaction
from state.exchange.book import (
    TRIGGER_KINDS,
    account_orders,
    arrival,
    best_orders,
    get_order,
    remove,
    rest,
    trigger_direction,
)
from state.exchange.collateral import credit, pool_add, settle_position
from state.exchange.margin import (
    initial_requirement,
    margin_status,
)
from state.exchange.markets import get_market, get_market_state, put_market_state
from state.exchange.positions import apply_fill, get_position, store_position
from state.execution_failure import ExecutionFailure
from state.overlay import Overlay
from state.records import FEE_POOL, Market, MarketState, Order
from state.scales import PPM

_ATTRS: dict[tuple[str, str], Attr] = {}


_ATTRS_MAX = 1 << 16


def _attr(key: str, value: str) -> Attr:
    """``Attr(key, value)``, shared with earlier events carrying the same pair (attributes
    are immutable values): markets, sides, prices, sizes and accounts repeat from fill to
    fill, and a block's results then hold far fewer objects (each one is scanned by every
    full garbage collection while the block is built). Bounded: cleared when full."""
    a = _ATTRS.get((key, value))
    if a is None:
        if len(_ATTRS) >= _ATTRS_MAX:
            _ATTRS.clear()
        a = _ATTRS[(key, value)] = Attr(key, value)
    return a


class MakerCannotTrade(Exception):
    """The maker side of a fill cannot be paid or margined: its order is cancelled."""


def _fill(view: Overlay, market: Market, st: MarketState, taker: bytes, maker: Order,
          qty: int, taker_side: str) -> tuple[int, int, Event]:
    """Trade ``qty`` between the taker and a resting maker order at the maker's price.

    Returns the change to the market's (long, short) open interest, which the caller writes
    once after its walk (margin reads only the oracle price and funding index from the
    market state, which no fill changes), and the ``fill`` event.

    Raises ``ExecutionFailure`` if the taker cannot pay, ``MakerCannotTrade`` if the maker
    cannot pay or would end below initial margin with grown exposure.
    """
    price = maker.price
    sign = 1 if taker_side == "buy" else -1
    symbol = market.symbol
    long_d = short_d = 0
    for owner, delta, fee_ppm in ((taker, sign * qty, market.taker_fee_ppm),
                                  (maker.owner, -sign * qty, market.maker_fee_ppm)):
        old = settle_position(view, owner, symbol, st)
        out = apply_fill(old, delta, price, fee_ppm)
        try:
            credit(view, owner, out.collateral_delta)
        except ExecutionFailure:
            if owner == taker:
                raise
            raise MakerCannotTrade() from None
        pool_add(view, FEE_POOL, out.fee)
        dl, ds = store_position(view, owner, symbol, old, out.new_position)
        long_d += dl
        short_d += ds
        if owner == maker.owner and abs(out.new_position.size) > abs(old.size):
            eq, req = margin_status(view, owner)
            if eq < req:
                raise MakerCannotTrade()
    ev = Event("fill", (_attr("maker", maker.owner.hex()), Attr("maker_order", str(maker.id)),
                        _attr("market", symbol), _attr("price", str(price)),
                        _attr("size", str(qty)), _attr("taker", taker.hex()),
                        _attr("taker_side", taker_side)))
    return long_d, short_d, ev


def _exposure(view: Overlay, owner: bytes, market: str) -> int:
    pos = get_position(view, owner, market)
    return abs(pos.size) if pos else 0


def _resized(o: Order, size: int) -> Order:
    """``replace(o, size=size)``, without its per-call field introspection (hot: every
    partial fill of a maker)."""
    return Order(o.owner, o.id, o.market, o.side, o.kind, o.tif, o.price, size, o.orig_size,
                 o.reduce_only, o.trigger_price, o.arrival)


def _with_open_interest(st: MarketState, long: int, short: int) -> MarketState:
    """``replace(st, open_interest_long=long, open_interest_short=short)``, likewise."""
    return MarketState(st.oracle_price, st.oracle_time, st.funding_index, st.funding_time,
                       st.premium_sum_ppb, st.premium_samples, long, short, st.mode,
                       st.price_band_ppm, st.liquidation_wait)


# The two helpers above list every field positionally: refuse to load if a field is added.
if [f.name for f in fields(Order)] != ["owner", "id", "market", "side", "kind", "tif", "price",
                                       "size", "orig_size", "reduce_only", "trigger_price",
                                       "arrival"] \
        or [f.name for f in fields(MarketState)] != [
            "oracle_price", "oracle_time", "funding_index", "funding_time", "premium_sum_ppb",
            "premium_samples", "open_interest_long", "open_interest_short", "mode",
            "price_band_ppm", "liquidation_wait"]:
    raise TypeError(
        "state/exchange/matching.py: update _resized / _with_open_interest to the fields")


def _crosses(side: str, limit: int, resting_price: int) -> bool:
    return resting_price <= limit if side == "buy" else resting_price >= limit


def execute_taker(view: Overlay, market: Market, owner: bytes, side: str, limit: int,
                  size: int, post_only: bool = False) -> tuple[int, list[Event]]:
    """The matching walk of one taker order, then the taker's margin check.

    Walks the opposite side of ``market``'s book from the best price while it crosses
    ``limit``, filling up to ``size`` (self-trade prevention and maker failures cancel the
    resting order and continue). Returns the unfilled size and the events (fills and
    cancellations, in walk order). Raises ``ExecutionFailure`` (the caller reverts) if a
    post-only order would cross, the taker cannot pay a fill, or the taker's exposure grew
    and its equity is below its initial margin. Used by ``order`` transactions and by the
    end-of-block trigger step (state/exchange/triggers.py).
    """
    st = get_market_state(view, market.symbol)
    if st is None:
        raise ExecutionFailure(ResultCode.UNKNOWN_MARKET, f"no market {market.symbol!r}")
    events: list[Event] = []
    opposite = "sell" if side == "buy" else "buy"
    # the taker's exposure, read just before its first fill: nothing before that changes its
    # position (self-trade cancels do not, a maker's failed fill is reverted)
    before = -1
    filled = False
    oi_long = oi_short = 0
    # stops as soon as the size is used up, without reading the next maker (reads only)
    for maker in best_orders(view, market.symbol, opposite) if size else ():
        if not _crosses(side, limit, maker.price):
            break
        if post_only:
            raise ExecutionFailure(ResultCode.POST_ONLY_WOULD_CROSS,
                               f"post-only order would trade at {maker.price}")
        if maker.owner == owner:  # self-trade prevention: the resting order goes
            remove(view, maker)
            events.append(cancel_event(maker, "self_trade"))
            continue
        qty = min(size, maker.size)
        if before < 0:
            before = _exposure(view, owner, market.symbol)
        mark = view.checkpoint()
        try:
            dl, ds, ev = _fill(view, market, st, owner, maker, qty, side)
        except MakerCannotTrade:
            view.revert(mark)
            remove(view, maker)
            events.append(cancel_event(maker, "maker_undercollateralized"))
            continue
        filled = True
        oi_long += dl
        oi_short += ds
        events.append(ev)
        size -= qty
        if qty == maker.size:
            remove(view, maker)
        else:
            rest(view, _resized(maker, maker.size - qty))
        if size == 0:
            break
    if not filled:  # no position moved: nothing to write or to check
        return size, events
    put_market_state(view, market.symbol, _with_open_interest(
        st, st.open_interest_long + oi_long, st.open_interest_short + oi_short))
    if _exposure(view, owner, market.symbol) > before:
        eq, req = margin_status(view, owner)
        if eq < req:
            raise ExecutionFailure(ResultCode.INSUFFICIENT_MARGIN,
                               f"equity {eq} is below the initial margin {req}")
    return size, events


def place_order(view: Overlay, height: int, tx_index: int, tx: Transaction
                ) -> list[Event]:
    """Validate, match and (for GTC / post-only) rest one order; store a take-profit /
    stop-loss on the trigger index without matching it. The order is ``(sender, nonce)``
    (state/exchange/book.py); ``height`` and ``tx_index`` give only its time priority."""
    p = cast(PlaceOrder, tx.payload)
    market = get_market(view, p.market)
    st = get_market_state(view, p.market)
    if market is None or st is None:
        raise ExecutionFailure(ResultCode.UNKNOWN_MARKET, f"no market {p.market!r}")
    if st.mode in ("paused", "cancel-only"):
        raise ExecutionFailure(ResultCode.MARKET_CLOSED, f"market {p.market} is {st.mode}")
    if st.mode == "post-only" and p.tif != "post_only":
        raise ExecutionFailure(ResultCode.MARKET_CLOSED,
                               f"market {p.market} accepts post-only orders only")
    if st.mode == "post-only" and st.price_band_ppm and \
            abs(p.price - st.oracle_price) * PPM > st.oracle_price * st.price_band_ppm:
        raise ExecutionFailure(ResultCode.INVALID_PRICE,
                               f"price {p.price} is outside the reopening band of "
                               f"{st.price_band_ppm} ppm around the oracle price "
                               f"{st.oracle_price}")
    if p.price % market.tick_size:
        raise ExecutionFailure(ResultCode.INVALID_PRICE,
                           f"price {p.price} is not a multiple of the tick {market.tick_size}")
    if p.size % market.step_size:
        raise ExecutionFailure(ResultCode.INVALID_SIZE,
                           f"size {p.size} is not a multiple of the step {market.step_size}")
    conditional = p.kind in TRIGGER_KINDS
    if conditional and p.trigger_price % market.tick_size:
        raise ExecutionFailure(ResultCode.INVALID_PRICE,
                               f"trigger price {p.trigger_price} is not a multiple of the tick "
                               f"{market.tick_size}")
    owner = tx.sender
    size = p.size
    if p.reduce_only or conditional:
        pos = get_position(view, owner, p.market)
        cur = pos.size if pos else 0
        if cur == 0 or (cur > 0) == (p.side == "buy"):
            raise ExecutionFailure(ResultCode.REDUCE_ONLY_WOULD_INCREASE,
                               "a reduce-only order must be opposite an open position")
        size = min(size, abs(cur))
    oid = tx.nonce
    if conditional:
        order = Order(owner=owner, id=oid, market=p.market, side=p.side, kind=p.kind,
                      tif=p.tif, price=p.price, size=size, orig_size=p.size,
                      reduce_only=True, trigger_price=p.trigger_price,
                      arrival=arrival(height, tx_index))
        rest(view, order)  # on trig/, not book/: it does not match until triggered
        return [Event("order_trigger_placed", (
            Attr("direction", trigger_direction(p.side, p.kind)), Attr("kind", p.kind),
            Attr("market", p.market), Attr("order", str(oid)), Attr("owner", owner.hex()),
            Attr("price", str(p.price)), Attr("side", p.side), Attr("size", str(size)),
            Attr("trigger_price", str(p.trigger_price))))]
    size, events = execute_taker(view, market, owner, p.side, p.price, size,
                                 post_only=p.tif == "post_only")
    if size and p.kind == "limit" and p.tif in ("gtc", "post_only"):
        order = Order(owner=owner, id=oid, market=p.market, side=p.side, kind="limit",
                      tif=p.tif, price=p.price, size=size, orig_size=p.size,
                      reduce_only=p.reduce_only, trigger_price=0,
                      arrival=arrival(height, tx_index))
        _check_resting_margin(view, market, order)
        rest(view, order)
        events.append(Event("order_rested", (_attr("market", p.market),
                                             Attr("order", str(oid)),
                                             _attr("owner", owner.hex()),
                                             _attr("price", str(p.price)),
                                             _attr("side", p.side), _attr("size", str(size)))))
    elif size:
        events.append(Event("order_unfilled", (Attr("order", str(oid)),
                                               _attr("owner", owner.hex()),
                                               Attr("size", str(size)))))
    return events


def _check_resting_margin(view: Overlay, market: Market, o: Order) -> None:
    if o.reduce_only:
        return
    pos = get_position(view, o.owner, o.market)
    cur = pos.size if pos else 0
    after = cur + (o.size if o.side == "buy" else -o.size)
    if abs(after) <= abs(cur):
        return
    eq, req = margin_status(view, o.owner)  # reads only: safe after the early return
    st = get_market_state(view, o.market)
    price = max(o.price, st.oracle_price if st else o.price)
    extra = initial_requirement(after, price, market.initial_margin_ppm) - (
        initial_requirement(cur, st.oracle_price, market.initial_margin_ppm) if (st and cur)
        else 0)
    if eq < req + extra:
        raise ExecutionFailure(ResultCode.INSUFFICIENT_MARGIN,
                           f"equity {eq} cannot back the order (needs {req + extra})")


def cancel_event(o: Order, reason: str) -> Event:
    return Event("order_cancelled", (_attr("market", o.market), Attr("order", str(o.id)),
                                     _attr("owner", o.owner.hex()), _attr("reason", reason),
                                     _attr("size", str(o.size))))


def cancel_order(view: Overlay, tx: Transaction) -> list[Event]:
    p = cast(CancelOrder, tx.payload)
    o = get_order(view, tx.sender, p.order_id)  # only ever one of the sender's own orders
    if o is None or o.market != p.market:
        raise ExecutionFailure(ResultCode.ORDER_NOT_FOUND,
                           f"no open order {p.order_id} of this account in {p.market}")
    st = get_market_state(view, o.market)
    if st is not None and st.mode == "paused":
        raise ExecutionFailure(ResultCode.MARKET_CLOSED, f"market {o.market} is paused")
    remove(view, o)
    return [cancel_event(o, "cancelled")]


def cancel_all(view: Overlay, tx: Transaction) -> list[Event]:
    p = cast(CancelAll, tx.payload)
    events = []
    for o in account_orders(view, tx.sender):
        if p.market and o.market != p.market:
            continue
        remove(view, o)
        events.append(cancel_event(o, "cancelled"))
    return events
