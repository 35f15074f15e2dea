"""The exchange's transactions: place an order (matching it against the book, or storing a
take-profit / stop-loss on the trigger index), cancel one, cancel all of an account's orders,
withdraw collateral.

The matching walk is ``execute_taker``: ``place_order`` and the end-of-block trigger step
(state/triggers.py) run the same code.

Collateral is the account's settlement balance (``Account.balance``). Every fill settles
both positions' funding first, then applies the fill (state/positions.py) at the maker's
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

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import cast

from chain.block import Attr, Event
from chain.codec import U64, Struct
from chain.codes import ResultCode
from chain.tx import CancelAll, CancelOrder, PlaceOrder, Transaction, Withdraw
from state.accounts import Account, get_account, put_account
from state.failure import ExecutionFailure
from state.funding import Settlement, settle
from state.margin import (
    initial_requirement,
    is_liquidatable,
    maintenance_requirement,
    unrealized_pnl,
)
from state.markets import Market, MarketState, get_market, get_market_state, put_market_state
from state.orderbook import (
    TRIGGER_KINDS,
    Order,
    account_orders,
    arrival,
    best_orders,
    get_order,
    remove,
    rest,
    trigger_direction,
)
from state.positions import NO_SETTLEMENT, Position, apply_fill, settle_funding
from state.scales import FUNDING_DIVISOR, PPM
from state.store import Overlay

POSITION = b"pos/"
POOL = b"pool/"
FEE_POOL = POOL + b"fees"
FUNDING_DUST = POOL + b"funding_dust"
"""Funding rounding remainders in 10^-14 micro-USDC; always below 10^14 (swept on)."""
BAD_DEBT = POOL + b"bad_debt"
"""Value the exchange owes and does not hold (micro-USDC): shortfalls of bankrupt accounts
the insurance fund could not pay, and losses of the fund's own positions beyond its balance.
Only ever grows; counted negatively by the guard."""
INSURANCE_ADDRESS = bytes(32)
"""The insurance fund is the account at this address (32 zero bytes). No private key
exists for it (it is not a valid ed25519 key), so it never signs anything: it receives
liquidation penalties, swept funding dust and transfers (donations), pays bankrupt accounts'
shortfalls, and is the counterparty that takes over liquidated positions."""
U64_MAX = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Pool(Struct):
    """A balance held by the exchange itself (fees, funding dust)."""

    amount: U64


def position_key(owner: bytes, market: str) -> bytes:
    return POSITION + owner + b"/" + market.encode()


def get_position(view: Overlay, owner: bytes, market: str) -> Position | None:
    return view.get_obj(position_key(owner, market), Position)


def account_positions(view: Overlay, owner: bytes) -> Iterator[tuple[str, Position]]:
    prefix = POSITION + owner + b"/"
    for k in view.live_keys(prefix):
        pos = view.get_obj(k, Position)
        if pos is not None:
            yield k[len(prefix):].decode(), pos


def pool_add(view: Overlay, key: bytes, amount: int) -> None:
    if amount == 0:
        return
    cur = view.get_obj(key, Pool)
    new = (cur.amount if cur else 0) + amount
    if key == FUNDING_DUST and new >= FUNDING_DIVISOR:
        # Whole micro-USDC of dust move to the insurance fund; the remainder stays < 10^14.
        _credit(view, INSURANCE_ADDRESS, new // FUNDING_DIVISOR)
        new %= FUNDING_DIVISOR
    if not 0 <= new <= U64_MAX:
        raise ExecutionFailure(ResultCode.OVERFLOW, "pool balance out of range")
    view.put_obj(key, Pool(new))


def _credit(view: Overlay, owner: bytes, delta: int) -> None:
    acct = get_account(view, owner)
    new = acct.balance + delta
    if new < 0:
        raise ExecutionFailure(ResultCode.INSUFFICIENT_MARGIN,
                           f"collateral {acct.balance} cannot cover {-delta}")
    if new > U64_MAX:
        raise ExecutionFailure(ResultCode.OVERFLOW, "balance would exceed 2**64-1")
    put_account(view, owner, Account(new, acct.nonce))


def _settle(view: Overlay, owner: bytes, market: str, st: MarketState) -> Position:
    """The owner's position in ``market`` with funding settled up to the current index."""
    pos = get_position(view, owner, market)
    if pos is None:
        return Position(0, 0, st.funding_index, 0)
    pos, paid = settle_funding(pos, st.funding_index)
    if paid is not NO_SETTLEMENT:
        _apply_settlement(view, owner, paid)
    return pos


def _apply_settlement(view: Overlay, owner: bytes, s: Settlement) -> None:
    if s.collateral_delta:
        _credit(view, owner, s.collateral_delta)
    if s.dust_scaled:
        pool_add(view, FUNDING_DUST, s.dust_scaled)


def write_position(view: Overlay, owner: bytes, market: str, new: Position) -> None:
    """Store a position; a flat one with no realized PnL to keep is deleted."""
    if new.size == 0 and new.realized_pnl == 0:
        view.delete(position_key(owner, market))
    else:
        view.put_obj(position_key(owner, market), new)


