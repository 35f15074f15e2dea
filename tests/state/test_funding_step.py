"""End-of-block funding with worked numbers: premium samples, one interval's move per
payment, no jump after a gap, and settlement on the next fill."""

from __future__ import annotations

from state.exchange.markets import get_market_state
from tests.harness.exchange import BTC, USD, Exchange, end_events, limit, market


def test_premium_samples_then_one_interval_of_funding(ex: Exchange) -> None:
    # The genesis clock is far behind: the first block closes the (empty) intervals since
    # genesis without moving the index.
    ex.block(ex.tx(ex.alice, limit("sell", 60_100, 0.1)),
             ex.tx(ex.carol, limit("buy", 60_000, 0.1)))
    st = get_market_state(ex.store.overlay(), BTC)
    assert st is not None and st.funding_index == 0
    t_funding = st.funding_time
    # Mid 60,050 vs oracle 60,000: premium (50 / 60,000) * 10^9 = 833,333 ppb per block.
    for _ in range(3):
        ex.block()
    st = get_market_state(ex.store.overlay(), BTC)
    assert st is not None
    assert (st.premium_samples, st.premium_sum_ppb) == (4, 4 * 833_333)  # incl. the first
    # Bob buys 0.1 at 60,100 (lifting Alice): long 0.1 BTC at funding index 0.
    ex.block(ex.tx(ex.bob, market("buy", 61_000, 0.1)))
    ex.block(ex.tx(ex.alice, limit("sell", 60_100, 0.1)))
    # Jump to the end of the interval: rate = average premium, 833,333 ppb (under the 0.1%
    # clamp); index move = 833,333 * 60,000,000,000 / 1000 = 49,999,980,000,000.
    h_time = ex.store.head().time  # type: ignore[union-attr]
    ex.block(dt=t_funding + 60_000 - h_time)
    [ev] = [e for e in end_events(ex) if e["type"] == "funding" and e["market"] == BTC]
    assert ev["rate_ppb"] == "833333" and ev["intervals"] == "1"
    st = get_market_state(ex.store.overlay(), BTC)
    assert st is not None and st.funding_index == 49_999_980_000_000
    assert (st.premium_samples, st.funding_time) == (0, t_funding + 60_000)
    # Bob's next fill settles it: he pays 0.1 BTC * 49,999,980,000,000 / 10^14 = 4.999998 USDC.
    before = ex.collateral(ex.bob)
    [r] = ex.block(ex.tx(ex.bob, market("sell", 59_000, 0.1)))
    assert r.code == 0, r.log
    fee = 60_000 * USD // 10 * 500 // 10**6  # taker fee on 6,000 USDC at 0.05% = 3 USDC
    realized = -10 * USD  # bought 0.1 at 60,100, sold into Carol's bid at 60,000
    assert ex.collateral(ex.bob) == before - 4_999_998 - fee + realized
    assert ex.position(ex.bob) == (0, 0)


def test_a_long_gap_pays_one_interval_not_a_jump(ex: Exchange) -> None:
    ex.block(ex.tx(ex.alice, limit("sell", 60_100, 0.1)),
             ex.tx(ex.carol, limit("buy", 60_000, 0.1)))
    st = get_market_state(ex.store.overlay(), BTC)
    assert st is not None
    # A 10-hour halt: 600 intervals pass, but only the one sample's rate is paid, once.
    ex.block(dt=st.funding_time + 600 * 60_000 - ex.store.head().time)  # type: ignore[union-attr]
    [ev] = [e for e in end_events(ex) if e["type"] == "funding" and e["market"] == BTC]
    assert ev["intervals"] == "600"
    st2 = get_market_state(ex.store.overlay(), BTC)
    assert st2 is not None
    assert st2.funding_index == 2 * 833_333 * 60_000 * USD // 2 // 1000  # one interval's move
