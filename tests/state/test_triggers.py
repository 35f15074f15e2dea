"""Take-profit and stop-loss orders, with worked numbers: stored on the trigger index, fired
by the end-of-block step when the oracle reaches the trigger (inclusive, exact integers),
executed as reduce-only market orders against the book.

Scales and the BTC market as in test_exchange.py (tick 0.10 USD, step 0.0001 BTC, IMF 5%,
maker fee 0.02%, taker fee 0.05%).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.codes import ResultCode
from chain.errors import InvalidTransaction
from chain.tx import CancelAll, CancelOrder, Deposit, OraclePrice, PlaceOrder, Transaction
from genesis.initial_store import init_store
from state.exchange.book import (
    TRIGGER,
    U64_MAX,
    account_orders,
    arrival,
    best_orders,
    get_order,
    trigger_key,
)
from state.exchange.markets import get_market_state
from state.store import Store
from state.transition import import_block
from tests.harness.exchange import BTC, BTC_SIZE, START, USD, Exchange, end_events, limit, market


def px(usd: float) -> int:
    return int(round(usd * 10)) * 100_000


def sz(btc: float) -> int:
    return int(round(btc * 10_000)) * 10_000


def tpsl(kind: str, side: str, trigger_usd: float, worst_usd: float, size_btc: float
         ) -> PlaceOrder:
    return PlaceOrder(BTC, side, kind, "ioc", px(worst_usd), sz(size_btc), True,
                      px(trigger_usd))


def oracle(ex: Exchange, price: int, dt: int = 1000) -> Transaction:
    """An oracle update observed at the next block's time (blocks are ``dt`` ms apart)."""
    head = ex.store.head()
    assert head is not None
    return ex.tx(ex.keys.oracles[0], OraclePrice(BTC, price, head.time + dt))


def trig_keys(ex: Exchange) -> list[bytes]:
    return [k for k, _ in ex.store.iter_state(TRIGGER)]


def triggered(ex: Exchange) -> list[dict[str, str]]:
    return [e for e in end_events(ex) if e["type"] != "funding"]


def bob_long_with_stop_and_take_profit(ex: Exchange) -> tuple[int, int]:
    """Bob buys 0.1 BTC at 60,000 from Alice, then places a stop-loss (sell, trigger 59,000,
    worst 58,000) and a take-profit (sell, trigger 62,000, worst 61,000). Their ids."""
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, 0.1)))
    [r] = ex.block(ex.tx(ex.bob, market("buy", 61_000, 0.1)))
    assert r.code == 0, r.log
    assert ex.position(ex.bob) == (sz(0.1), 6_000 * USD)
    t_sl = ex.tx(ex.bob, tpsl("stop_loss", "sell", 59_000, 58_000, 0.1))
    t_tp = ex.tx(ex.bob, tpsl("take_profit", "sell", 62_000, 61_000, 0.1))
    sl, tp = ex.block(t_sl, t_tp)
    assert sl.code == tp.code == 0, (sl.log, tp.log)
    assert sl.events[0].type == "order_trigger_placed"
    assert sl.events[0].as_dict() == {
        "direction": "d", "kind": "stop_loss", "market": BTC, "order": str(t_sl.nonce),
        "owner": ex.bob.public_key.hex(), "price": str(px(58_000)), "side": "sell",
        "size": str(sz(0.1)), "trigger_price": str(px(59_000))}
    assert tp.events[0].as_dict()["direction"] == "u"
    return t_sl.nonce, t_tp.nonce


