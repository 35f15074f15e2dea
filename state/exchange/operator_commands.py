"""Operator commands executed by the state machine (``operator`` transactions).

The transaction carries an admin envelope (chain/admin.py) signed by at least the genesis
threshold of operators; its sender must be an operator too. Checked here, deterministically
(every node re-checks them on import): the chain id, the signatures against the genesis
operators and threshold, the issue time against the BLOCK time, never a clock (at most
``MAX_AGE_MS`` before it, so an old signed command cannot be used later, and at most
``MAX_AHEAD_MS`` after it, so a command dated years ahead is not a standing authorization), and
the envelope's nonce, which may be used once per chain (``opn/`` + nonce(8) in the state).
During a recovery the chain's clock runs behind the wall clock (blocks made while halted get
the head's time + 1 ms, replayed blocks keep their times), so the operators date a command
for the block it is meant for, not by their wall clock: the admin endpoint tells them that
time (``admin_info`` ``operator_block_time_ms``). Failures are ordinary failed results (code 2
``unauthorized``, or 1 ``invalid_payload`` for bad arguments).

Commands:

* ``cancel_orders`` (``keep``: comma-separated kinds among ``limit``, ``take_profit``,
  ``stop_loss`` to keep, may be empty; ``market``: one symbol, or absent for all): cancels every
  open order not of a kept kind, market by market in symbol order, resting orders by book
  side (bids, then asks, each best first) then take-profit/stop-loss orders by trigger
  direction (``u`` then ``d``); one ``order_cancelled`` event (reason ``operator``) each,
  then ``operator_cancel_orders`` with the count.
* ``market_mode`` (``market``: a symbol or ``*`` for every market; ``mode``; optional
  ``price_band_ppm`` and ``liquidation_wait``, each left as it is when absent): sets them;
  ``market_mode`` event.
* ``compensate`` (``ref``: the compensation report's id; ``pay.<address hex>``: amount in
  micro-USDC, one per account): pays each from the insurance fund in address order; the whole
  transaction fails if the fund cannot pay all of them. ``compensation`` event per payment.
"""

from __future__ import annotations

import struct
from typing import cast

from chain.admin import AdminEnvelope, AdminRefused, check_signatures
from chain.block import Attr, Event
from chain.codes import ResultCode
from chain.tx import OperatorCall, Transaction
from state.accounts import get_account, put_account
from state.context import TxContext
from state.exchange.book import DIRECTIONS, book_prefix, order_key_of_index, remove, trigger_prefix
from state.exchange.markets import get_market_state, put_market_state
from state.exchange.matching import cancel_event
from state.execution_failure import ExecutionFailure
from state.overlay import Overlay
from state.records import INSURANCE_ADDRESS, MARKET, MODES, Account, Market, Order
from state.scales import PPM

MAX_AGE_MS = 3_600_000
"""An operator command may be issued at most this long before the block time (1 hour)."""


MAX_AHEAD_MS = 300_000
"""... and at most this long after it (5 minutes: clock skew between operators and node)."""


OPERATOR_NONCE = b"opn/"


KINDS = ("limit", "take_profit", "stop_loss")


U64_MAX = 2**64 - 1


_U64 = struct.Struct(">Q")


def _bad(msg: str) -> ExecutionFailure:
    return ExecutionFailure(ResultCode.INVALID_PAYLOAD, msg)


def _uint(v: str | None, name: str, hi: int) -> int:
    if v is None:
        return 0
    if not (v.isascii() and v.isdigit()) or len(v) > 20 or int(v) > hi:
        raise _bad(f"{name} must be an integer within 0..{hi}")
    return int(v)


def _authorize(view: Overlay, ctx: TxContext, tx: Transaction) -> AdminEnvelope:
    p = ctx.params
    if tx.sender not in p.operators:
        raise ExecutionFailure(ResultCode.UNAUTHORIZED, "the sender is not a genesis operator")
    env = AdminEnvelope.decode(cast(OperatorCall, tx.payload).envelope)
    cmd = env.command
    if cmd.chain_id != p.chain_id:
        raise ExecutionFailure(ResultCode.UNAUTHORIZED, f"command for chain {cmd.chain_id!r}")
    try:
        check_signatures(cmd.signed_bytes(), env.signatures, p.operators,
                         p.operator_threshold, "command")
    except AdminRefused as e:
        raise ExecutionFailure(ResultCode.UNAUTHORIZED, f"{e.reason}: {e.message}") from e
    if cmd.issued_at + MAX_AGE_MS < ctx.time:
        raise ExecutionFailure(ResultCode.UNAUTHORIZED,
                               f"issued at {cmd.issued_at}, more than {MAX_AGE_MS} ms before "
                               f"the block time {ctx.time}")
    if cmd.issued_at > ctx.time + MAX_AHEAD_MS:
        raise ExecutionFailure(ResultCode.UNAUTHORIZED,
                               f"issued at {cmd.issued_at}, more than {MAX_AHEAD_MS} ms after "
                               f"the block time {ctx.time}")
    key = OPERATOR_NONCE + _U64.pack(cmd.nonce)
    if view.get(key) is not None:
        raise ExecutionFailure(ResultCode.UNAUTHORIZED, f"nonce {cmd.nonce} already used")
    view.put(key, b"")
    return env


