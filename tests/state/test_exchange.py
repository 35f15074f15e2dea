"""Orders, matching, positions and fees, with worked numbers.

Scales: prices in micro-USDC per whole BTC, sizes in 10^-8 BTC, collateral in micro-USDC.
BTC-USD-PERP (devnet market): tick 0.10 USD, step 0.0001 BTC, IMF 5%, MMF 3%, maker fee
0.02%, taker fee 0.05%.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.codes import ResultCode
from chain.tx import CancelAll, CancelOrder, OraclePrice, PlaceOrder, make_tx
from genesis.initial_store import init_store
from state.accounts import get_account
from state.exchange.book import account_orders, best_orders
from state.exchange.markets import get_market_state
from state.exchange.positions import get_position
from state.store import Store
from state.transition import import_block
from tests.harness.exchange import BTC, BTC_SIZE, START, USD, Exchange, limit, market


def test_worked_trade_fees_and_realized_pnl(ex: Exchange) -> None:
    base = ex.conserved()
    # Alice rests a sell of 0.5 BTC at 60,000.
    ask = ex.tx(ex.alice, limit("sell", 60_000, 0.5))
    [r] = ex.block(ask)
    assert r.code == 0 and r.events[0].type == "order_rested"
    ask_id = ask.nonce  # an order is named by its owner and the nonce that placed it
    # Bob buys 0.2 BTC at market (worst 61,000): fills at the maker's 60,000.
    [r] = ex.block(ex.tx(ex.bob, market("buy", 61_000, 0.2)))
    assert r.code == 0, r.log
    fill = r.events[0].as_dict()
    assert (fill["price"], fill["size"], fill["maker_order"]) == (
        str(60_000 * USD), str(20_000_000), str(ask_id))
    # Notional 0.2 * 60,000 = 12,000 USDC; taker fee 0.05% = 6 USDC; maker fee 0.02% = 2.4.
    assert ex.position(ex.bob) == (20_000_000, 12_000 * USD)
    assert ex.position(ex.alice) == (-20_000_000, -12_000 * USD)
    assert ex.collateral(ex.bob) == START - 6 * USD
    assert ex.collateral(ex.alice) == START - 2_400_000
    assert ex.fee_pool() == 8_400_000
    st = get_market_state(ex.store.overlay(), BTC)
    assert st is not None and st.open_interest_long == st.open_interest_short == 20_000_000
    [rest] = list(best_orders(ex.store.overlay(), BTC, "sell"))
    assert rest.size == 30_000_000
    # Carol bids 0.1 at 59,500; Bob sells 0.1 at market into it and realizes a loss:
    # closed half his cost (6,000 USDC) for 5,950 -> -50 USDC, fee 0.05% of 5,950 = 2.975.
    ex.block(ex.tx(ex.carol, limit("buy", 59_500, 0.1)))
    [r] = ex.block(ex.tx(ex.bob, market("sell", 59_000, 0.1)))
    assert r.code == 0, r.log
    assert ex.position(ex.bob) == (10_000_000, 6_000 * USD)
    assert ex.collateral(ex.bob) == START - 6 * USD - 50 * USD - 2_975_000
    p = get_position(ex.store.overlay(), ex.bob.public_key, BTC)
    assert p is not None and p.realized_pnl == -50 * USD
    assert ex.conserved() == base


def test_price_time_priority(ex: Exchange) -> None:
    ex.block(*[ex.tx(ex.dave, CancelAll("")) for _ in range(5)])  # Dave's next nonce: 5
    ex.block(ex.tx(ex.alice, limit("sell", 60_100, 0.1)),
             ex.tx(ex.carol, limit("sell", 60_000, 0.1)),
             ex.tx(ex.dave, limit("sell", 60_000, 0.1)))
    [r] = ex.block(ex.tx(ex.bob, market("buy", 61_000, 0.25)))
    fills = [e.as_dict() for e in r.events if e.type == "fill"]
    # Best price first; at one price, the earlier arrival (Carol, index 1) before Dave
    # (index 2): time priority is by place in the chain, not by the id (a nonce).
    assert [(f["maker"], f["maker_order"], f["size"]) for f in fills] == [
        (ex.carol.public_key.hex(), "0", "10000000"),
        (ex.dave.public_key.hex(), "5", "10000000"),
        (ex.alice.public_key.hex(), "0", "5000000")]
    assert [f["price"] for f in fills] == [str(60_000 * USD)] * 2 + [str(60_100 * USD)]


def test_ioc_remainder_and_no_liquidity(ex: Exchange) -> None:
    [r] = ex.block(ex.tx(ex.bob, limit("sell", 59_000, 0.2, tif="ioc")))
    assert r.code == 0 and r.events[0].type == "order_unfilled"
    assert list(best_orders(ex.store.overlay(), BTC, "sell")) == []
    assert ex.position(ex.bob) == (0, 0)


@pytest.mark.parametrize("payload,code", [
    (PlaceOrder(BTC, "buy", "limit", "gtc", 60_000 * USD + 1, 10_000, False, 0),
     ResultCode.INVALID_PRICE),
    (PlaceOrder(BTC, "buy", "limit", "gtc", 60_000 * USD, 10_001, False, 0),
     ResultCode.INVALID_SIZE),
    (PlaceOrder("DOGE-USD-PERP", "buy", "limit", "gtc", 1, 1, False, 0),
     ResultCode.UNKNOWN_MARKET),
    (PlaceOrder(BTC, "sell", "limit", "gtc", 60_000 * USD, 10_000, True, 0),
     ResultCode.REDUCE_ONLY_WOULD_INCREASE),
    # Take-profit / stop-loss orders are reduce-only: refused without an opposite position,
    # and their trigger price must be a tick multiple too.
    (PlaceOrder(BTC, "buy", "take_profit", "ioc", 60_000 * USD, 10_000, True, 61_000 * USD),
     ResultCode.REDUCE_ONLY_WOULD_INCREASE),
    (PlaceOrder(BTC, "sell", "stop_loss", "ioc", 60_000 * USD, 10_000, True, 61_000 * USD + 1),
     ResultCode.INVALID_PRICE),
])
def test_invalid_orders_are_refused_with_their_code(ex: Exchange, payload: PlaceOrder,
                                                    code: ResultCode) -> None:
    [r] = ex.block(ex.tx(ex.bob, payload))
    assert r.code == code, r.log
    assert account_orders(ex.store.overlay(), ex.bob.public_key) == []
    assert get_account(ex.store.overlay(), ex.bob.public_key).nonce == 1


def test_zero_size_is_rejected_before_execution(ex: Exchange) -> None:
    from chain.errors import InvalidTransaction

    with pytest.raises(InvalidTransaction):
        PlaceOrder(BTC, "buy", "limit", "gtc", 60_000 * USD, 0, False, 0).check(b"")


def test_post_only_would_cross_is_refused(ex: Exchange) -> None:
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, 0.1)))
    [r] = ex.block(ex.tx(ex.bob, limit("buy", 60_000, 0.1, tif="post_only")))
    assert r.code == ResultCode.POST_ONLY_WOULD_CROSS
    [r] = ex.block(ex.tx(ex.bob, limit("buy", 59_900, 0.1, tif="post_only")))
    assert r.code == 0 and r.events[0].type == "order_rested"


def test_insufficient_margin_changes_nothing(ex: Exchange) -> None:
    # 3 BTC short at 60,000 needs 9,000 USDC initial margin: Alice and Carol can each back it.
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, 3)), ex.tx(ex.carol, limit("sell", 60_000, 3)))
    before = (ex.collateral(ex.bob), ex.fee_pool())
    # 5 BTC at 60,000 = 300,000 USDC notional needs 15,000 USDC initial margin: Bob has 10,000.
    [r] = ex.block(ex.tx(ex.bob, market("buy", 61_000, 5)))
    assert r.code == ResultCode.INSUFFICIENT_MARGIN, r.log
    assert (ex.collateral(ex.bob), ex.fee_pool()) == before
    assert ex.position(ex.bob) == (0, 0)
    asks = list(best_orders(ex.store.overlay(), BTC, "sell"))
    assert [a.size for a in asks] == [3 * BTC_SIZE, 3 * BTC_SIZE]
    # A resting order that could not be backed if filled is refused too.
    [r] = ex.block(ex.tx(ex.bob, limit("buy", 50_000, 5)))
    assert r.code == ResultCode.INSUFFICIENT_MARGIN
    [r] = ex.block(ex.tx(ex.dave, limit("sell", 60_000, 5)))
    assert r.code == ResultCode.INSUFFICIENT_MARGIN


def test_self_trade_cancels_the_resting_order(ex: Exchange) -> None:
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, 0.1)))
    [r] = ex.block(ex.tx(ex.alice, limit("buy", 60_000, 0.1)))
    assert r.code == 0
    assert [e.type for e in r.events] == ["order_cancelled", "order_rested"]
    assert r.events[0].as_dict()["reason"] == "self_trade"
    assert ex.position(ex.alice) == (0, 0)


def test_reduce_only_is_capped_at_the_position(ex: Exchange) -> None:
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, 1)))
    ex.block(ex.tx(ex.bob, market("buy", 60_000, 0.1)))
    ex.block(ex.tx(ex.carol, limit("buy", 60_000, 1)))
    [r] = ex.block(ex.tx(ex.bob, market("sell", 60_000, 0.5, reduce_only=True)))
    assert r.code == 0
    assert ex.position(ex.bob) == (0, 0)  # 0.1 closed, not flipped short


def test_cancel_and_cancel_all(ex: Exchange) -> None:
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, 0.1)),
             ex.tx(ex.alice, limit("sell", 61_000, 0.1)),
             ex.tx(ex.alice, limit("buy", 50_000, 0.1)))
    [r] = ex.block(ex.tx(ex.bob, CancelOrder(BTC, 0)))
    assert r.code == ResultCode.ORDER_NOT_FOUND  # Bob has no order 0 (Alice's is hers)
    [r] = ex.block(ex.tx(ex.alice, CancelOrder(BTC, 0)))
    assert r.code == 0 and r.events[0].type == "order_cancelled"
    assert len(account_orders(ex.store.overlay(), ex.alice.public_key)) == 2
    [r] = ex.block(ex.tx(ex.alice, CancelAll("")))
    assert r.code == 0 and len(r.events) == 2
    ov = ex.store.overlay()
    assert account_orders(ov, ex.alice.public_key) == []
    assert list(best_orders(ov, BTC, "sell")) == list(best_orders(ov, BTC, "buy")) == []
    # Nothing of the book is left in state.
    assert [k for k, _ in ex.store.iter_state(b"book/")] == []
    assert [k for k, _ in ex.store.iter_state(b"ord/")] == []


def test_many_orders_in_one_block_match_like_one_per_block(tmp_path: Path) -> None:
    """The book walk sees orders placed earlier in the same block (overlay ordering)."""
    a = Exchange(tmp_path / "a")
    b = Exchange(tmp_path / "b")
    try:
        orders = [(a.alice, limit("sell", 60_000 + 10 * i, 0.1)) for i in range(5)]
        orders += [(a.carol, limit("buy", 59_000 - 10 * i, 0.1)) for i in range(5)]
        orders += [(a.bob, market("buy", 61_000, 0.35)), (a.dave, market("sell", 50_000, 0.25))]
        a.block(*[a.tx(k, p) for k, p in orders])
        for k, p in orders:
            kb = b.keys.accounts[a.keys.accounts.index(k)]
            b.block(b.tx(kb, p))
        for ka, kb in zip(a.keys.accounts, b.keys.accounts, strict=True):
            assert a.position(ka) == b.position(kb)
            assert a.collateral(ka) == b.collateral(kb)
        assert a.fee_pool() == b.fee_pool()
    finally:
        a.store.close()
        b.store.close()


order_st = st.tuples(
    st.integers(0, 4),                                   # account
    st.sampled_from(["buy", "sell"]),
    st.sampled_from(["gtc", "ioc", "post_only", "market", "cancel_all"]),
    st.integers(59_500, 60_500),                         # price in USD
    st.integers(1, 20),                                  # size in 0.01 BTC
    st.booleans(),                                       # reduce-only
)


block_st = st.tuples(
    st.lists(order_st, min_size=1, max_size=6),
    st.sampled_from([1_000, 1_000, 60_000]),              # block spacing: 60 s pays funding
    st.none() | st.integers(59_000, 61_000),              # an oracle update this block
)


@settings(max_examples=25, deadline=None)
@given(blocks=st.lists(block_st, min_size=1, max_size=6))
def test_random_order_flow_conserves_value_and_balances_open_interest(
        tmp_path_factory: pytest.TempPathFactory, blocks: list) -> None:  # type: ignore[type-arg]
    """Orders, cancels, oracle moves and funding payments in random blocks: value is
    conserved to the unit (with funding owed and dust), funding is zero-sum, open interest
    balances, and a replay gives byte-identical state."""
    root = tmp_path_factory.mktemp("flow")
    ex = Exchange(root / "a")
    try:
        base = ex.conserved_scaled()
        raws = []
        oracle_nonce = 0
        for blk, dt, oracle_usd in blocks:
            txs = []
            if oracle_usd is not None:
                when = ex.store.head().time + dt  # type: ignore[union-attr]
                txs.append(make_tx(ex.keys.oracles[0], ex.g.chain_id, oracle_nonce,
                                   OraclePrice(BTC, oracle_usd * USD, when)))
                oracle_nonce += 1
            for who, side, kind, px, size, ro in blk:
                key = ex.keys.accounts[who]
                if kind == "cancel_all":
                    payload: object = CancelAll(BTC)
                elif kind == "market":
                    payload = market(side, px + (500 if side == "buy" else -500),
                                     size / 100, reduce_only=ro)
                else:
                    payload = limit(side, px, size / 100, tif=kind, reduce_only=ro)
                txs.append(ex.tx(key, payload))
            ex.block(*txs, dt=dt)
            raws.append(ex.store.block_bytes(ex.height))
            assert ex.conserved_scaled() == base
            ov = ex.store.overlay()
            st_ = get_market_state(ov, BTC)
            assert st_ is not None and st_.open_interest_long == st_.open_interest_short
            sizes = [ex.position(k)[0] for k in ex.keys.accounts]
            assert sum(sizes) == 0
            assert st_.open_interest_long == sum(s for s in sizes if s > 0)
            for k in ex.keys.accounts:
                for o in account_orders(ov, k.public_key):
                    assert o.size > 0 and o.size % 10_000 == 0
        # Replaying the same blocks into a fresh store gives byte-identical state.
        fresh = Store(root / "b")
        init_store(fresh, ex.g)
        for raw in raws:
            import_block(fresh, raw or b"")
        assert fresh.dump_state() == ex.store.dump_state()
        fresh.close()
    finally:
        ex.store.close()


def test_transfer_cannot_take_collateral_that_backs_positions(ex: Exchange) -> None:
    from chain.tx import Transfer

    # Bob goes long 1.5 BTC at 60,000: initial margin 5% of 90,000 = 4,500 USDC.
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, 1.5)))
    [r] = ex.block(ex.tx(ex.bob, market("buy", 60_000, 1.5)))
    assert r.code == 0, r.log
    bal = ex.collateral(ex.bob)  # 10,000 − 45 USDC taker fee
    free = bal - 4_500 * USD
    [r] = ex.block(ex.tx(ex.bob, Transfer(ex.erin.public_key, free + 1)))
    assert r.code == ResultCode.INSUFFICIENT_MARGIN
    assert ex.collateral(ex.bob) == bal
    [r] = ex.block(ex.tx(ex.bob, Transfer(ex.erin.public_key, free)))
    assert r.code == 0
    assert ex.collateral(ex.erin) == START + free
