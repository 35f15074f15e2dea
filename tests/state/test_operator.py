"""Operator transactions: selective order cancellation, market modes with a reopening band and
suspended liquidations, compensation payments, and every refusal."""

from __future__ import annotations

import pytest

from chain.codes import ResultCode
from chain.crypto import PrivateKey
from chain.tx import Deposit
from state.exchange.book import account_orders
from state.exchange.markets import get_market_state
from state.exchange.operator_commands import MAX_AGE_MS, MAX_AHEAD_MS
from state.records import INSURANCE_ADDRESS
from tests.harness.exchange import (
    BTC,
    USD,
    Exchange,
    limit,
    liq_events,
    op_tx,
    open_long,
    oracle,
    px,
    tpsl,
)


def test_cancel_orders_keeps_take_profit_and_stop_loss(ex: Exchange) -> None:
    open_long(ex, 1)  # Dave long 1 BTC (Alice short)
    ex.block(ex.tx(ex.dave, tpsl("stop_loss", "sell", 55_000, 50_000, 1)),
             ex.tx(ex.dave, tpsl("take_profit", "sell", 65_000, 64_000, 1)),
             ex.tx(ex.bob, limit("buy", 59_000, 0.1)),
             ex.tx(ex.carol, limit("sell", 61_000, 0.2)),
             ex.tx(ex.dave, limit("buy", 58_000, 0.1)))
    [r] = ex.block(op_tx(ex, "cancel_orders", {"keep": "take_profit,stop_loss"}))
    assert r.code == 0, r.log
    evs = [e.as_dict() for e in r.events]
    assert [e["reason"] for e in evs[:-1]] == ["operator"] * 3
    assert [e["size"] for e in evs[:-1]] == ["10000000", "10000000", "20000000"]  # bids, asks
    assert r.events[-1].type == "operator_cancel_orders"
    assert evs[-1] == {"cancelled": "3", "keep": "take_profit,stop_loss", "market": "*"}
    left = account_orders(ex.store.overlay(), ex.dave.public_key)
    assert sorted(o.kind for o in left) == ["stop_loss", "take_profit"]
    assert account_orders(ex.store.overlay(), ex.bob.public_key) == []
    # Keeping nothing cancels the take-profit and stop-loss orders too.
    [r] = ex.block(op_tx(ex, "cancel_orders", {"keep": ""}))
    assert r.code == 0 and r.events[-1].as_dict()["cancelled"] == "2"
    assert account_orders(ex.store.overlay(), ex.dave.public_key) == []


def test_market_mode_reopening_band_and_suspended_liquidations(ex: Exchange) -> None:
    open_long(ex, 1)
    [r] = ex.block(op_tx(ex, "market_mode", {"market": "*", "mode": "post-only",
                                             "price_band_ppm": "10000",
                                             "liquidation_wait": "2"}))
    assert r.code == 0, r.log
    st = get_market_state(ex.store.overlay(), BTC)
    assert st is not None and (st.mode, st.price_band_ppm, st.liquidation_wait) == (
        "post-only", 10_000, 2)
    # Post-only only, and within 1% of the oracle (60,000): 60,600 ok, 60,700 refused.
    [a, b, c] = ex.block(ex.tx(ex.bob, limit("sell", 60_600, 0.1, tif="post_only")),
                         ex.tx(ex.bob, limit("sell", 60_700, 0.1, tif="post_only")),
                         ex.tx(ex.bob, limit("sell", 60_600, 0.1)))
    assert a.code == 0, a.log
    assert b.code == ResultCode.INVALID_PRICE and "band" in b.log
    assert c.code == ResultCode.MARKET_CLOSED
    # Dave is below maintenance at 51,500, but liquidations wait for 2 fresh prices.
    ex.block(oracle(ex, px(51_500)))
    assert liq_events(ex) == []
    assert get_market_state(ex.store.overlay(), BTC).liquidation_wait == 1  # type: ignore[union-attr]
    ex.block(oracle(ex, px(51_500)))
    assert [e["type"] for e in liq_events(ex)] == ["liquidation", "liquidation_settled"]
    [r] = ex.block(op_tx(ex, "market_mode", {"market": BTC, "mode": "active"}))
    st = get_market_state(ex.store.overlay(), BTC)
    assert r.code == 0 and st is not None and st.mode == "active"
    assert st.price_band_ppm == 10_000  # left as it was: only the mode was given


