"""End-of-block liquidations, found through an at-risk index instead of a scan of positions.

Runs last in the block (state/block_end.py), after funding and take-profit / stop-loss, so it
sees the block's final oracle prices and funding indices.

**Which accounts are liquidated.** An account is liquidatable when its equity (collateral +
unrealized PnL + unsettled funding, at oracle prices) is below its total maintenance
requirement (state/exchange/margin.py). It is liquidated only if every market it holds a position in
is *eligible*: not ``paused``, not waiting for fresh oracle updates after a reopening
(``liquidation_wait`` is 0), and its oracle price was observed at most the market's
``oracle_max_age_ms`` before the block time (a stale price never liquidates anyone). An
account that is liquidatable but not eligible is checked again every block until it is.

**The at-risk index.** For a position of size ``s`` in a market with maintenance fraction
``mmf``, oracle price ``P`` and funding index ``I``, the account's exact margin surplus
depends on that market only through ``X`` (the same number for every position on one side of
a market)::

    long:  X = P·(10^6 − mmf) − I     surplus term = s·X / 10^14 + constant
    short: X = P·(10^6 + mmf) − I     surplus term = −|s|·X / 10^14 + constant

When an account is indexed, its rounded surplus ``R = equity − maintenance`` less a rounding
allowance of 3 per position is split evenly between its ``k`` positions: budget
``b = (R − 3k) // k`` each. The position's entry records the ``X`` at which its term has
fallen by more than ``b``: ``K = X_now − floor(b·10^14/s)`` for a long (candidate while
``X < K``), ``K = X_now + floor(b·10^14/|s|)`` for a short (candidate while ``X > K``). As long
as no entry of an account is a candidate, its surplus fell by at most ``R − 3k`` in total and
the rounded check cannot find it liquidatable, so walking each side of each market from its
riskiest entry and stopping at the first non-candidate finds every account that can be
liquidatable: the cost follows the accounts near their threshold, never the open positions.

Keys (state keyspace, so they are in the state root, undo records and snapshots)::

    liq/<symbol>/l<K'><owner>   K' = 2^128−1 − (K + 2^127), 16 bytes big-endian: riskiest first
    liq/<symbol>/s<K'><owner>   K' = K + 2^127                                  (both clamped)
    lqa/<owner>                 -> RiskEntries: the account's liq/ keys, to replace them

An account is (re)indexed at the end of every block in which one of its positions was
written (fills, liquidations: found from the block's writes) or a transaction lowered its
collateral while it held positions (``TxContext.margin_touched``), and whenever the walk
finds it as a candidate but it is not liquidated. Deposits and incoming transfers only raise
a surplus, so they leave the entry conservative.

**What a liquidation does** (all of the account's positions, in symbol order, at the oracle
price): settle the position's funding; close it against the insurance fund (the account at
``INSURANCE_ADDRESS``), which takes the opposite fill at the same price, so open interest
stays balanced; then, over the whole account, the penalty ``ceil(notional·penalty_ppm)`` per
position goes to the insurance fund, capped at the collateral left. If the collateral left is
negative the account is bankrupt: it ends at 0, the insurance fund pays the shortfall, and
whatever the fund cannot pay is added to ``pool/bad_debt``. The account's open orders are
cancelled. Accounts are processed in address order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated

from chain.block import Attr, Event
from chain.codec import Length, Struct
from state.accounts import get_account, put_account
from state.context import TxContext
from state.exchange.book import account_orders, remove
from state.exchange.collateral import pool_add
from state.exchange.margin import AccountMargin, Held, account_margin, margin_of
from state.exchange.markets import get_market_state, put_market_state
from state.exchange.matching import cancel_event
from state.exchange.positions import (
    apply_fill,
    fee_for,
    get_position,
    settle_funding,
    write_position,
)
from state.overlay import Overlay
from state.records import (
    BAD_DEBT,
    FUNDING_DUST,
    INSURANCE_ADDRESS,
    MARKET,
    POSITION,
    Account,
    Market,
    MarketState,
    Position,
)
from state.scales import FUNDING_DIVISOR, PPM

RISK = b"liq/"


RISK_OF = b"lqa/"


ROUNDING_ALLOWANCE = 3
"""Per position: floored PnL, floored funding and ceiled requirement each lose under 1."""


_OFFSET = 2**127


_MAX = 2**128 - 1


_OWNER_LEN = 32


_K_LEN = 16


RiskKey = Annotated[bytes, Length(1, 128)]


@dataclass(frozen=True, slots=True)
class RiskEntries(Struct):
    """The liq/ keys of one account (value of ``lqa/<owner>``)."""

    keys: tuple[RiskKey, ...]


def risk_prefix(symbol: str, long: bool) -> bytes:
    return RISK + symbol.encode() + (b"/l" if long else b"/s")


def _x(st: MarketState, mmf_ppm: int, long: bool) -> int:
    return st.oracle_price * (PPM - mmf_ppm if long else PPM + mmf_ppm) - st.funding_index


def _encode_k(k: int, long: bool) -> bytes:
    v = min(max(k + _OFFSET, 0), _MAX)
    return (_MAX - v if long else v).to_bytes(_K_LEN, "big")


def _decode_k(key: bytes, long: bool) -> int:
    v = int.from_bytes(key[-_OWNER_LEN - _K_LEN:-_OWNER_LEN], "big")
    return (_MAX - v if long else v) - _OFFSET


def thresholds(am: AccountMargin) -> list[tuple[Held, int]]:
    """Each held position with its threshold ``K`` (see the module docstring)."""
    k = len(am.held)
    if k == 0:
        return []
    budget = (am.equity - am.maintenance - ROUNDING_ALLOWANCE * k) // k
    out = []
    for h in am.held:
        size = h.position.size
        long = size > 0
        x = _x(h.state, h.market.maintenance_margin_ppm, long)
        room = (budget * FUNDING_DIVISOR) // abs(size)
        out.append((h, x - room if long else x + room))
    return out


def reindex(view: Overlay, owner: bytes, am: AccountMargin) -> None:
    """Replace ``owner``'s entries in the at-risk index by ones computed from ``am``."""
    rkey = RISK_OF + owner
    old = view.get_obj(rkey, RiskEntries)
    new = []
    for h, k in thresholds(am):
        long = h.position.size > 0
        new.append(risk_prefix(h.market.symbol, long) + _encode_k(k, long) + owner)
    new_keys = tuple(new)
    if old is not None and old.keys == new_keys:
        return
    for key in old.keys if old is not None else ():
        view.delete(key)
    for key in new_keys:
        view.put(key, b"")
    if new_keys:
        view.put_obj(rkey, RiskEntries(new_keys))
    elif old is not None:
        view.delete(rkey)


