"""Margin arithmetic: requirements, equity, liquidation test, liquidation price and outcome.

Pure integer functions (scales in state/scales.py); nothing here reads or writes state.

Every rounding is conservative for the exchange: requirements round up, unrealized PnL rounds
toward negative infinity, and the liquidation price is rounded so that a price it reports as
safe really is safe under :func:`is_liquidatable`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from state.positions import Position, apply_fill, fee_for
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
    would give (state/funding.py ``settle``: floored, so also conservative).
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
