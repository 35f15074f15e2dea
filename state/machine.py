"""The state transition for one transaction: pure function of (state, params, tx, block time).

Two stages, after ethereum/execution-specs: block-validity rules (right chain, a sender
with an account record or a genesis key, next nonce) raise and make the whole block invalid;
execution rules (enough balance, permitted sender) produce a failed ``TxResult`` whose writes
are reverted but whose nonce is consumed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import cast

from chain.block import Attr, Event, TxResult
from chain.codes import ResultCode
from chain.errors import InvalidTransaction, NonceMismatch
from chain.tx import (
    CancelAll,
    CancelOrder,
    Deposit,
    OperatorCall,
    OraclePrice,
    PlaceOrder,
    Transaction,
    Transfer,
    Withdraw,
)
from state.accounts import get_account, includable_account, put_account
from state.context import TxContext
from state.exchange.collateral import withdraw
from state.exchange.margin import check_initial_margin
from state.exchange.markets import get_market, get_market_state, put_market_state
from state.exchange.matching import cancel_all, cancel_order, place_order
from state.exchange.operator_commands import operator_call
from state.execution_failure import ExecutionFailure
from state.overlay import Overlay
from state.params import ChainParams
from state.records import Account

U64_MAX = 2**64 - 1


def _credit(view: Overlay, address: bytes, amount: int) -> None:
    acct = get_account(view, address)
    if acct.balance + amount > U64_MAX:
        raise ExecutionFailure(ResultCode.OVERFLOW, "balance would exceed 2**64-1")
    put_account(view, address, Account(acct.balance + amount, acct.nonce))


def _debit(view: Overlay, address: bytes, amount: int) -> None:
    acct = get_account(view, address)
    if acct.balance < amount:
        raise ExecutionFailure(
            ResultCode.INSUFFICIENT_FUNDS,
            f"balance {acct.balance} is less than {amount}",
        )
    put_account(view, address, Account(acct.balance - amount, acct.nonce))


def _transfer(view: Overlay, ctx: TxContext, tx: Transaction) -> list[Event]:
    p = cast(Transfer, tx.payload)  # HANDLERS dispatches on the payload's type
    _debit(view, tx.sender, p.amount)
    _credit(view, p.to, p.amount)
    if check_initial_margin(view, tx.sender):  # collateral backing positions may not leave
        ctx.margin_touched.add(tx.sender)
    return [Event("transfer", (Attr("amount", str(p.amount)), Attr("recipient", p.to.hex()),
                               Attr("sender", tx.sender.hex())))]


def _deposit(view: Overlay, ctx: TxContext, tx: Transaction) -> list[Event]:
    p = cast(Deposit, tx.payload)
    if tx.sender != ctx.params.faucet:
        raise ExecutionFailure(ResultCode.UNAUTHORIZED, "only the faucet key may deposit")
    _credit(view, p.to, p.amount)
    return [Event("deposit", (Attr("amount", str(p.amount)), Attr("recipient", p.to.hex())))]


def _oracle_price(view: Overlay, ctx: TxContext, tx: Transaction) -> list[Event]:
    p = cast(OraclePrice, tx.payload)
    if tx.sender not in ctx.params.oracles:
        raise ExecutionFailure(ResultCode.UNAUTHORIZED, "only genesis oracle keys may post prices")
    market = get_market(view, p.market)
    st = get_market_state(view, p.market)
    if market is None or st is None:
        raise ExecutionFailure(ResultCode.UNKNOWN_MARKET, f"no market {p.market!r}")
    if p.time <= st.oracle_time:
        raise ExecutionFailure(ResultCode.STALE_PRICE,
                               f"observed at {p.time}, not after the last price ({st.oracle_time})")
    if p.time > ctx.time:
        raise ExecutionFailure(ResultCode.FUTURE_PRICE,
                               f"observed at {p.time}, after the block time {ctx.time}")
    if ctx.time - p.time > market.oracle_max_age_ms:
        raise ExecutionFailure(ResultCode.STALE_PRICE,
                               f"observed at {p.time}, older than {market.oracle_max_age_ms} ms "
                               f"at block time {ctx.time}")
    put_market_state(view, p.market, replace(
        st, oracle_price=p.price, oracle_time=p.time,
        liquidation_wait=max(0, st.liquidation_wait - 1)))
    return [Event("oracle_price", (Attr("market", p.market), Attr("price", str(p.price)),
                                   Attr("time", str(p.time))))]


Handler = Callable[[Overlay, TxContext, Transaction], list[Event]]

HANDLERS: dict[str, Handler] = {
    Transfer.TYPE: _transfer,
    Deposit.TYPE: _deposit,
    OraclePrice.TYPE: _oracle_price,
    PlaceOrder.TYPE: lambda view, ctx, tx: place_order(view, ctx.height, ctx.tx_index, tx),
    CancelOrder.TYPE: lambda view, ctx, tx: cancel_order(view, tx),
    CancelAll.TYPE: lambda view, ctx, tx: cancel_all(view, tx),
    Withdraw.TYPE: lambda view, ctx, tx: withdraw(view, tx, ctx.margin_touched),
    OperatorCall.TYPE: lambda view, ctx, tx: _operator_call(view, ctx, tx),
}


def _operator_call(view: Overlay, ctx: TxContext, tx: Transaction) -> list[Event]:

    return operator_call(view, ctx, tx)


def check_nonce(view: Overlay, params: ChainParams, tx: Transaction) -> Account:
    """Block-validity rules: the sender may send (an account record or a genesis key:
    state/accounts.py) and the transaction carries the sender's next nonce."""
    acct = includable_account(view, params, tx.sender)
    if tx.nonce != acct.nonce:
        raise NonceMismatch(acct.nonce, tx.nonce)
    return acct


def apply_tx(view: Overlay, ctx: TxContext, tx: Transaction) -> TxResult:
    """Apply one transaction; raises only for block-invalid transactions."""
    if tx.chain_id != ctx.params.chain_id:
        raise InvalidTransaction(f"transaction for chain {tx.chain_id!r}", reason="wrong_chain")
    acct = check_nonce(view, ctx.params, tx)
    start = view.checkpoint()
    put_account(view, tx.sender, Account(acct.balance, acct.nonce + 1))
    mark = view.checkpoint()
    try:
        tx.payload.check(tx.sender)
        events = HANDLERS[tx.type](view, ctx, tx)
    except InvalidTransaction as e:
        view.revert(mark)
        return TxResult(int(ResultCode.INVALID_PAYLOAD), e.message, ())
    except ExecutionFailure as e:
        view.revert(mark)
        return TxResult(int(e.code), e.log, ())
    finally:
        view.release(start)  # the transaction's writes are final: no revert goes back here
    if type(tx.payload) is Deposit:
        ctx.deposited += cast(Deposit, tx.payload).amount
    elif type(tx.payload) is Withdraw:
        ctx.withdrawn += cast(Withdraw, tx.payload).amount
    return TxResult(0, "", tuple(events))