def store_position(view: Overlay, owner: bytes, market: str, old: Position,
                   new: Position) -> tuple[int, int]:
    """Store a position; returns the change it makes to the market's (long, short) open
    interest."""
    write_position(view, owner, market, new)
    return (max(new.size, 0) - max(old.size, 0), max(-new.size, 0) - max(-old.size, 0))


@dataclass(frozen=True, slots=True)
class Held:
    """One open position of an account, with its market's rules and current state."""

    market: Market
    state: MarketState
    position: Position


@dataclass(frozen=True, slots=True)
class AccountMargin:
    """An account's cross-margin figures at oracle prices (docs/PROTOCOL.md §5).

    ``equity = collateral + unrealized PnL + unsettled funding``; each term rounded against
    the account (PnL and funding floored, requirements ceiled: state/margin.py).
    """

    collateral: int
    held: tuple[Held, ...]
    """Non-flat positions in markets that exist, in symbol order."""
    unrealized_pnl: int
    unsettled_funding: int
    initial: int
    maintenance: int

    @property
    def equity(self) -> int:
        return self.collateral + self.unrealized_pnl + self.unsettled_funding

    @property
    def liquidatable(self) -> bool:
        return bool(self.held) and is_liquidatable(self.equity, self.maintenance)


def margin_of(collateral: int, held: tuple[Held, ...]) -> AccountMargin:
    """The margin figures of ``collateral`` and the ``held`` positions (pure arithmetic)."""
    upnl = funding = initial = maint = 0
    for h in held:
        pos, px = h.position, h.state.oracle_price
        upnl += unrealized_pnl(pos, px)
        funding += settle(pos.size, pos.funding_index, h.state.funding_index).collateral_delta
        initial += initial_requirement(pos.size, px, h.market.initial_margin_ppm)
        maint += maintenance_requirement(pos.size, px, h.market.maintenance_margin_ppm)
    return AccountMargin(collateral, held, upnl, funding, initial, maint)


def account_margin(view: Overlay, owner: bytes) -> AccountMargin:
    """Read an account's collateral and positions and compute its margin figures."""
    held: list[Held] = []
    for symbol, pos in account_positions(view, owner):
        if pos.size == 0:
            continue
        m = get_market(view, symbol)
        st = get_market_state(view, symbol)
        if m is not None and st is not None:
            held.append(Held(m, st, pos))
    return margin_of(get_account(view, owner).balance, tuple(held))


def margin_status(view: Overlay, owner: bytes) -> tuple[int, int]:
    """(equity, initial requirement) of an account at oracle prices: the same figures as
    :func:`account_margin`, without the maintenance requirement or the per-position
    records (this runs for every fill and every resting order that grows a position)."""
    equity = get_account(view, owner).balance
    initial = 0
    for symbol, pos in account_positions(view, owner):
        if pos.size == 0:
            continue
        m = get_market(view, symbol)
        st = get_market_state(view, symbol)
        if m is not None and st is not None:
            px = st.oracle_price
            equity += unrealized_pnl(pos, px) + settle(
                pos.size, pos.funding_index, st.funding_index).collateral_delta
            initial += initial_requirement(pos.size, px, m.initial_margin_ppm)
    return equity, initial


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
        old = _settle(view, owner, symbol, st)
        out = apply_fill(old, delta, price, fee_ppm)
        try:
            _credit(view, owner, out.collateral_delta)
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
    raise TypeError("state/exchange.py: update _resized / _with_open_interest to the fields")


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
    end-of-block trigger step (state/triggers.py).
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
    (state/orderbook.py); ``height`` and ``tx_index`` give only its time priority."""
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



def check_initial_margin(view: Overlay, owner: bytes) -> bool:
    """Fail the transaction if ``owner`` holds positions its equity no longer backs at the
    initial margin (used when collateral leaves an account: withdraw, transfer). Returns
    whether the account holds positions (its liquidation index entry must be refreshed)."""
    am = account_margin(view, owner)
    if am.equity < am.initial:
        raise ExecutionFailure(ResultCode.INSUFFICIENT_MARGIN,
                               f"equity {am.equity} is below the initial margin {am.initial}")
    return bool(am.held)


def withdraw(view: Overlay, tx: Transaction, margin_touched: set[bytes]) -> list[Event]:
    """Debit the sender's collateral; refused if the balance is short, or if the account
    holds positions and its equity after the debit is below their initial margin. A sender
    with positions is added to ``margin_touched`` (see state/liquidation.py)."""
    p = cast(Withdraw, tx.payload)
    acct = get_account(view, tx.sender)
    if acct.balance < p.amount:
        raise ExecutionFailure(ResultCode.INSUFFICIENT_FUNDS,
                               f"balance {acct.balance} is less than {p.amount}")
    put_account(view, tx.sender, Account(acct.balance - p.amount, acct.nonce))
    if check_initial_margin(view, tx.sender):
        margin_touched.add(tx.sender)
    return [Event("withdraw", (Attr("amount", str(p.amount)),
                               Attr("sender", tx.sender.hex())))]