def test_compensation_is_paid_from_the_insurance_fund(ex: Exchange) -> None:
    ex.block(ex.tx(ex.keys.faucet, Deposit(INSURANCE_ADDRESS, 1_000 * USD)))
    base = ex.conserved_scaled()
    before = (ex.collateral(ex.alice), ex.collateral(ex.bob))
    args = {"ref": "era-1", f"pay.{ex.alice.public_key.hex()}": str(300 * USD),
            f"pay.{ex.bob.public_key.hex()}": str(200 * USD)}
    [r] = ex.block(op_tx(ex, "compensate", args))
    assert r.code == 0, r.log
    assert (ex.collateral(ex.alice), ex.collateral(ex.bob)) == (before[0] + 300 * USD,
                                                                before[1] + 200 * USD)
    paid = {e.as_dict()["account"]: e.as_dict()["amount"] for e in r.events}
    assert paid == {ex.alice.public_key.hex(): str(300 * USD),
                    ex.bob.public_key.hex(): str(200 * USD)}
    assert [e.as_dict()["account"] for e in r.events] == sorted(paid)  # address order
    [r] = ex.block(op_tx(ex, "compensate", {f"pay.{ex.alice.public_key.hex()}":
                                            str(501 * USD)}))
    assert r.code == ResultCode.INSUFFICIENT_FUNDS
    assert ex.conserved_scaled() == base  # it moves money, never makes any


@pytest.mark.parametrize("case", ["sender", "stranger_sig", "wrong_chain", "expired",
                                  "ten_years_ahead", "replayed"])
def test_operator_refusals(ex: Exchange, case: str) -> None:
    stranger = PrivateKey.generate()
    head = ex.store.head()
    assert head is not None
    ex.block(ex.tx(ex.bob, limit("buy", 59_000, 0.1)))
    args = {"keep": ""}
    if case == "sender":
        t = op_tx(ex, "cancel_orders", args, sender=ex.alice)
    elif case == "stranger_sig":
        t = op_tx(ex, "cancel_orders", args, keys=[stranger])
    elif case == "wrong_chain":
        t = op_tx(ex, "cancel_orders", args, chain_id="other-chain")
    elif case == "expired":
        t = op_tx(ex, "cancel_orders", args, issued_at=head.time - 4_000_000)
    elif case == "ten_years_ahead":  # issue 11 finding 9: accepted before
        t = op_tx(ex, "cancel_orders", args, issued_at=head.time + 10 * 365 * 86_400_000)
    else:
        ex.block(op_tx(ex, "cancel_orders", {"keep": "limit"}, nonce=777))
        t = op_tx(ex, "cancel_orders", args, nonce=777)
    [r] = ex.block(t)
    assert r.code == ResultCode.UNAUTHORIZED, (case, r.code, r.log)
    assert len(account_orders(ex.store.overlay(), ex.bob.public_key)) == 1  # nothing happened


@pytest.mark.parametrize(("offset", "ok"), [(-MAX_AGE_MS, True), (-MAX_AGE_MS - 1, False),
                                            (MAX_AHEAD_MS, True), (MAX_AHEAD_MS + 1, False)])
def test_operator_command_window_is_both_ways_around_the_block_time(
        ex: Exchange, offset: int, ok: bool) -> None:
    """``issued_at`` within [block time - MAX_AGE_MS, block time + MAX_AHEAD_MS], bounds
    included; the block time is the head's + 1000 ms in this harness."""
    head = ex.store.head()
    assert head is not None
    ex.block(ex.tx(ex.bob, limit("buy", 59_000, 0.1)))
    bt = head.time + 2000  # two blocks on: the order's, then the operator's
    [r] = ex.block(op_tx(ex, "cancel_orders", {"keep": ""}, issued_at=bt + offset))
    assert (r.code == 0) == ok, r.log
    assert len(account_orders(ex.store.overlay(), ex.bob.public_key)) == (0 if ok else 1)
    if not ok:
        assert "ms after the block time" in r.log or "ms before the block time" in r.log
