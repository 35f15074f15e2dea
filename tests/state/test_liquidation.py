"""Liquidations: worked numbers, the bankrupt case, the at-risk index, stale prices, funding.

Devnet market parameters (genesis/builder.py): initial margin 5%, maintenance 3%, liquidation
penalty 1.5%, taker fee 0.05%, maker fee 0.02%, oracle max age 60 s, funding interval 60 s,
max funding rate 0.1% per interval.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.tx import Deposit, PlaceOrder
from state.exchange.book import account_orders
from state.exchange.liquidation import RISK, RISK_OF, RiskEntries, thresholds
from state.exchange.margin import Held, account_margin, margin_of
from state.exchange.markets import get_market_state
from state.exchange.positions import get_position
from state.records import (
    BAD_DEBT,
    INSURANCE_ADDRESS,
    Market,
    MarketState,
    Pool,
    Position,
    initial_state,
)
from tests.harness.exchange import (
    BTC,
    USD,
    Exchange,
    end_events,
    limit,
    liq_events,
    open_long,
    oracle,
    px,
)

ETH = "ETH-USD-PERP"


def fund(ex: Exchange) -> int:
    from state.accounts import get_account

    return get_account(ex.store.overlay(), INSURANCE_ADDRESS).balance


def bad_debt(ex: Exchange) -> int:
    p = ex.store.overlay().get_obj(BAD_DEBT, Pool)
    return p.amount if p else 0


def risk_keys(ex: Exchange) -> list[bytes]:
    return [k for k, _ in ex.store.iter_state(RISK)]


def test_worked_liquidation_with_penalty(ex: Exchange) -> None:
    base = ex.conserved_scaled()
    open_long(ex, 1)
    # Dave: collateral 10,000 - 30 (fee) = 9,970; long 1 BTC, cost 60,000. His entry sits in
    # the index, and a resting bid of his (backed by his margin) waits on the book.
    ex.block(ex.tx(ex.dave, limit("buy", 40_000, 0.01)))
    assert len(risk_keys(ex)) == 2  # Dave's long and Alice's short
    assert ex.store.state_get(RISK_OF + ex.dave.public_key) is not None
    # At 51,600: equity 9,970 - 8,400 = 1,570 >= maintenance 3% = 1,548: safe.
    ex.block(oracle(ex, px(51_600)))
    assert liq_events(ex) == []
    # At 51,500: equity 1,470 < maintenance 1,545: liquidated at the oracle price.
    ex.block(oracle(ex, px(51_500)))
    liq, settled = [e for e in liq_events(ex)]
    assert liq == {"type": "liquidation", "account": ex.dave.public_key.hex(),
                   "collateral": str(9_970 * USD), "equity": str(1_470 * USD),
                   "maintenance_margin": str(1_545 * USD), "market": BTC,
                   "price": str(px(51_500)), "realized_pnl": str(-8_500 * USD),
                   "size": str(10**8)}
    # Penalty 1.5% of 51,500 = 772.5 USDC to the insurance fund; 697.5 left to Dave.
    assert settled == {"type": "liquidation_settled", "account": ex.dave.public_key.hex(),
                       "collateral_after": str(697_500_000), "insurance_covered": "0",
                       "penalty": str(772_500_000), "shortfall": "0", "uncovered": "0"}
    assert ex.collateral(ex.dave) == 697_500_000
    assert ex.position(ex.dave) == (0, 0)
    assert fund(ex) == 772_500_000
    # The insurance fund took the long over at the oracle price: open interest still balances.
    fpos = get_position(ex.store.overlay(), INSURANCE_ADDRESS, BTC)
    assert fpos is not None and (fpos.size, fpos.cost) == (10**8, 51_500 * USD)
    mst = get_market_state(ex.store.overlay(), BTC)
    assert mst is not None and mst.open_interest_long == mst.open_interest_short == 10**8
    # His bid was cancelled; his index entry is gone; the fund is never indexed.
    cancelled = [e for e in end_events(ex) if e["type"] == "order_cancelled"]
    assert [c["reason"] for c in cancelled] == ["liquidated"]
    assert account_orders(ex.store.overlay(), ex.dave.public_key) == []
    assert ex.store.state_get(RISK_OF + ex.dave.public_key) is None
    assert ex.store.state_get(RISK_OF + INSURANCE_ADDRESS) is None
    assert len(risk_keys(ex)) == 1  # Alice's short
    assert ex.conserved_scaled() == base


@pytest.mark.parametrize("seed_usd,covered_usd,uncovered_usd", [
    (50_000, 2_090, 0),      # the fund pays the whole shortfall
    (1_000, 1_000, 1_090),   # the fund runs dry: the rest is recorded as bad debt
])
def test_bankrupt_account_shortfall(ex: Exchange, seed_usd: int, covered_usd: int,
                                    uncovered_usd: int) -> None:
    ex.block(ex.tx(ex.keys.faucet, Deposit(INSURANCE_ADDRESS, seed_usd * USD)))
    base = ex.conserved_scaled()
    open_long(ex, 3)  # Dave: collateral 10,000 - 90 = 9,910; long 3 BTC, cost 180,000
    # The oracle gaps to 56,000: equity 9,910 - 12,000 = -2,090: bankrupt.
    ex.block(oracle(ex, px(56_000)))
    liq, settled = liq_events(ex)
    assert liq["equity"] == str(-2_090 * USD) and liq["realized_pnl"] == str(-12_000 * USD)
    assert settled["shortfall"] == str(2_090 * USD) and settled["penalty"] == "0"
    assert settled["insurance_covered"] == str(covered_usd * USD)
    assert settled["uncovered"] == str(uncovered_usd * USD)
    assert ex.collateral(ex.dave) == 0
    assert fund(ex) == (seed_usd - covered_usd) * USD
    assert bad_debt(ex) == uncovered_usd * USD
    fpos = get_position(ex.store.overlay(), INSURANCE_ADDRESS, BTC)
    assert fpos is not None and (fpos.size, fpos.cost) == (3 * 10**8, 168_000 * USD)
    assert ex.conserved_scaled() == base  # the guard passed; the quantity is exact


def test_a_stale_oracle_liquidates_no_one_and_funding_alone_can_liquidate(ex: Exchange) -> None:
    open_long(ex, 1)
    ex.block(oracle(ex, px(51_600)))  # safe by 22 USDC (see the worked test)
    # A book quoted well above the oracle: every block samples a premium over the 0.1% cap.
    ex.block(ex.tx(ex.carol, limit("buy", 55_000, 0.1)),
             ex.tx(ex.erin, limit("sell", 56_000, 0.1)))
    # The next block comes 61 s later: a funding interval passes and the index rises by the
    # capped 0.1% of 51,600 = 51.6 USDC per BTC, so Dave owes 51.6 USDC of funding and is
    # below maintenance; but the oracle price is now 61 s old (max 60 s): no liquidation.
    ex.block(dt=61_000)
    [btc_funding] = [e for e in end_events(ex) if e.get("market") == BTC]
    assert btc_funding["type"] == "funding" and btc_funding["rate_ppb"] == "1000000"
    assert liq_events(ex) == []
    am = account_margin(ex.store.overlay(), ex.dave.public_key)
    assert am.unsettled_funding == -51_600_000 and am.liquidatable
    # A fresh price (the same 51,600): Dave is found through the index, though nothing of his
    # was written in either block, and liquidated.
    ex.block(oracle(ex, px(51_600)))
    liq, settled = liq_events(ex)
    assert liq["account"] == ex.dave.public_key.hex()
    assert liq["equity"] == str(1_570 * USD - 51_600_000)
    assert ex.position(ex.dave) == (0, 0)


def test_paused_market_liquidates_no_one(ex: Exchange) -> None:
    """No transaction switches modes yet (operator commands come with the recovery
    toolkit), so this runs the step on an overlay whose market state says ``paused``."""
    from state.context import TxContext
    from state.exchange.liquidation import process_liquidations
    from state.exchange.markets import put_market_state
    from state.params import load_params

    open_long(ex, 1)
    ov = ex.store.overlay()
    st0 = get_market_state(ov, BTC)
    h = ex.store.head()
    assert st0 is not None and h is not None
    ctx = TxContext(load_params(ov), h.height + 1, h.time + 1000)
    put_market_state(ov, BTC, replace(st0, mode="paused", oracle_price=px(40_000)))
    assert process_liquidations(ov, ctx) == []
    put_market_state(ov, BTC, replace(st0, mode="active", oracle_price=px(40_000)))
    evs = process_liquidations(ov, ctx)
    assert [e.type for e in evs] == ["liquidation", "liquidation_settled"]


def test_multi_market_account_is_found_through_either_market(ex: Exchange) -> None:
    # Dave: long 1 BTC at 60,000 and long 10 ETH at 3,000 (fees 30 + 15).
    open_long(ex, 1)
    eth_ask = PlaceOrder(ETH, "sell", "limit", "gtc", 3_000 * USD, 10 * 10**8, False, 0)
    eth_buy = PlaceOrder(ETH, "buy", "market", "ioc", 3_000 * USD, 10 * 10**8, False, 0)
    ex.block(ex.tx(ex.alice, eth_ask))
    [r] = ex.block(ex.tx(ex.dave, eth_buy))
    assert r.code == 0, r.log
    entries = ex.store.overlay().get_obj(RISK_OF + ex.dave.public_key, RiskEntries)
    assert entries is not None and len(entries.keys) == 2
    # Collateral 9,955. BTC stays at 60,000. ETH at 2,300: equity 9,955 - 7,000 = 2,955 >=
    # maintenance 1,800 + 690 = 2,490: safe. ETH at 2,250: equity 2,455 < 1,800 + 675 =
    # 2,475: liquidated, both positions (in symbol order: BTC first).
    ex.block(oracle(ex, 2_300 * USD, ETH))
    assert liq_events(ex) == []
    ex.block(oracle(ex, 2_250 * USD, ETH))
    evs = liq_events(ex)
    assert [(e["type"], e.get("market")) for e in evs] == [
        ("liquidation", BTC), ("liquidation", ETH), ("liquidation_settled", None)]
    assert evs[0]["equity"] == str(2_455 * USD)
    assert evs[0]["maintenance_margin"] == str(2_475 * USD)
    assert ex.position(ex.dave) == (0, 0)


def test_replay_of_liquidations_is_byte_identical(ex: Exchange, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from genesis.initial_store import init_store
    from state.store import Store
    from state.transition import import_block

    ex.block(ex.tx(ex.keys.faucet, Deposit(INSURANCE_ADDRESS, 1_000 * USD)))
    open_long(ex, 3)
    ex.block(oracle(ex, px(56_000)))
    assert liq_events(ex)
    other = Store(tmp_path / "replay")
    init_store(other, ex.g)
    h = ex.store.head()
    assert h is not None
    for height in range(1, h.height + 1):
        raw = ex.store.block_bytes(height)
        assert raw is not None
        import_block(other, raw)
    assert other.dump_state() == ex.store.dump_state()
    other.close()


# -- the index is sound: no candidate entry means not liquidatable -------------------------

def _market(symbol: str, mmf: int) -> Market:
    return Market(symbol=symbol, tick_size=1, step_size=1, initial_margin_ppm=mmf + 20_000,
                  maintenance_margin_ppm=mmf, funding_interval_ms=60_000,
                  max_funding_rate_ppb=10**6, liquidation_penalty_ppm=mmf,
                  maker_fee_ppm=0, taker_fee_ppm=0, oracle_max_age_ms=60_000)


held_st = st.lists(st.tuples(
    st.integers(10_000, 200_000),               # mmf ppm
    st.integers(1, 10**12),                     # oracle price
    st.integers(-10**15, 10**15),               # funding index now
    st.integers(-10**10, 10**10).filter(bool),  # size
    st.integers(-10**12, 10**12),               # cost offset from size*price
    st.integers(-10**13, 10**13),               # index the position last settled at (offset)
    st.integers(1, 10**12),                     # new oracle price
    st.integers(-10**15, 10**15),               # new funding index
), min_size=1, max_size=3)


@settings(max_examples=400, deadline=None)
@given(held_st, st.integers(0, 10**13))
def test_index_never_misses_a_liquidatable_account(rows: list, collateral: int) -> None:  # type: ignore[type-arg]
    now: list[Held] = []
    later: list[Held] = []
    for i, (mmf, p, idx, size, dcost, didx, p2, idx2) in enumerate(rows):
        m = _market(f"M{i}", mmf)
        pos = Position(size, size * p // 10**8 + dcost, idx + didx, 0)
        st0 = replace(initial_state(p, 0), funding_index=idx)
        now.append(Held(m, st0, pos))
        later.append(Held(m, replace(st0, oracle_price=p2, funding_index=idx2), pos))
    am = margin_of(collateral, tuple(now))
    entries = thresholds(am)
    candidate = False
    for (h, k), h2 in zip(entries, later, strict=True):
        from state.exchange.liquidation import _x

        long = h.position.size > 0
        x2 = _x(h2.state, h2.market.maintenance_margin_ppm, long)
        candidate |= (x2 < k) if long else (x2 > k)
    if not candidate:
        assert not margin_of(collateral, tuple(later)).liquidatable


def test_index_entry_of_a_safe_account_is_not_a_candidate_at_its_own_prices() -> None:
    """Indexing must not make every account a candidate: at the prices it was indexed at,
    an account with room to spare is not one."""
    m = _market("M", 30_000)
    st0: MarketState = initial_state(60_000 * USD, 0)
    pos = Position(10**8, 60_000 * USD, 0, 0)
    am = margin_of(10_000 * USD, (Held(m, st0, pos),))
    [(h, k)] = thresholds(am)
    from state.exchange.liquidation import _x

    assert not _x(st0, 30_000, True) < k