def test_keys_of_the_trigger_index(ex: Exchange) -> None:
    sl_id, tp_id = bob_long_with_stop_and_take_profit(ex)
    ov = ex.store.overlay()
    bob = ex.bob.public_key
    sl, tp = get_order(ov, bob, sl_id), get_order(ov, bob, tp_id)
    assert sl is not None and tp is not None
    assert (sl.kind, sl.reduce_only, sl.trigger_price, sl.size) == (
        "stop_loss", True, px(59_000), sz(0.1))
    assert (sl.arrival, tp.arrival) == (arrival(ex.height, 0), arrival(ex.height, 1))
    prefix = b"trig/" + BTC.encode()
    # d: pricekey = 2^64-1-trigger (highest trigger first); u: pricekey = trigger; then the
    # arrival (time priority), then the order's owner and id.
    assert trigger_key(sl) == (prefix + b"/d" + (U64_MAX - px(59_000)).to_bytes(8, "big")
                               + sl.arrival.to_bytes(8, "big") + bob
                               + sl_id.to_bytes(8, "big"))
    assert trigger_key(tp) == (prefix + b"/u" + px(62_000).to_bytes(8, "big")
                               + tp.arrival.to_bytes(8, "big") + bob
                               + tp_id.to_bytes(8, "big"))
    assert sorted(trig_keys(ex)) == sorted([trigger_key(sl), trigger_key(tp)])
    # Not on the book, not matched: the book is empty and Bob's position is unchanged.
    assert list(best_orders(ov, BTC, "sell")) == list(best_orders(ov, BTC, "buy")) == []
    assert [o.id for o in account_orders(ov, ex.bob.public_key)] == [sl_id, tp_id]


def test_stop_fires_exactly_at_the_trigger_and_the_take_profit_stays(ex: Exchange) -> None:
    base = ex.conserved()
    sl_id, tp_id = bob_long_with_stop_and_take_profit(ex)
    # Carol bids 0.1 at 58,800 (above the stop's worst price 58,000).
    [r] = ex.block(ex.tx(ex.carol, limit("buy", 58_800, 0.1)))
    assert r.code == 0 and r.events[0].type == "order_rested"
    # One tick short of the trigger (59,000.10 > 59,000): nothing fires.
    r = ex.block(oracle(ex, px(59_000) + 100_000))[0]
    assert r.code == 0, r.log
    assert triggered(ex) == []
    assert len(trig_keys(ex)) == 2 and ex.position(ex.bob) == (sz(0.1), 6_000 * USD)
    # Exactly at the trigger: the stop fires at the end of the block, selling into Carol's bid.
    bob_before = ex.collateral(ex.bob)
    r = ex.block(oracle(ex, px(59_000)))[0]
    assert r.code == 0, r.log
    evs = triggered(ex)
    assert [e["type"] for e in evs] == ["order_triggered", "fill"]
    assert evs[0] == {"type": "order_triggered", "kind": "stop_loss", "market": BTC,
                      "oracle_price": str(px(59_000)), "order": str(sl_id),
                      "owner": ex.bob.public_key.hex(), "side": "sell", "size": str(sz(0.1)),
                      "trigger_price": str(px(59_000))}
    assert (evs[1]["price"], evs[1]["size"], evs[1]["taker"], evs[1]["taker_side"]) == (
        str(px(58_800)), str(sz(0.1)), ex.bob.public_key.hex(), "sell")
    # Bob closed 0.1 bought for 6,000 USDC at 5,880: realized -120 USDC, taker fee 0.05% of
    # 5,880 = 2.94 USDC. Carol pays the maker fee 0.02% of 5,880 = 1.176 USDC.
    assert ex.position(ex.bob) == (0, 0)
    assert ex.collateral(ex.bob) == bob_before - 120 * USD - 2_940_000
    assert ex.position(ex.carol) == (sz(0.1), 5_880 * USD)
    assert ex.collateral(ex.carol) == START - 1_176_000
    assert ex.conserved() == base
    # Our choice: the take-profit is NOT cancelled with the stop (there is no OCO link); it
    # keeps waiting, and when it triggers with no position left it is cancelled.
    ov = ex.store.overlay()
    assert [o.id for o in account_orders(ov, ex.bob.public_key)] == [tp_id]
    tp = get_order(ov, ex.bob.public_key, tp_id)
    assert tp is not None and trig_keys(ex) == [trigger_key(tp)]
    ex.block(oracle(ex, px(62_000) - 100_000))
    assert triggered(ex) == []
    ex.block(oracle(ex, px(62_000)))
    evs = triggered(ex)
    assert [(e["type"], e["order"]) for e in evs] == [("order_triggered", str(tp_id)),
                                                      ("order_cancelled", str(tp_id))]
    assert evs[1]["reason"] == "no_position"
    assert trig_keys(ex) == [] and account_orders(ex.store.overlay(), ex.bob.public_key) == []
    assert [k for k, _ in ex.store.iter_state(b"ord/")] == []
    st = get_market_state(ex.store.overlay(), BTC)
    assert st is not None and st.open_interest_long == st.open_interest_short == sz(0.1)


