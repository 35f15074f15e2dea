"""Funding arithmetic: rates, the cumulative index, the bound on its moves, and settlement.

Pure integer functions (scales in state/scales.py); nothing here reads or writes state.

The index is cumulative per market, in pico-USDC per whole base unit. Each funding interval
adds ``index_delta(rate, oracle_price)``; a position remembers the index it last settled at
and, when settled, pays ``size * (index_now - index_settled) / 10^14`` micro-USDC (longs pay
when the index rises, shorts receive). Because the index only moves by clamped deltas,
``max_index_move`` bounds any legitimate change between two states: a reset of the index to
zero (the incident in ../shared/EXCHANGE.md) falls outside it and a guard can refuse it.
"""

from __future__ import annotations

from dataclasses import dataclass

from state.scales import FUNDING_DIVISOR, INDEX_DELTA_DIVISOR, RATE_SCALE, div_trunc


def _check_price(oracle_price: int) -> None:
    if oracle_price <= 0:
        raise ValueError(f"oracle price must be positive, got {oracle_price}")


def _check_max_rate(max_rate_ppb: int) -> None:
    if max_rate_ppb < 0:
        raise ValueError(f"max funding rate must be >= 0, got {max_rate_ppb}")


def clamp_rate(rate_ppb: int, max_rate_ppb: int) -> int:
    """``rate_ppb`` limited to ``[-max_rate_ppb, max_rate_ppb]``."""
    _check_max_rate(max_rate_ppb)
    return max(-max_rate_ppb, min(max_rate_ppb, rate_ppb))


def index_delta(rate_ppb: int, oracle_price: int) -> int:
    """How far one interval at ``rate_ppb`` moves the index (pico-USDC per base unit).

    ``rate * price / 10^9`` micro-USDC per base, times 10^6 for the index scale, i.e.
    ``rate * price / 1000``, truncated toward zero so that +r and -r move it by the same
    amount and ``abs(delta)`` is monotone in ``abs(rate)`` (which :func:`max_index_move`
    relies on).
    """
    _check_price(oracle_price)
    return div_trunc(rate_ppb * oracle_price, INDEX_DELTA_DIVISOR)


def max_index_move(max_rate_ppb: int, oracle_price: int, intervals: int) -> int:
    """The most a funding index may move (either way) over ``intervals`` funding intervals.

    A guard checks ``abs(index_after - index_before) <= max_index_move(...)`` between two
    states. ``oracle_price`` must be the highest oracle price used in those intervals (the
    bound is per-interval ``abs(index_delta(max_rate, price))``, monotone in the price). Zero
    intervals allow no move at all.
    """
    _check_max_rate(max_rate_ppb)
    if intervals < 0:
        raise ValueError(f"intervals must be >= 0, got {intervals}")
    return index_delta(max_rate_ppb, oracle_price) * intervals


def index_move_allowed(
    index_before: int, index_after: int, max_rate_ppb: int, oracle_price: int, intervals: int
) -> bool:
    """Whether a move of the index from ``index_before`` to ``index_after`` is within bound."""
    return abs(index_after - index_before) <= max_index_move(max_rate_ppb, oracle_price, intervals)


@dataclass(frozen=True, slots=True)
class Settlement:
    """Result of settling a position's funding.

    ``collateral_delta`` (micro-USDC) is added to the account's collateral: the exact amount
    floored, so a payer pays the ceiling and a receiver gets the floor. ``dust_scaled``
    (units of 10^-14 micro-USDC, ``0 <= dust_scaled < 10^14``) is what the floor left over;
    the caller adds it to a dust counter that is swept into the insurance fund in whole
    micro-USDC. Exactly: ``collateral_delta * 10^14 + dust_scaled == -size * delta_index``.
    """

    collateral_delta: int
    dust_scaled: int


def settle(size: int, index_settled: int, index_now: int) -> Settlement:
    """Funding owed by (negative) or to (positive) a position of ``size`` since it last settled.

    ``u_scaled = -size * (index_now - index_settled)`` is exact in 10^-14 micro-USDC; money is
    never created because every share is floored and the remainders go to the dust counter:
    over positions whose sizes sum to zero, ``sum(collateral_delta) * 10^14 + sum(dust) == 0``.
    """
    u_scaled = -size * (index_now - index_settled)
    collateral_delta = u_scaled // FUNDING_DIVISOR  # floor
    return Settlement(collateral_delta, u_scaled - collateral_delta * FUNDING_DIVISOR)


def premium_ppb(mark_price: int, oracle_price: int) -> int:
    """``(mark - oracle) / oracle`` in ppb, truncated toward zero (symmetric around zero)."""
    _check_price(mark_price)
    _check_price(oracle_price)
    return div_trunc((mark_price - oracle_price) * RATE_SCALE, oracle_price)


def rate_from_premiums(samples_sum: int, n_samples: int, max_rate_ppb: int) -> int:
    """The funding rate for an interval: the average premium (truncated toward zero), clamped.

    No samples (e.g. the chain was halted the whole interval) means rate 0: missing samples
    count as zeros, so the index never jumps to catch up.
    """
    if n_samples < 0:
        raise ValueError(f"sample count must be >= 0, got {n_samples}")
    if n_samples == 0:
        return 0
    return clamp_rate(div_trunc(samples_sum, n_samples), max_rate_ppb)
