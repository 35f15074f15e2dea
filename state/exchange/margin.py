"""Margin: the integer margin arithmetic (requirements, PnL, liquidation price and outcome)
and an account's cross-margin figures at oracle prices (docs/PROTOCOL.md §5).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from chain.codes import ResultCode
from state.accounts import get_account
from state.exchange.funding import settle
from state.exchange.markets import get_market, get_market_state
from state.exchange.positions import account_positions, apply_fill, fee_for
from state.execution_failure import ExecutionFailure
from state.overlay import Overlay
from state.records import Market, MarketState, Position
from state.scales import PPM, SIZE_SCALE, div_ceil, div_floor


def _check_fraction(ppm: int, name: str) -> None:
    if not 0 <= ppm <= PPM:
        raise ValueError(f"{name} must be within 0..{PPM} ppm, got {ppm}")


def _check_price(price: int) -> None:
    if price <= 0:
        raise ValueError(f"price must be positive, got {price}")


def notional(size: int, price: int) -> int:
    """``abs(size) * price / 10^8`` micro-USDC, floored (the value a fill of ``size`` trades)."""
    _check_price(price)
    return abs(size) * price // SIZE_SCALE


def _requirement(size: int, price: int, fraction_ppm: int) -> int:
    # One division over the exact product, rounded UP: never below the exact requirement.
    _check_price(price)
    return div_ceil(abs(size) * price * fraction_ppm, SIZE_SCALE * PPM)


def initial_requirement(size: int, price: int, imf_ppm: int) -> int:
    """Equity needed to open ``size`` at ``price``: ``ceil(abs(size)*price*imf / 10^14)``."""
    _check_fraction(imf_ppm, "initial margin fraction")
    return _requirement(size, price, imf_ppm)


def maintenance_requirement(size: int, price: int, mmf_ppm: int) -> int:
    """Equity needed to keep ``size`` at ``price``: ``ceil(abs(size)*price*mmf / 10^14)``."""
    _check_fraction(mmf_ppm, "maintenance margin fraction")
    return _requirement(size, price, mmf_ppm)


def unrealized_pnl(pos: Position, price: int) -> int:
    """``floor(size * price / 10^8) - cost``: rounded toward negative infinity.

    For a long this equals what closing at ``price`` realizes; for a short it is at most 1
    micro-USDC below it (closing pays the floored notional, this counts the ceiling).
    """
    _check_price(price)
    return div_floor(pos.size * price, SIZE_SCALE) - pos.cost


def equity(
    collateral: int, positions_with_prices: Iterable[tuple[Position, int]], unsettled_funding: int
) -> int:
    """Collateral + unrealized PnL of every position at its price + unsettled funding.

    ``unsettled_funding`` is the sum of the ``collateral_delta`` that settling each position
    would give (state/exchange/funding.py ``settle``: floored, so also conservative).
    """
    return collateral + sum(unrealized_pnl(p, px) for p, px in positions_with_prices) + (
        unsettled_funding
    )


def is_liquidatable(equity: int, maintenance_total: int) -> bool:
    """An account is liquidatable when its equity is below its total maintenance requirement.

    (A flat account has requirement 0, so it is liquidatable only with negative equity, which
    the caller treats as nothing to close.)
    """
    return equity < maintenance_total


def liquidation_price(
    collateral: int,
    pos: Position,
    mmf_ppm: int,
    others: Iterable[tuple[Position, int, int]] = (),
    unsettled_funding: int = 0,
) -> int | None:
    """The oracle price of ``pos``'s market at which the account becomes liquidatable.

    For a long, every price ABOVE the result is safe; for a short, every price BELOW it is
    safe (safe: ``not is_liquidatable(equity, maintenance)`` with the rounded functions of this
    module). ``others`` are the account's positions in other markets as ``(position, price,
    mmf_ppm)``, held at those prices; with none, this is the single-market liquidation price.
    None when no positive price makes the account liquidatable (e.g. an unlevered long) or the
    position is flat.

    Derivation: with ``a = collateral - cost + others' equity - others' maintenance +
    unsettled_funding``, the exact (unrounded) margin surplus is ``a + b_long * P`` for a long,
    ``b_long = s*(10^6 - mmf)/10^14``, and ``a - b_short * P`` for a short,
    ``b_short = |s|*(10^6 + mmf)/10^14``. The rounded surplus (floored PnL minus ceiled
    requirements) is an integer greater than the exact surplus minus 2, so it is >= 0
    (safe) wherever the exact surplus is >= 1, and < 0 (liquidatable) wherever the exact
    surplus is < 0. The result is the boundary of the "exact surplus >= 1" region: at most
    ``1 / b`` price units away from the true boundary (under 3 micro-USDC for 0.5 BTC).
    """
    if not 0 <= mmf_ppm < PPM:
        raise ValueError(f"maintenance margin fraction must be within 0..{PPM - 1} ppm")
    if pos.size == 0:
        return None
    a = collateral - pos.cost + unsettled_funding
    for p, px, m in others:
        a += unrealized_pnl(p, px) - maintenance_requirement(p.size, px, m)
    s = abs(pos.size)
    scale = SIZE_SCALE * PPM
    if pos.size > 0:
        # Safe for every P with a + b*P >= 1, i.e. P >= (1 - a)/b: largest unsafe-or-unknown P.
        last = div_ceil((1 - a) * scale, s * (PPM - mmf_ppm)) - 1
        return last if last >= 1 else None
    # Short: safe for every P <= (a - 1)/b; the first price not known safe (at least 1).
    first = div_floor((a - 1) * scale, s * (PPM + mmf_ppm)) + 1
    return max(first, 1)


@dataclass(frozen=True, slots=True)
class LiquidationOutcome:
    """Closing a whole position at the oracle price.

    Exact identity (the conservation the caller relies on)::

        collateral_before + realized_pnl == collateral_after + penalty - shortfall

    with ``penalty >= 0``, ``shortfall >= 0``, ``collateral_after >= 0`` and at most one of
    ``penalty``/``shortfall`` positive. The penalty goes to the insurance fund, the shortfall
    is paid by it. The counterparty of the close (liquidator or insurance fund) takes the
    opposite fill at ``close_price`` through ``apply_fill``, so costs stay conserved.
    """

    close_price: int
    realized_pnl: int
    penalty: int
    collateral_after: int
    shortfall: int
    closed_notional: int
    new_position: Position


def liquidation_outcome(
    collateral: int, pos: Position, oracle_price: int, penalty_ppm: int
) -> LiquidationOutcome:
    """Close ``pos`` entirely at ``oracle_price`` and charge the liquidation penalty.

    Settle funding first. ``realized`` is what :func:`apply_fill` realizes for the close (same
    rounding as any trade). The penalty is ``penalty_ppm`` of the closed notional, rounded up,
    capped at the collateral left after the PnL (never below 0); if that remainder is negative
    the account is bankrupt: collateral ends at 0, no penalty, and the deficit is the shortfall.
    """
    _check_fraction(penalty_ppm, "liquidation penalty")
    if pos.size == 0:
        raise ValueError("cannot liquidate a flat position")
    fill = apply_fill(pos, -pos.size, oracle_price)
    realized = fill.realized_pnl_delta
    remaining = collateral + realized
    if remaining >= 0:
        penalty = min(fee_for(fill.notional, penalty_ppm), remaining)
        after, shortfall = remaining - penalty, 0
    else:
        penalty, after, shortfall = 0, 0, -remaining
    return LiquidationOutcome(
        oracle_price, realized, penalty, after, shortfall, fill.notional, fill.new_position
    )


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
    the account (PnL and funding floored, requirements ceiled: state/exchange/margin.py).
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


def check_initial_margin(view: Overlay, owner: bytes) -> bool:
    """Fail the transaction if ``owner`` holds positions its equity no longer backs at the
    initial margin (used when collateral leaves an account: withdraw, transfer). Returns
    whether the account holds positions (its liquidation index entry must be refreshed)."""
    am = account_margin(view, owner)
    if am.equity < am.initial:
        raise ExecutionFailure(ResultCode.INSUFFICIENT_MARGIN,
                               f"equity {am.equity} is below the initial margin {am.initial}")
    return bool(am.held)