def test_replay_of_trigger_blocks_gives_identical_state(tmp_path: Path) -> None:
    ex = Exchange(tmp_path / "a")
    fresh = Store(tmp_path / "b")
    try:
        bob_long_with_stop_and_take_profit(ex)
        ex.block(ex.tx(ex.carol, limit("buy", 58_800, 0.05)))
        # The stop fires for 0.1 but only 0.05 is bid: the rest is dropped (order_unfilled).
        ex.block(oracle(ex, px(58_000)))
        evs = triggered(ex)
        assert [e["type"] for e in evs] == ["order_triggered", "fill", "order_unfilled"]
        assert evs[2]["size"] == str(sz(0.05))
        assert ex.position(ex.bob) == (sz(0.05), 3_000 * USD)
        init_store(fresh, ex.g)
        for h in range(1, ex.height + 1):
            import_block(fresh, ex.store.block_bytes(h) or b"")
        assert fresh.dump_state() == ex.store.dump_state()
        for h in range(1, ex.height + 1):
            assert fresh.results(h) == ex.store.results(h)
    finally:
        ex.store.close()
        fresh.close()


def test_stop_loss_of_a_short_and_the_worst_price_limit(ex: Exchange) -> None:
    # Bob shorts 0.1 at 60,000 to Carol; his buy stop-loss fires when the oracle rises (u).
    ex.block(ex.tx(ex.carol, limit("buy", 60_000, 0.1)))
    ex.block(ex.tx(ex.bob, market("sell", 59_000, 0.1)))
    [r] = ex.block(ex.tx(ex.bob, tpsl("stop_loss", "buy", 61_000, 61_500, 0.2)))
    assert r.code == 0 and r.events[0].as_dict()["direction"] == "u"
    assert r.events[0].as_dict()["size"] == str(sz(0.1))  # capped at the position
    # The only ask is above the worst price: nothing trades, the order is dropped.
    ex.block(ex.tx(ex.alice, limit("sell", 61_600, 0.1)))
    ex.block(oracle(ex, px(61_200)))
    assert [e["type"] for e in triggered(ex)] == ["order_triggered", "order_unfilled"]
    assert ex.position(ex.bob) == (-sz(0.1), -6_000 * USD)
    assert trig_keys(ex) == []
    assert [o.price for o in best_orders(ex.store.overlay(), BTC, "sell")] == [px(61_600)]


def test_cancel_and_cancel_all_remove_trigger_keys(ex: Exchange) -> None:
    sl_id, tp_id = bob_long_with_stop_and_take_profit(ex)
    ex.block(ex.tx(ex.bob, limit("buy", 50_000, 0.1)))
    [r] = ex.block(ex.tx(ex.bob, CancelOrder(BTC, sl_id)))
    assert r.code == 0 and r.events[0].as_dict()["order"] == str(sl_id)
    ov = ex.store.overlay()
    tp = get_order(ov, ex.bob.public_key, tp_id)
    assert tp is not None and trig_keys(ex) == [trigger_key(tp)]
    assert get_order(ov, ex.bob.public_key, sl_id) is None
    [r] = ex.block(ex.tx(ex.bob, CancelAll(BTC)))
    assert [(e.type, e.as_dict()["order"]) for e in r.events][0] == ("order_cancelled",
                                                                     str(tp_id))
    assert len(r.events) == 2  # the take-profit and the limit bid, ascending id
    assert trig_keys(ex) == [] and account_orders(ex.store.overlay(), ex.bob.public_key) == []
    assert [k for k, _ in ex.store.iter_state(b"ord/")] == []
    assert [k for k, _ in ex.store.iter_state(b"book/")] == []


def test_trigger_orders_must_be_ioc_and_carry_a_trigger() -> None:
    with pytest.raises(InvalidTransaction, match="must be ioc"):
        PlaceOrder(BTC, "sell", "stop_loss", "gtc", px(58_000), sz(0.1), True,
                   px(59_000)).check(b"")
    with pytest.raises(InvalidTransaction, match="trigger_price"):
        PlaceOrder(BTC, "sell", "stop_loss", "ioc", px(58_000), sz(0.1), True, 0).check(b"")


