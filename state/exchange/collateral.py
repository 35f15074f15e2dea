"""Collateral: crediting and debiting an account's settlement balance, the exchange's own
pools (fees, funding dust), funding settlement into collateral, and withdrawals.
"""

from __future__ import annotations

from typing import cast

from chain.block import Attr, Event
from chain.codes import ResultCode
from chain.tx import Transaction, Withdraw
from state.accounts import get_account, put_account
from state.exchange.funding import Settlement
from state.exchange.margin import check_initial_margin
from state.exchange.positions import NO_SETTLEMENT, get_position, settle_funding
from state.execution_failure import ExecutionFailure
from state.overlay import Overlay
from state.records import FUNDING_DUST, INSURANCE_ADDRESS, Account, MarketState, Pool, Position
from state.scales import FUNDING_DIVISOR

U64_MAX = 2**64 - 1


def pool_add(view: Overlay, key: bytes, amount: int) -> None:
    if amount == 0:
        return
    cur = view.get_obj(key, Pool)
    new = (cur.amount if cur else 0) + amount
    if key == FUNDING_DUST and new >= FUNDING_DIVISOR:
        # Whole micro-USDC of dust move to the insurance fund; the remainder stays < 10^14.
        credit(view, INSURANCE_ADDRESS, new // FUNDING_DIVISOR)
        new %= FUNDING_DIVISOR
    if not 0 <= new <= U64_MAX:
        raise ExecutionFailure(ResultCode.OVERFLOW, "pool balance out of range")
    view.put_obj(key, Pool(new))


def credit(view: Overlay, owner: bytes, delta: int) -> None:
    acct = get_account(view, owner)
    new = acct.balance + delta
    if new < 0:
        raise ExecutionFailure(ResultCode.INSUFFICIENT_MARGIN,
                           f"collateral {acct.balance} cannot cover {-delta}")
    if new > U64_MAX:
        raise ExecutionFailure(ResultCode.OVERFLOW, "balance would exceed 2**64-1")
    put_account(view, owner, Account(new, acct.nonce))


def settle_position(view: Overlay, owner: bytes, market: str, st: MarketState) -> Position:
    """The owner's position in ``market`` with funding settled up to the current index."""
    pos = get_position(view, owner, market)
    if pos is None:
        return Position(0, 0, st.funding_index, 0)
    pos, paid = settle_funding(pos, st.funding_index)
    if paid is not NO_SETTLEMENT:
        apply_settlement(view, owner, paid)
    return pos


def apply_settlement(view: Overlay, owner: bytes, s: Settlement) -> None:
    if s.collateral_delta:
        credit(view, owner, s.collateral_delta)
    if s.dust_scaled:
        pool_add(view, FUNDING_DUST, s.dust_scaled)


def withdraw(view: Overlay, tx: Transaction, margin_touched: set[bytes]) -> list[Event]:
    """Debit the sender's collateral; refused if the balance is short, or if the account
    holds positions and its equity after the debit is below their initial margin. A sender
    with positions is added to ``margin_touched`` (see state/exchange/liquidation.py)."""
    p = cast(Withdraw, tx.payload)
    acct = get_account(view, tx.sender)
    if acct.balance < p.amount:
        raise ExecutionFailure(ResultCode.INSUFFICIENT_FUNDS,
                               f"balance {acct.balance} is less than {p.amount}")
    put_account(view, tx.sender, Account(acct.balance - p.amount, acct.nonce))
    if check_initial_margin(view, tx.sender):
        margin_touched.add(tx.sender)
    return [Event("withdraw", (Attr("amount", str(p.amount)),
                               Attr("sender", tx.sender.hex())))]
