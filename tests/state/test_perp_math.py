"""Exchange arithmetic (state/scales.py; funding.py, positions.py, margin.py in state/exchange/):
worked numbers computed by hand in the comments, then property tests against exact Fraction
references."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state.exchange.funding import (
    Settlement,
    clamp_rate,
    index_delta,
    index_move_allowed,
    max_index_move,
    premium_ppb,
    rate_from_premiums,
    settle,
)
from state.exchange.margin import (
    equity,
    initial_requirement,
    is_liquidatable,
    liquidation_outcome,
    liquidation_price,
    maintenance_requirement,
    notional,
    unrealized_pnl,
)
from state.exchange.positions import apply_fill, settle_funding, trade_notional
from state.records import FLAT, Position
from state.scales import (
    FUNDING_DIVISOR,
    PPM,
    QUOTE_SCALE,
    SIZE_SCALE,
    div_ceil,
    div_floor,
    div_trunc,
)

USD = QUOTE_SCALE  # 1 USDC in micro-USDC
BTC = SIZE_SCALE  # 1 BTC in size units
D = FUNDING_DIVISOR  # 10**14

P60K = 60_000 * USD  # BTC at 60,000 USD: 60_000_000_000 micro-USDC per BTC
IMF = 50_000  # 5%
MMF = 30_000  # 3%
PENALTY = 15_000  # 1.5%


def surplus(collateral: int, pos: Position, price: int, mmf: int = MMF) -> int:
    """Rounded equity minus rounded maintenance requirement, single-market account."""
    return equity(collateral, [(pos, price)], 0) - maintenance_requirement(pos.size, price, mmf)


# ---------------------------------------------------------------------------------------------
# Scales and rounding helpers


def test_division_helpers() -> None:
    # -7 / 2 = -3.5: floor -4, ceil -3, trunc -3 (Python's // floors to -4).
    assert (div_floor(-7, 2), div_ceil(-7, 2), div_trunc(-7, 2)) == (-4, -3, -3)
    assert (div_floor(7, 2), div_ceil(7, 2), div_trunc(7, 2)) == (3, 4, 3)
    assert div_trunc(7, -2) == -3 and div_trunc(-7, -2) == 3 and div_trunc(-6, 2) == -3
    with pytest.raises(ZeroDivisionError):
        div_trunc(1, 0)


# ---------------------------------------------------------------------------------------------
# Worked example: 0.5 BTC long at 60,000 with 3,000 USDC, IMF 5%, MMF 3%, penalty 1.5%

C0 = 3_000 * USD  # 3_000_000_000
HALF = BTC // 2  # 0.5 BTC = 50_000_000


def long_half() -> Position:
    return apply_fill(FLAT, HALF, P60K).new_position


def test_open_long_cost_and_margins() -> None:
    # Cost = 0.5 * 60,000 = 30,000 USDC = 50_000_000 * 60_000_000_000 / 10^8 = 30_000_000_000.
    pos = long_half()
    assert pos == Position(size=50_000_000, cost=30_000_000_000, funding_index=0, realized_pnl=0)
    assert pos.entry_price() == P60K
    assert notional(pos.size, P60K) == 30_000 * USD
    # Initial: 5% of 30,000 = 1,500 USDC. Maintenance: 3% of 30,000 = 900 USDC.
    assert initial_requirement(pos.size, P60K, IMF) == 1_500 * USD
    assert maintenance_requirement(pos.size, P60K, MMF) == 900 * USD
    # Equity at 60,000 = 3,000 USDC: opening was allowed (3,000 >= 1,500).
    assert equity(C0, [(pos, P60K)], 0) == C0


def test_move_to_56k() -> None:
    # At 56,000: value 0.5 * 56,000 = 28,000; uPnL = 28,000 - 30,000 = -2,000 USDC.
    # Equity = 3,000 - 2,000 = 1,000 USDC; maintenance = 3% * 28,000 = 840 USDC -> not liquidatable.
    pos, p56 = long_half(), 56_000 * USD
    assert unrealized_pnl(pos, p56) == -2_000 * USD
    assert equity(C0, [(pos, p56)], 0) == 1_000 * USD
    assert maintenance_requirement(pos.size, p56, MMF) == 840 * USD
    assert not is_liquidatable(1_000 * USD, 840 * USD)
    # Unsettled funding counts too: owing 161 USDC more would make equity 839 < 840.
    assert is_liquidatable(equity(C0, [(pos, p56)], -161 * USD), 840 * USD)


def test_liquidation_price_long() -> None:
    # Exact: 3,000 - 30,000 + 0.5 P = 0.03 * 0.5 P  ->  0.485 P = 27,000  ->  P = 55,670.1030927..
    # In micro-USDC: P* = 27_000_000_000 * 200 / 97 = 55_670_103_092.78.
    # Returned: ceil((1 + 27e9) * 10^14 / (5e7 * 970_000)) - 1
    #         = ceil(27_000_000_001 * 200 / 97) - 1 = ceil(55_670_103_094.85) - 1 = 55_670_103_094,
    # i.e. every price above 55,670.103094 USD is certainly safe.
    pos = long_half()
    lp = liquidation_price(C0, pos, MMF)
    assert lp == 55_670_103_094
    for p in range(lp + 1, lp + 50):
        assert surplus(C0, pos, p) >= 0
    # Below the exact boundary (surplus < 0 exactly) it is liquidatable; the reported price is
    # within 1/b = 1/0.485 ~ 2 micro-USDC of the exact one.
    assert surplus(C0, pos, 55_670_103_092) < 0
    assert is_liquidatable(equity(C0, [(pos, 55_600 * USD)], 0),
                           maintenance_requirement(pos.size, 55_600 * USD, MMF))


def test_liquidation_price_short() -> None:
    # 0.5 BTC short from 60,000 (cost -30,000): 3,000 + 30,000 - 0.5 P = 0.015 P
    # -> 0.515 P = 33,000 -> P = 64,077.6699029.. USD. Every price below the result is safe.
    pos = apply_fill(FLAT, -HALF, P60K).new_position
    assert pos.cost == -30_000 * USD
    lp = liquidation_price(C0, pos, MMF)
    assert lp == 64_077_669_901
    for p in range(lp - 50, lp):
        assert surplus(C0, pos, p) >= 0
    assert surplus(C0, pos, 64_077_669_903) < 0


def test_liquidation_price_none_and_multi_market() -> None:
    # Unlevered long: 30,001 USDC collateral for a 30,000 cost: equity 1 USDC + 0.5 P stays
    # above the 0.015 P requirement at every price -> None. Flat -> None.
    assert liquidation_price(30_001 * USD, long_half(), MMF) is None
    # With exactly 30,000 the rounding matters at absurd prices: at P = 1 micro-USDC the value
    # floors to 0 while the requirement ceils to 1 micro, so P <= 2 is reported as not safe.
    assert liquidation_price(30_000 * USD, long_half(), MMF) == 2
    assert surplus(30_000 * USD, long_half(), 1) == -1
    assert liquidation_price(C0, FLAT, MMF) is None
    # Another market: 10 ETH long bought at 3,000, now at 3,100 (uPnL +1,000 USDC), MMF 1,613
    # ppm: requirement 0.001613 * 31,000 = 50.003 USDC. Held fixed, they move the BTC long's
    # liquidation price down: 0.485 P = 27,000 - 1,000 + 50.003 -> P = 53,711.34.. USD.
    eth = apply_fill(FLAT, 10 * BTC, 3_000 * USD).new_position  # 10 ETH at 3,000
    lp = liquidation_price(C0, long_half(), MMF, others=[(eth, 3_100 * USD, 1_613)])
    assert lp == div_ceil((1 + 27_000 * USD - 1_000 * USD + 50_003_000) * 200, 97) - 1
    assert lp == 53_711_346_393
    assert 53_711 * USD < lp < 53_712 * USD


def test_liquidation_outcome_with_penalty() -> None:
    # Oracle at 55,600 (below 55,670.10): equity 3,000 - 2,200 = 800 < 834 (= 3% of 27,800).
    # Close 0.5 BTC at 55,600: notional 27,800, realized 27,800 - 30,000 = -2,200 USDC.
    # Penalty 1.5% * 27,800 = 417 USDC (<= the 800 left). Collateral after = 800 - 417 = 383.
    # Identity: 3,000 + (-2,200) = 800 == 383 + 417 - 0.
    out = liquidation_outcome(C0, long_half(), 55_600 * USD, PENALTY)
    assert (out.close_price, out.realized_pnl) == (55_600 * USD, -2_200 * USD)
    assert out.penalty == 417 * USD
    assert (out.collateral_after, out.shortfall) == (383 * USD, 0)
    assert out.closed_notional == 27_800 * USD
    assert out.new_position.size == 0 and out.new_position.cost == 0
    assert C0 + out.realized_pnl == out.collateral_after + out.penalty - out.shortfall


def test_liquidation_outcome_penalty_capped() -> None:
    # At 54,100 (bankruptcy price is 54,000: 3,000 - 30,000 + 0.5 P = 0): realized
    # 27,050 - 30,000 = -2,950, 50 USDC left; penalty 1.5% * 27,050 = 405.75 capped at 50.
    out = liquidation_outcome(C0, long_half(), 54_100 * USD, PENALTY)
    assert (out.realized_pnl, out.penalty, out.collateral_after, out.shortfall) == (
        -2_950 * USD, 50 * USD, 0, 0)


def test_liquidation_outcome_bankrupt() -> None:
    # The price gaps from 56,000 straight to 53,000, through the 54,000 bankruptcy price.
    # Realized 26,500 - 30,000 = -3,500 USDC; 3,000 - 3,500 = -500: bankrupt.
    # No penalty, collateral 0, the insurance fund covers the 500 USDC shortfall.
    # Identity: 3,000 + (-3,500) = -500 == 0 + 0 - 500.
    out = liquidation_outcome(C0, long_half(), 53_000 * USD, PENALTY)
    assert (out.realized_pnl, out.penalty, out.collateral_after, out.shortfall) == (
        -3_500 * USD, 0, 0, 500 * USD)
    assert C0 + out.realized_pnl == out.collateral_after + out.penalty - out.shortfall
    # The short on the other side (opened at 60,000, closed at 53,000) gains exactly 3,500:
    # the 500 it earns beyond what the long had is what the fund pays in.
    short = apply_fill(FLAT, -HALF, P60K).new_position
    assert apply_fill(short, HALF, 53_000 * USD).realized_pnl_delta == 3_500 * USD


def test_penalty_rounds_up() -> None:
    # 1 size unit (1e-8 BTC) at 60,000: notional 600 micro-USDC; 1.5% = 9 exactly.
    # 3 units at 60,000.01 USD: 3 * 60_000_010_000 / 10^8 = 1_800.0003 -> 1_800; 1.5% = 27.
    # 1 unit at 33,333.33 USD: 333.3333 -> 333 micro; 1.5% = 4.995 -> 5 (rounded up).
    pos = apply_fill(FLAT, 1, 33_333_330_000).new_position
    out = liquidation_outcome(10**6, pos, 33_333_330_000, PENALTY)
    assert out.closed_notional == 333 and out.penalty == 5


# ---------------------------------------------------------------------------------------------
# Trades: cost basis and realized PnL


def test_reduce_and_flip() -> None:
    # Long 0.3 BTC at 60,000 (cost 18,000), then 0.1 BTC more at 63,000 (cost +6,300 = 24,300).
    pos = apply_fill(FLAT, 30_000_000, P60K).new_position
    pos = apply_fill(pos, 10_000_000, 63_000 * USD).new_position
    assert (pos.size, pos.cost) == (40_000_000, 24_300 * USD)
    assert pos.entry_price() == 60_750 * USD  # 24,300 / 0.4
    # Sell 0.1 at 62,000: portion = 24,300 * 0.1 / 0.4 = 6,075; realized = 6,200 - 6,075 = 125.
    out = apply_fill(pos, -10_000_000, 62_000 * USD)
    assert out.realized_pnl_delta == 125 * USD and out.new_position.cost == 18_225 * USD
    # Sell 0.5 at 61,000 (flip): close 0.3 -> 18,300 - 18,225 = +75 realized; open 0.2 short
    # for 30,500 - 18,300 = 12,200 -> cost -12,200, entry 61,000.
    out2 = apply_fill(out.new_position, -50_000_000, 61_000 * USD)
    assert out2.realized_pnl_delta == 75 * USD
    assert (out2.new_position.size, out2.new_position.cost) == (-20_000_000, -12_200 * USD)
    assert out2.new_position.realized_pnl == 200 * USD
    assert out2.new_position.entry_price() == 61_000 * USD


def test_odd_sizes_portion_rounds_toward_zero() -> None:
    # 3 units (3e-8 BTC) bought at 33,333.33 USD: cost 999 micro
    # (3 * 33_333_330_000 / 10^8 = 999.9999 -> 999). Sell 1 unit at the same price:
    # portion = 999 * 1 / 3 = 333, q_close = 333 -> realized 0; cost 666.
    pos = apply_fill(FLAT, 3, 33_333_330_000).new_position
    assert pos.cost == 999
    out = apply_fill(pos, -1, 33_333_330_000)
    assert (out.realized_pnl_delta, out.new_position.cost) == (0, 666)
    # Short side: cost -999; buy back 2: portion = trunc(-999 * 2 / 3) = -666; q_close = 666
    # (2 units -> 666.6666 floored); realized = -666 - (-666) = 0; cost -333.
    short = apply_fill(FLAT, -3, 33_333_330_000).new_position
    out = apply_fill(short, 2, 33_333_330_000)
    assert (out.realized_pnl_delta, out.new_position.cost) == (0, -333)


def test_fill_fee_rounds_up() -> None:
    # Taker fee 500 ppm (0.05%) on 0.5 BTC at 60,000: 15 USDC. On 1 unit (600 micro): 0.3 -> 1.
    out = apply_fill(FLAT, HALF, P60K, fee_ppm=500)
    assert out.fee == 15 * USD and out.collateral_delta == -15 * USD
    assert apply_fill(FLAT, 1, P60K, fee_ppm=500).fee == 1


def test_fill_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        apply_fill(FLAT, 0, P60K)
    with pytest.raises(ValueError):
        apply_fill(FLAT, 1, 0)
    with pytest.raises(ValueError):
        liquidation_outcome(C0, FLAT, P60K, PENALTY)


# ---------------------------------------------------------------------------------------------
# Funding worked numbers

RATE = 100_000  # 0.01% per interval = 0.0001 * 10^9 ppb


def test_index_delta_and_whole_payments() -> None:
    # 0.01% of 60,000 = 6 USDC per BTC per interval = 6 * 10^6 micro * 10^6 = 6 * 10^12 index.
    # delta = 100_000 * 60_000_000_000 // 1000 = 6_000_000_000_000.
    delta = index_delta(RATE, P60K)
    assert delta == 6 * 10**12
    # 1 BTC long pays 10^8 * 6*10^12 / 10^14 = 6_000_000 micro = 6 USDC; 1 BTC short receives it.
    assert settle(BTC, 0, delta) == Settlement(-6 * USD, 0)
    assert settle(-BTC, 0, delta) == Settlement(6 * USD, 0)
    # A negative rate reverses it: longs receive.
    assert settle(BTC, delta, 0) == Settlement(6 * USD, 0)


def test_odd_sizes_rounding_and_dust() -> None:
    # Long 0.33333333 BTC against shorts 0.11111111 and 0.22222222, index +6*10^12:
    #   long owes 33_333_333 * 0.06 = 1_999_999.98 micro -> pays 2_000_000 (ceiling),
    #     dust 0.02 micro = 2 * 10^12 scaled;
    #   short 11_111_111 is owed 666_666.66 -> gets 666_666 (floor), dust 0.66 -> 66 * 10^12;
    #   short 22_222_222 is owed 1_333_333.32 -> gets 1_333_333, dust 0.32 -> 32 * 10^12.
    # Sum of deltas: -2_000_000 + 666_666 + 1_333_333 = -1 micro; dust 100 * 10^12 = 1 micro.
    delta = index_delta(RATE, P60K)
    a, b, c = settle(33_333_333, 0, delta), settle(-11_111_111, 0, delta), settle(
        -22_222_222, 0, delta)
    assert a == Settlement(-2_000_000, 2 * 10**12)
    assert b == Settlement(666_666, 66 * 10**12)
    assert c == Settlement(1_333_333, 32 * 10**12)
    assert a.collateral_delta + b.collateral_delta + c.collateral_delta == -1
    assert a.dust_scaled + b.dust_scaled + c.dust_scaled == D


def test_settle_funding_restamps_position() -> None:
    pos = Position(size=BTC, cost=60_000 * USD, funding_index=5 * 10**12, realized_pnl=0)
    new, s = settle_funding(pos, 11 * 10**12)
    assert new.funding_index == 11 * 10**12 and s == Settlement(-6 * USD, 0)
    assert settle_funding(new, 11 * 10**12)[1] == Settlement(0, 0)


def test_index_delta_truncates_toward_zero() -> None:
    # -1 ppb at 999 micro-USDC per base: -999 / 1000 -> 0 (floor would give -1).
    assert index_delta(-1, 999) == 0 and index_delta(1, 999) == 0
    # -0.01% at 60,000.000001 USD: -100_000 * 60_000_000_001 / 1000 = -6_000_000_000_100 exact.
    assert index_delta(-RATE, P60K + 1) == -6_000_000_000_100
    # -3 ppb at 1,001: -3.003 -> -3 (symmetric with +3).
    assert index_delta(-3, 1_001) == -3 == -index_delta(3, 1_001)


def test_premium_and_rate() -> None:
    # Mark 60,060 vs oracle 60,000: +0.1% = 1_000_000 ppb; mark 59,940: -1_000_000.
    assert premium_ppb(60_060 * USD, P60K) == 1_000_000
    assert premium_ppb(59_940 * USD, P60K) == -1_000_000
    # 1 micro above 60,000: 10^9 / 6*10^10 = 0.0166 ppb -> 0 (truncated); below -> 0 too.
    assert premium_ppb(P60K + 1, P60K) == 0 == premium_ppb(P60K - 1, P60K)
    # 60 samples summing to 3,000,000 ppb -> average 50,000 (0.005%); clamp at 0.01% not hit.
    assert rate_from_premiums(3_000_000, 60, RATE) == 50_000
    assert rate_from_premiums(60_000_000, 60, RATE) == RATE  # 1,000,000 clamped to 100,000
    assert rate_from_premiums(-60_000_000, 60, RATE) == -RATE
    assert rate_from_premiums(-7, 2, RATE) == -3  # -3.5 truncated, not floored to -4
    assert rate_from_premiums(0, 0, RATE) == 0  # halted interval: no samples, no funding
    assert clamp_rate(-250_000, RATE) == -RATE and clamp_rate(42, RATE) == 42


def test_index_guard_refuses_reset_to_zero() -> None:
    # Max 0.01% per interval at 60,000: at most 6*10^12 per interval. After 3 intervals the
    # index may move 18*10^12 either way. An index of 1,234 intervals' worth (7.404*10^15)
    # reset to 0 is far outside: refused.
    assert max_index_move(RATE, P60K, 3) == 18 * 10**12
    before = 1_234 * 6 * 10**12
    assert index_move_allowed(before, before + 18 * 10**12, RATE, P60K, 3)
    assert index_move_allowed(before, before - 18 * 10**12, RATE, P60K, 3)
    assert not index_move_allowed(before, before + 18 * 10**12 + 1, RATE, P60K, 3)
    assert not index_move_allowed(before, 0, RATE, P60K, 3)
    assert max_index_move(RATE, P60K, 0) == 0  # no interval passed: no move at all


# ---------------------------------------------------------------------------------------------
# Properties

sizes = st.integers(min_value=-(10**12), max_value=10**12)
prices = st.integers(min_value=1, max_value=10**14)
indices = st.integers(min_value=-(10**18), max_value=10**18)
fractions_ppm = st.integers(min_value=0, max_value=PPM - 1)


@given(st.lists(sizes, min_size=1, max_size=20), indices, indices)
def test_funding_zero_sum(sizes_: list[int], i0: int, i1: int) -> None:
    positions = [*sizes_, -sum(sizes_)]
    results = [settle(s, i0, i1) for s in positions]
    assert sum(r.collateral_delta for r in results) * D + sum(r.dust_scaled for r in results) == 0
    assert sum(Fraction(r.collateral_delta) + Fraction(r.dust_scaled, D) for r in results) == 0
    for s, r in zip(positions, results, strict=True):
        owed = Fraction(-s * (i1 - i0), D)  # exact; negative = the position pays
        assert 0 <= r.dust_scaled < D
        assert r.collateral_delta <= owed < r.collateral_delta + 1
        if owed < 0:
            assert -r.collateral_delta >= -owed  # payer pays at least what it owes
        else:
            assert r.collateral_delta <= owed  # receiver gets at most what it is owed


@given(
    st.integers(min_value=-(10**9), max_value=10**9),
    st.integers(min_value=0, max_value=10**9),
    st.lists(prices, min_size=1, max_size=10),
)
def test_funding_index_within_guard(rate: int, max_rate: int, oracle: list[int]) -> None:
    # Any sequence of clamped intervals stays within max_index_move at the highest price.
    index = 0
    for p in oracle:
        index += index_delta(clamp_rate(rate, max_rate), p)
        assert abs(index_delta(rate, p) - Fraction(rate * p, 1000)) < 1
    assert index_move_allowed(0, index, max_rate, max(oracle), len(oracle))


@settings(max_examples=200)
@given(
    st.integers(min_value=2, max_value=6),
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=5),
            st.integers(min_value=0, max_value=5),
            st.integers(min_value=1, max_value=10**10),
            prices,
            st.integers(min_value=0, max_value=100_000),
        ),
        max_size=60,
    ),
)
def test_trades_conserve(n: int, trades: list[tuple[int, int, int, int, int]]) -> None:
    collateral = [10**12] * n
    pos = [FLAT] * n
    fees = 0
    start = sum(collateral) - sum(p.cost for p in pos)
    for b, s, qty, price, fee_ppm in trades:
        b, s = b % n, s % n
        if b == s:
            continue
        buy = apply_fill(pos[b], qty, price, fee_ppm)
        sell = apply_fill(pos[s], -qty, price)
        assert buy.notional == sell.notional == trade_notional(qty, price)
        for i, out in ((b, buy), (s, sell)):
            collateral[i] += out.collateral_delta
            pos[i] = out.new_position
        fees += buy.fee
        assert sum(collateral) - sum(p.cost for p in pos) + fees == start
        assert sum(p.size for p in pos) == 0
        for p in pos:
            # Cost has the sign of the size (or is 0), and flat means cost exactly 0.
            assert p.cost * p.size >= 0 and (p.size != 0 or p.cost == 0)
            # Cost is bounded by the size at the highest price any fill used.
            assert abs(p.cost) <= abs(p.size) * 10**14 // SIZE_SCALE


@given(sizes, sizes, prices, prices, fractions_ppm)
def test_requirement_monotone(s1: int, s2: int, p1: int, p2: int, f: int) -> None:
    (sa, sb), (pa, pb) = sorted((abs(s1), abs(s2))), sorted((p1, p2))
    for req in (initial_requirement, maintenance_requirement):
        assert req(sa, pa, f) <= req(sb, pa, f) <= req(sb, pb, f)
        assert req(sa, pa, f) <= req(sa, pb, f) <= req(sb, pb, f)
        assert req(-s1, p1, f) == req(s1, p1, f)
        # Never below the exact requirement, less than 1 micro above it.
        exact = Fraction(abs(s1) * p1 * f, SIZE_SCALE * PPM)
        assert exact <= req(s1, p1, f) < exact + 1


position_args = st.tuples(
    st.integers(min_value=1, max_value=10**11).flatmap(
        lambda m: st.sampled_from([m, -m])),
    prices,
)


@given(position_args, prices, st.integers(min_value=-(10**13), max_value=10**13), fractions_ppm)
def test_liquidation_conserves(
    opened: tuple[int, int], oracle: int, collateral: int, penalty: int
) -> None:
    size, entry = opened
    pos = apply_fill(FLAT, size, entry).new_position
    out = liquidation_outcome(collateral, pos, oracle, penalty)
    # The identity implemented, exactly:
    assert collateral + out.realized_pnl == out.collateral_after + out.penalty - out.shortfall
    assert out.penalty >= 0 and out.shortfall >= 0 and out.collateral_after >= 0
    assert out.penalty == 0 or out.shortfall == 0
    assert out.penalty <= div_ceil(out.closed_notional * penalty, PPM)
    assert out.new_position.size == 0 and out.new_position.cost == 0
    # Realized PnL matches the exact value within the rounding of the two notionals.
    exact = Fraction(size * (oracle - entry), SIZE_SCALE)
    assert abs(out.realized_pnl - exact) < 2
    # Unrealized PnL before the close is conservative: never above what the close realized.
    assert unrealized_pnl(pos, oracle) <= out.realized_pnl <= unrealized_pnl(pos, oracle) + 1


@given(position_args, st.integers(min_value=-(10**13), max_value=10**13), fractions_ppm,
       st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=5))
def test_liquidation_price_never_says_safe_when_not(
    opened: tuple[int, int], collateral: int, mmf: int, offsets: list[int]
) -> None:
    size, entry = opened
    pos = apply_fill(FLAT, size, entry).new_position
    lp = liquidation_price(collateral, pos, mmf)
    if lp is None:
        assert size > 0
        for p in (1, 2, entry, 10**14):
            assert surplus(collateral, pos, p, mmf) >= 0
        return
    assert lp >= 1
    if size > 0:
        for k in offsets:  # every price above the reported one is safe
            assert surplus(collateral, pos, lp + k, mmf) >= 0
        # Tightness: where the exact surplus is negative, the account is liquidatable.
        b = Fraction(size * (PPM - mmf), SIZE_SCALE * PPM)
        below = lp - int(2 / b) - 2
        if below >= 1:
            assert surplus(collateral, pos, below, mmf) < 0
    else:
        for k in offsets:  # every price below the reported one is safe
            if lp - k >= 1:
                assert surplus(collateral, pos, lp - k, mmf) >= 0
        b = Fraction(-size * (PPM + mmf), SIZE_SCALE * PPM)
        assert surplus(collateral, pos, lp + int(2 / b) + 2, mmf) < 0