def test_a_failed_triggered_order_is_cancelled_and_the_block_goes_on(ex: Exchange) -> None:
    # Carol gets a large deposit so that she can always take the other side.
    ex.block(ex.tx(ex.keys.faucet, Deposit(ex.carol.public_key, 100_000 * USD)))
    base = ex.conserved_scaled()
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, 3.1)))
    # Dave buys 3 BTC (180,000 USDC; fee 90): collateral 9,910, margin 9,000.
    [d, b] = ex.block(ex.tx(ex.dave, market("buy", 60_000, 3)),
                      ex.tx(ex.bob, market("buy", 60_000, 0.1)))
    assert d.code == b.code == 0, (d.log, b.log)
    # Both place stops at 50,000 (worst 40,000): Dave's first (lower id, processed first).
    t_dave = ex.tx(ex.dave, tpsl("stop_loss", "sell", 50_000, 40_000, 3))
    t_bob = ex.tx(ex.bob, tpsl("stop_loss", "sell", 50_000, 40_000, 0.1))
    ex.block(t_dave, t_bob)
    dave_sl, bob_sl = t_dave.nonce, t_bob.nonce
    ex.block(ex.tx(ex.carol, limit("buy", 56_000, 4)))
    dave_pos = ex.position(ex.dave)
    r = ex.block(oracle(ex, px(50_000)))[0]
    assert r.code == 0
    evs = triggered(ex)
    # Dave would realize 3 * (56,000 - 60,000) = -12,000 USDC > 9,910: his execution fails,
    # is reverted, and his stop is cancelled; Bob's stop then fills against the same bid.
    # Then, last in the block, the liquidation step closes Dave (bankrupt at 50,000).
    assert [(e["type"], e.get("order", e.get("maker_order"))) for e in evs] == [
        ("order_triggered", str(dave_sl)), ("order_cancelled", str(dave_sl)),
        ("order_triggered", str(bob_sl)), ("fill", evs[3]["maker_order"]),
        ("liquidation", None), ("liquidation_settled", None)]
    assert evs[1]["reason"] == "insufficient_margin"
    assert evs[3]["taker"] == ex.bob.public_key.hex() and evs[3]["size"] == str(sz(0.1))
    assert evs[4]["account"] == ex.dave.public_key.hex()
    assert evs[4]["size"] == str(dave_pos[0]) and evs[4]["price"] == str(px(50_000))
    assert ex.position(ex.dave) == (0, 0) and ex.collateral(ex.dave) == 0
    assert ex.position(ex.bob) == (0, 0)
    [bid] = list(best_orders(ex.store.overlay(), BTC, "buy"))
    assert bid.size == 4 * BTC_SIZE - sz(0.1)
    assert trig_keys(ex) == []
    assert ex.conserved_scaled() == base


def test_paused_markets_do_not_trigger(ex: Exchange) -> None:
    """Only ``active`` markets fire triggers (no transaction changes the mode today, so
    this checks the rule through the state directly)."""
    from dataclasses import replace

    from state.context import TxContext
    from state.exchange.markets import put_market_state
    from state.exchange.triggers import process_triggers
    from state.params import load_params

    bob_long_with_stop_and_take_profit(ex)
    ov = ex.store.overlay()
    st = get_market_state(ov, BTC)
    assert st is not None
    put_market_state(ov, BTC, replace(st, oracle_price=px(50_000), mode="paused"))
    ctx = TxContext(load_params(ov), ex.height + 1, 0)
    assert process_triggers(ov, ctx) == []
    put_market_state(ov, BTC, replace(st, oracle_price=px(50_000)))
    assert [e.type for e in process_triggers(ov, ctx)] == ["order_triggered", "order_unfilled"]


def test_trigger_placement_refusals(ex: Exchange) -> None:
    bob_long_with_stop_and_take_profit(ex)
    # Same side as the position: would increase it.
    [r] = ex.block(ex.tx(ex.bob, tpsl("take_profit", "buy", 55_000, 56_000, 0.1)))
    assert r.code == ResultCode.REDUCE_ONLY_WOULD_INCREASE
    [r] = ex.block(ex.tx(ex.bob, PlaceOrder(BTC, "sell", "stop_loss", "ioc", px(58_000) + 1,
                                            sz(0.1), True, px(59_000))))
    assert r.code == ResultCode.INVALID_PRICE
    assert len(trig_keys(ex)) == 2