def _markets(view: Overlay, which: str | None) -> list[Market]:
    out = []
    for mkey in list(view.iter_ordered(MARKET)):
        m = view.get_obj(mkey, Market)
        if m is not None and (which is None or which == "*" or m.symbol == which):
            out.append(m)
    if which not in (None, "*") and not out:
        raise ExecutionFailure(ResultCode.UNKNOWN_MARKET, f"no market {which!r}")
    return out


def _cancel_orders(view: Overlay, args: dict[str, str]) -> list[Event]:
    keep = [k for k in args.get("keep", "").split(",") if k]
    for k in keep:
        if k not in KINDS:
            raise _bad(f"keep must list kinds among {KINDS}, got {k!r}")
    events: list[Event] = []
    for m in _markets(view, args.get("market")):
        prefixes = []
        if "limit" not in keep:
            prefixes += [book_prefix(m.symbol, "buy"), book_prefix(m.symbol, "sell")]
        if not {"take_profit", "stop_loss"} <= set(keep):
            prefixes += [trigger_prefix(m.symbol, d) for d in DIRECTIONS]
        for prefix in prefixes:
            doomed: list[Order] = []
            for key in view.iter_ordered(prefix):
                o = view.get_obj(order_key_of_index(key), Order)
                if o is not None and o.kind not in keep:
                    doomed.append(o)
            for o in doomed:
                remove(view, o)
                events.append(cancel_event(o, "operator"))
    events.append(Event("operator_cancel_orders", (
        Attr("cancelled", str(len(events))), Attr("keep", ",".join(keep)),
        Attr("market", args.get("market", "*")))))
    return events


def _market_mode(view: Overlay, args: dict[str, str]) -> list[Event]:
    mode = args.get("mode", "")
    if mode not in MODES:
        raise _bad(f"mode must be one of {MODES}")
    band_arg, wait_arg = args.get("price_band_ppm"), args.get("liquidation_wait")
    band = _uint(band_arg, "price_band_ppm", PPM)
    wait = _uint(wait_arg, "liquidation_wait", 1_000_000)
    which = args.get("market")
    if not which:
        raise _bad("market is required (a symbol, or * for every market)")
    events = []
    from dataclasses import replace

    for m in _markets(view, which):
        st = get_market_state(view, m.symbol)
        if st is None:
            continue
        new = replace(st, mode=mode,
                      price_band_ppm=st.price_band_ppm if band_arg is None else band,
                      liquidation_wait=st.liquidation_wait if wait_arg is None else wait)
        put_market_state(view, m.symbol, new)
        events.append(Event("market_mode", (
            Attr("liquidation_wait", str(new.liquidation_wait)), Attr("market", m.symbol),
            Attr("mode", mode), Attr("price_band_ppm", str(new.price_band_ppm)))))
    return events


def _compensate(view: Overlay, args: dict[str, str]) -> list[Event]:
    ref = args.get("ref", "")
    pays: list[tuple[bytes, int]] = []
    for k, v in sorted(args.items()):
        if k in ("ref",):
            continue
        if not k.startswith("pay."):
            raise _bad(f"unknown argument {k!r}")
        try:
            addr = bytes.fromhex(k[4:])
        except ValueError:
            addr = b""
        if len(addr) != 32:
            raise _bad(f"{k!r}: pay.<64 hex digits of an address>")
        amount = _uint(v, k, U64_MAX)
        if amount == 0:
            raise _bad(f"{k}: amount must be positive")
        pays.append((addr, amount))
    if not pays:
        raise _bad("nothing to pay: give pay.<address>=<amount>")
    events = []
    for addr, amount in pays:
        fund = get_account(view, INSURANCE_ADDRESS)
        if fund.balance < amount:
            raise ExecutionFailure(ResultCode.INSUFFICIENT_FUNDS,
                                   f"the insurance fund holds {fund.balance}, cannot pay "
                                   f"{amount} to {addr.hex()}")
        put_account(view, INSURANCE_ADDRESS, Account(fund.balance - amount, fund.nonce))
        acct = get_account(view, addr)
        if acct.balance + amount > U64_MAX:
            raise ExecutionFailure(ResultCode.OVERFLOW, "balance would exceed 2**64-1")
        put_account(view, addr, Account(acct.balance + amount, acct.nonce))
        events.append(Event("compensation", (Attr("account", addr.hex()),
                                             Attr("amount", str(amount)), Attr("ref", ref))))
    return events


def operator_call(view: Overlay, ctx: TxContext, tx: Transaction) -> list[Event]:
    env = _authorize(view, ctx, tx)
    cmd = env.command
    args = cmd.arg_dict()
    if cmd.command == "cancel_orders":
        return _cancel_orders(view, args)
    if cmd.command == "market_mode":
        return _market_mode(view, args)
    return _compensate(view, args)
