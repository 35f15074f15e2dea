"""Withdrawals: debit collateral, never below the initial margin, counted in ``ctx.withdrawn``.

BTC market as in test_exchange.py: IMF 5%, taker fee 0.05%.
"""

from __future__ import annotations

import pytest

from chain.block import Event
from chain.codes import ResultCode
from chain.errors import InvalidTransaction
from chain.tx import Deposit, Withdraw
from state import block_end as blockend
from state.context import TxContext
from state.overlay import Overlay
from tests.harness.exchange import START, USD, Exchange, limit, market


def test_withdraw_debits_collateral_and_emits_an_event(ex: Exchange) -> None:
    [r] = ex.block(ex.tx(ex.bob, Withdraw(1_000 * USD)))
    assert r.code == 0, r.log
    assert [(e.type, e.as_dict()) for e in r.events] == [
        ("withdraw", {"amount": str(1_000 * USD), "sender": ex.bob.public_key.hex()})]
    assert ex.collateral(ex.bob) == START - 1_000 * USD


def test_withdraw_more_than_the_balance_is_insufficient_funds(ex: Exchange) -> None:
    [r] = ex.block(ex.tx(ex.bob, Withdraw(START + 1)))
    assert r.code == ResultCode.INSUFFICIENT_FUNDS
    assert r.log == f"balance {START} is less than {START + 1}"
    assert ex.collateral(ex.bob) == START
    # The whole balance may go when no position is held.
    [r] = ex.block(ex.tx(ex.bob, Withdraw(START)))
    assert r.code == 0 and ex.collateral(ex.bob) == 0


def test_zero_withdraw_fails_check() -> None:
    with pytest.raises(InvalidTransaction, match="withdraw amount must be positive"):
        Withdraw(0).check(b"")


def test_withdraw_never_leaves_a_position_below_initial_margin(ex: Exchange) -> None:
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, 1)))
    [r] = ex.block(ex.tx(ex.bob, market("buy", 60_000, 1)))
    assert r.code == 0, r.log
    # Long 1 BTC at 60,000 with the oracle at 60,000: upnl 0, initial margin 5% = 3,000 USDC;
    # collateral 10,000 − taker fee 30 = 9,970. At most 6,970 USDC may leave.
    assert ex.collateral(ex.bob) == START - 30 * USD
    [r] = ex.block(ex.tx(ex.bob, Withdraw(6_970 * USD + 1)))
    assert r.code == ResultCode.INSUFFICIENT_MARGIN
    assert r.log == f"equity {3_000 * USD - 1} is below the initial margin {3_000 * USD}"
    assert ex.collateral(ex.bob) == START - 30 * USD
    [r] = ex.block(ex.tx(ex.bob, Withdraw(6_970 * USD)))
    assert r.code == 0, r.log
    assert ex.collateral(ex.bob) == 3_000 * USD


def test_withdrawn_counter_and_conservation_in_a_block(ex: Exchange,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Read ``ctx.withdrawn`` / ``ctx.deposited`` back at the end of a real block (an extra
    end-of-block step captures the context) and check the value they account for."""
    seen: list[tuple[int, int]] = []

    def capture(view: Overlay, ctx: TxContext) -> list[Event]:
        seen.append((ctx.deposited, ctx.withdrawn))
        return []

    real = blockend.steps
    monkeypatch.setattr(blockend, "steps", lambda: [*real(), capture])
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, 1)))
    ex.block(ex.tx(ex.bob, market("buy", 60_000, 1)))
    before = ex.conserved()
    seen.clear()
    results = ex.block(
        ex.tx(ex.keys.faucet, Deposit(ex.carol.public_key, 500 * USD)),
        ex.tx(ex.carol, Withdraw(1_200 * USD)),
        ex.tx(ex.dave, Withdraw(START + 1)),            # fails: insufficient funds
        ex.tx(ex.bob, Withdraw(9_000 * USD)),           # fails: below initial margin
        ex.tx(ex.bob, Withdraw(250 * USD)),
    )
    assert [r.code for r in results] == [0, 0, ResultCode.INSUFFICIENT_FUNDS,
                                         ResultCode.INSUFFICIENT_MARGIN, 0]
    # The block is applied twice (built, then imported): the same counters both times.
    assert seen == [(500 * USD, 1_450 * USD)] * 2
    deposited, withdrawn = seen[-1]
    # Σ collateral − Σ cost basis + fee pool moves by exactly deposits − withdrawals.
    assert ex.conserved() - before == deposited - withdrawn
