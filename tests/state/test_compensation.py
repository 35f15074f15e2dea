"""The compensation report measures harm against the counterfactual recovery (the same
rollback and replay without the operators' interventions), never against the abandoned
fork, and lists what money cannot undo (withdrawals paid out on the abandoned fork)."""

from __future__ import annotations

import pytest

from chain.tx import Deposit, Transfer, Withdraw
from state.exchange.margin import account_margin
from state.records import INSURANCE_ADDRESS
from state.recovery.archive import Exclusions
from state.recovery.compensation import build_report, counterfactual, report_id
from state.store_errors import OperationRefused
from tests.harness.exchange import START, USD, Exchange, limit, market, op_tx, oracle, px
from tests.harness.recovery import replay_all, roll_back, system_block


def test_harm_is_paid_exactly_and_only_where_the_interventions_caused_it(
        ex: Exchange) -> None:
    alice, bob, carol, dave, erin = (k.public_key for k in ex.keys.accounts)
    ex.block(ex.tx(ex.keys.faucet, Deposit(INSURANCE_ADDRESS, 10_000 * USD)))
    ex.block(ex.tx(ex.erin, limit("buy", 59_000, 0.1)))  # rests before the fork
    h = ex.height
    # The abandoned fork: Bob sells into Erin's bid, the price rises (Erin's long gains),
    # Carol pays Dave, and Dave withdraws everything he has, Carol's payment included.
    ex.block(ex.tx(ex.bob, market("sell", 58_000, 0.1)))
    ex.block(oracle(ex, px(62_000)))
    suspicious = ex.tx(ex.carol, Transfer(dave, 500 * USD))
    ex.block(suspicious)
    withdrawal = ex.tx(ex.dave, Withdraw(START + 500 * USD))
    [w] = ex.block(withdrawal)
    assert w.code == 0  # paid out on the abandoned fork
    # The recovery: roll back, the operators cancel every order (Erin's bid), replay with
    # Carol's transfer excluded.
    roll_back(ex, h)
    [c] = system_block(ex, op_tx(ex, "cancel_orders", {"keep": "take_profit,stop_loss"}))
    assert [e.as_dict()["owner"] for e in c.events[:-1]] == [erin.hex()]
    replay_all(ex, 0, Exclusions(tx_hashes=frozenset({suspicious.hash})), fork_height=h)
    report = build_report(ex.store, 0)
    rows = {bytes.fromhex(r["account"]): r for r in report["accounts"]}

    # Erin: her bid, cancelled by the operators, would have been filled (the counterfactual
    # has no cancel-orders): long 0.1 at 59,000, marked at 62,000 = +300 USDC, less the
    # maker fee (0.02% of 5,900 = 1.18 USDC). She is paid exactly that difference.
    assert rows[erin]["orders_cancelled_by_operator"] == 1
    assert int(rows[erin]["equity_recovered"]) == START  # flat on the recovered chain
    assert int(rows[erin]["equity_counterfactual"]) == START + 300 * USD - 1_180_000
    assert rows[erin]["harm"] == rows[erin]["compensation"] == str(300 * USD - 1_180_000)
    # Bob would have lost on that trade: negative harm, nothing paid. Carol's transfer is
    # excluded on both sides (an exclusion is the operators' judgement, not harm): Carol and
    # Dave come out the same on both, nothing paid.
    assert int(rows[bob]["harm"]) < 0 and rows[bob]["compensation"] == "0"
    for who in (carol, dave):
        assert rows[who]["harm"] == rows[who]["compensation"] == "0", rows[who]
    assert rows[carol]["txs_excluded"] == 1
    assert alice not in rows  # untouched by either side
    assert report["totals"]["accounts_to_compensate"] == 1
    assert report["totals"]["compensation_total"] == str(300 * USD - 1_180_000)
    # Dave's withdrawal left the chain on the abandoned fork; on the recovered chain it
    # fails (without Carol's transfer he does not have that much): listed, never silent.
    [x] = report["external_effects"]
    assert (x["kind"], x["account"], x["amount"], x["tx"]) == (
        "withdrawal", dave.hex(), str(START + 500 * USD), withdrawal.hash.hex())
    assert x["recovered"].startswith("failed (insufficient_funds)")
    # The recovered equity the report uses is the chain's own (head = the replayed height).
    assert int(rows[dave]["equity_recovered"]) == account_margin(ex.store.overlay(),
                                                                 dave).equity
    # Deterministic: computed again (and after the chain moves on) it is the same report.
    ex_block_after(ex)
    again = build_report(ex.store, 0)
    assert again == report and again["id"] == report_id(report)


def ex_block_after(ex: Exchange) -> None:
    """The chain resumes and moves on after the replay."""
    system_block(ex, ex.tx(ex.alice, limit("sell", 63_000, 0.1)))


def test_no_report_before_the_replay(ex: Exchange) -> None:
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, 0.5)))
    h = ex.height
    ex.block(ex.tx(ex.bob, market("buy", 61_000, 0.1)))
    roll_back(ex, h)
    with pytest.raises(OperationRefused, match="has not been replayed yet"):
        build_report(ex.store, 0)


def test_an_exclusion_is_not_harm_so_no_windfall_of_an_excluded_transaction_is_paid(
        ex: Exchange) -> None:
    """A bad oracle print is excluded from the replay. Measured against a chain where it
    happened, the account that would have profited from it (Alice, short: the print is far
    below the market) would show that profit as harm; the counterfactual keeps the
    exclusion, so nobody is paid for a transaction the operators ruled out."""
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, 1)))
    ex.block(ex.tx(ex.bob, market("buy", 61_000, 1)))  # Alice short 1 BTC, Bob long ~6x
    h = ex.height
    bad_print = oracle(ex, px(30_000))
    ex.block(bad_print)
    roll_back(ex, h)
    replay_all(ex, 0, Exclusions(tx_hashes=frozenset({bad_print.hash})), fork_height=h)
    report = build_report(ex.store, 0)
    rows = {r["account"]: r for r in report["accounts"]}
    assert rows[ex.bob.public_key.hex()]["liquidated_only_abandoned"] is True  # the print
    assert report["totals"]["compensation_total"] == "0"
    # Without the exclusion the counterfactual would hold Alice's windfall from the print:
    alice = ex.alice.public_key
    cf = counterfactual(ex.store, 0, h, Exclusions())
    try:
        windfall = account_margin(cf.overlay(), alice).equity - account_margin(
            ex.store.overlay(), alice).equity
    finally:
        cf.close()
    assert windfall > 1_000 * USD  # what the literal "no exclusions" rule would have paid
    assert alice.hex() not in rows or rows[alice.hex()]["compensation"] == "0"