def _candidates(view: Overlay, market: Market, st: MarketState) -> list[bytes]:
    """Owners whose entry on either side of ``market`` is a candidate at its current X."""
    out = []
    for long in (True, False):
        prefix = risk_prefix(market.symbol, long)
        x = _x(st, market.maintenance_margin_ppm, long)
        after = b""
        while True:
            key = view.first_key_after(prefix, after)
            if key is None or len(key) != len(prefix) + _K_LEN + _OWNER_LEN:
                break
            k = _decode_k(key, long)
            if not (x < k if long else x > k):
                break
            out.append(key[-_OWNER_LEN:])
            after = key
    return out


def _eligible(h: Held, ctx: TxContext) -> bool:
    return (h.state.mode != "paused" and h.state.liquidation_wait == 0
            and ctx.time - h.state.oracle_time <= h.market.oracle_max_age_ms)


def _liquidate(view: Overlay, owner: bytes, am: AccountMargin) -> list[Event]:
    """Close every position of ``owner`` against the insurance fund (module docstring)."""
    events: list[Event] = []
    figures = (Attr("collateral", str(am.collateral)), Attr("equity", str(am.equity)),
               Attr("maintenance_margin", str(am.maintenance)))
    bal = am.collateral
    fund = get_account(view, INSURANCE_ADDRESS)
    fund_bal = fund.balance
    dust = 0
    penalty_due = 0
    for h in am.held:
        symbol, price = h.market.symbol, h.state.oracle_price
        st = get_market_state(view, symbol)
        assert st is not None
        index = st.funding_index
        pos, paid = settle_funding(h.position, index)
        bal += paid.collateral_delta
        dust += paid.dust_scaled
        close = apply_fill(pos, -pos.size, price)
        bal += close.realized_pnl_delta
        penalty_due += fee_for(close.notional, h.market.liquidation_penalty_ppm)
        fold = get_position(view, INSURANCE_ADDRESS, symbol)
        fpos, fpaid = settle_funding(Position(0, 0, index, 0) if fold is None else fold, index)
        fund_bal += fpaid.collateral_delta
        dust += fpaid.dust_scaled
        take = apply_fill(fpos, pos.size, price)
        fund_bal += take.realized_pnl_delta
        write_position(view, owner, symbol, close.new_position)
        write_position(view, INSURANCE_ADDRESS, symbol, take.new_position)
        long_d = short_d = 0
        for old_size, new_size in ((pos.size, 0), (fpos.size, take.new_position.size)):
            long_d += max(new_size, 0) - max(old_size, 0)
            short_d += max(-new_size, 0) - max(-old_size, 0)
        if long_d or short_d:
            put_market_state(view, symbol, replace(
                st, open_interest_long=st.open_interest_long + long_d,
                open_interest_short=st.open_interest_short + short_d))
        events.append(Event("liquidation", (
            Attr("account", owner.hex()), *figures, Attr("market", symbol),
            Attr("price", str(price)), Attr("realized_pnl", str(close.realized_pnl_delta)),
            Attr("size", str(h.position.size)))))
    if bal >= 0:
        penalty = min(penalty_due, bal)
        bal -= penalty
        fund_bal += penalty
        shortfall = covered = 0
    else:
        penalty, shortfall, bal = 0, -bal, 0
        covered = min(shortfall, max(fund_bal, 0))
        fund_bal -= shortfall
    # What the fund cannot absorb: the part of the shortfall it could not pay, plus any loss
    # of its own positions (realized on this close, or funding) beyond its balance.
    uncovered = -fund_bal if fund_bal < 0 else 0
    fund_bal += uncovered
    put_account(view, owner, Account(bal, get_account(view, owner).nonce))
    put_account(view, INSURANCE_ADDRESS, Account(fund_bal, fund.nonce))
    pool_add(view, FUNDING_DUST, dust)  # after the fund's write: a sweep credits the fund
    pool_add(view, BAD_DEBT, uncovered)
    for o in account_orders(view, owner):
        remove(view, o)
        events.append(cancel_event(o, "liquidated"))
    events.append(Event("liquidation_settled", (
        Attr("account", owner.hex()), Attr("collateral_after", str(bal)),
        Attr("insurance_covered", str(covered)), Attr("penalty", str(penalty)),
        Attr("shortfall", str(shortfall)), Attr("uncovered", str(uncovered)))))
    return events


def _touched(view: Overlay, ctx: TxContext) -> set[bytes]:
    """Accounts whose positions this block wrote, or whose collateral a transaction lowered
    while they held positions."""
    owners = set(ctx.margin_touched)
    for key in view.written_keys(POSITION):
        owners.add(key[len(POSITION):len(POSITION) + _OWNER_LEN])
    return owners


def process_liquidations(view: Overlay, ctx: TxContext) -> list[Event]:
    owners = _touched(view, ctx)
    for mkey in list(view.iter_ordered(MARKET)):
        market = view.get_obj(mkey, Market)
        st = get_market_state(view, market.symbol) if market else None
        if market is not None and st is not None:
            owners.update(_candidates(view, market, st))
    owners.discard(INSURANCE_ADDRESS)
    events: list[Event] = []
    for owner in sorted(owners):
        am = account_margin(view, owner)
        if am.liquidatable and all(_eligible(h, ctx) for h in am.held):
            events.extend(_liquidate(view, owner, am))
            am = margin_of(0, ())  # flat now: its entries go
        reindex(view, owner, am)
    return events
