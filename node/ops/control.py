"""Operator commands that control the chain: halt and resume, maintenance windows (verify
before and after), operator transactions committed now, and the audit log."""

from __future__ import annotations

from typing import Any

import trio

from chain.admin import AdminEnvelope, AdminRefused, check_command
from chain.errors import ChainError, DecodeError, Failure
from chain.tx import OperatorCall, Transaction, decode_tx
from node.chain_head import tree_root_problem, wall_ms
from node.ops.args import bool_arg, int_arg, jsonable, need, only, pin_json, verification_json
from node.ops.ops_context import OpsContext
from node.producer import STORAGE_IO
from node.wire_json import result_json
from state import meta
from state.exchange.markets import get_market_state
from state.exchange.operator_commands import MAX_AGE_MS, MAX_AHEAD_MS
from state.records import MARKET, Market
from state.recovery import pins, snapshot_file
from state.recovery.verify import verify_store


async def halt_command(ctx: OpsContext, args: dict[str, str], ops: list[bytes]
        ) -> dict[str, Any]:
    only(args, {"reason", "at_height"})
    reason = need(args, "reason")
    at = int_arg(args, "at_height")
    node = ctx.node
    async with node.producer.exclusive():  # an in-flight block finishes first
        if node.halted is not None:
            raise AdminRefused("refused", f"already halted: {node.halted.reason}")
        if at is not None and at > node.head.height:
            node.chain.schedule_halt(at, reason, ctx.by(ops))
            return {"summary": f"halt scheduled at height {at}", "halted": False,
                    "at_height": str(at), "height": str(node.head.height)}
        node.chain.halt(reason, "operator", {}, node.head.height, by=ctx.by(ops))
    return {"summary": f"halted at height {node.head.height}", "halted": True,
            "height": str(node.head.height), "state_root": node.head.state_root.hex()}


async def resume_command(ctx: OpsContext, args: dict[str, str], ops: list[bytes]
        ) -> dict[str, Any]:
    only(args, {"force"})
    force = bool_arg(args, "force")
    node = ctx.node
    if node.halted is None and node.halt_at is None:
        raise AdminRefused("refused", "the chain is not halted")
    op = meta.operation(ctx.store)
    if op is not None:
        raise AdminRefused("refused", f"a {op.kind} operation is in "
                           "progress")
    if node.halted is not None and node.halted.check == STORAGE_IO:
        # The block could not be written (full disk, no descriptors): reopen the store and
        # commit what was signed, or stay halted with the reason.
        try:
            await node.producer.recover_storage()
        except (Failure, OSError) as e:
            raise AdminRefused("refused", f"the store cannot take writes yet: {e}; the chain "
                               "stays halted") from e
    problem = tree_root_problem(ctx.store, node.head)  # even with force: never serve it
    if problem is not None:
        raise AdminRefused("refused", problem + "; the chain stays halted")
    if node.halted is not None and node.halted.check == "maintenance" and not force:
        raise AdminRefused("refused", "a maintenance window is open: end it with "
                           "`admin maintenance end` (it verifies before resuming), or "
                           "force=true to resume without verifying")
    if meta.reopen_pending(ctx.store) and not force:
        active = [m["symbol"] for m in market_modes(ctx) if m["mode"] == "active"]
        if active:
            raise AdminRefused("refused", f"after a rollback, markets reopen carefully: "
                               f"{', '.join(active)} still active. Switch them to "
                               "post-only with a price band and a liquidation wait "
                               "(`appchain admin resume` does it), or force=true")
    async with node.producer.exclusive():
        node.chain.resume()
        meta.clear_reopen(ctx.store)
        readmitted, dropped = node.intake.readmit_held_back()
    return {"summary": f"resumed at height {node.head.height}",
            "height": str(node.head.height), "readmitted": readmitted,
            "dropped": dropped}


def market_modes(ctx: OpsContext) -> list[dict[str, Any]]:

    ov = ctx.store.overlay()
    out = []
    for k in ov.live_keys(MARKET):
        m = ov.get_obj(k, Market)
        st = get_market_state(ov, m.symbol) if m else None
        if m is not None and st is not None:
            out.append({"symbol": m.symbol, "mode": st.mode})
    return out


async def maintenance_begin_command(ctx: OpsContext, args: dict[str, str], ops: list[bytes]
                            ) -> dict[str, Any]:
    only(args, {"reason"})
    reason = args.get("reason") or "maintenance"
    node = ctx.node
    async with node.producer.exclusive():
        if node.halted is not None:
            raise AdminRefused("refused", f"already halted: {node.halted.reason}")
        report = await trio.to_thread.run_sync(verify_store, ctx.store)
        if not report.ok:
            node.chain.halt(f"maintenance refused: verification failed ({reason})",
                      "verification", {"problems": report.problems}, node.head.height,
                      by=ctx.by(ops))
            raise AdminRefused("refused", "verification failed before maintenance; the "
                               f"chain is halted: {report.problems}")
        label = f"pre-maintenance-{node.head.height}"
        # The state itself, not only its root: a write that bypasses the blocks during
        # the window cannot be undone from undo records (state/recovery/snapshot_file.py).
        # Written first: if it fails, nothing else has changed.
        try:
            hdr = await trio.to_thread.run_sync(snapshot_file.export, ctx.store,
                                                ctx.snapshot_path(label), label)
        except OSError as e:
            raise AdminRefused("refused", f"cannot write the pre-maintenance snapshot "
                               f"file: {e}") from e
        pin = pins.create_pin(ctx.store, label, wall_ms(), tuple(ops))
        node.chain.halt(f"maintenance: {reason}", "maintenance",
                  {"snapshot": label, "state_root": node.head.state_root.hex(),
                   "state_keys": str(report.keys)}, node.head.height, by=ctx.by(ops))
    return {"summary": f"maintenance begun at height {pin.height}; snapshot {label}",
            "snapshot": pin_json(pin), "verification": verification_json(report),
            "snapshot_file": str(ctx.snapshot_path(label)), "state_keys": hdr.keys}


async def maintenance_end_command(ctx: OpsContext, args: dict[str, str], ops: list[bytes]
        ) -> dict[str, Any]:
    only(args, set())
    node = ctx.node
    if node.halted is None or node.halted.check != "maintenance":
        raise AdminRefused("refused", "no maintenance window is open")
    evidence = node.halted.evidence
    report = await trio.to_thread.run_sync(verify_store, ctx.store)
    problems = list(report.problems)
    expected_root = evidence.get("state_root")
    if expected_root and report.recomputed_root.hex() != expected_root:
        problems.append(f"the state changed during maintenance: root {expected_root} at "
                        f"the start, {report.recomputed_root.hex()} recomputed now")
    if problems:
        raise AdminRefused("refused", "maintenance end refused, the chain stays halted: "
                           + "; ".join(problems))
    async with node.producer.exclusive():
        node.chain.resume()
    return {"summary": f"maintenance ended, resumed at height {node.head.height}",
            "verification": verification_json(report)}


def checked_operator_tx(ctx: OpsContext, hex_tx: str) -> tuple[Transaction, AdminEnvelope]:
    """A signed ``operator`` transaction from an operator key, with its inner command
    (decoded; its time is checked by :func:`check_inner_time` against the block it goes
    in)."""
    try:
        tx = decode_tx(bytes.fromhex(hex_tx))
        tx.verify_signature()
    except (ValueError, ChainError) as e:
        raise AdminRefused("bad_args", f"tx: {e}") from e
    if not isinstance(tx.payload, OperatorCall):
        raise AdminRefused("bad_args", "tx must be an operator transaction")
    p = ctx.node.params
    if tx.sender not in p.operators:
        raise AdminRefused("bad_args", "the transaction's sender is not an operator")
    try:
        inner = AdminEnvelope.decode(tx.payload.envelope)
    except DecodeError as e:
        raise AdminRefused("malformed", f"operator command: {e.message}") from e
    return tx, inner


def check_inner_time(ctx: OpsContext, inner: AdminEnvelope, block_time: int) -> None:
    """Refuse (as any envelope: ``expired``, ``not_yet_valid``, signature reasons) an
    operator command the chain would fail in a block at ``block_time``: the chain's own
    window (``MAX_AGE_MS`` before, ``MAX_AHEAD_MS`` after the BLOCK time), since during a
    recovery the block time runs behind the wall clock (docs/PROTOCOL.md §5.10)."""
    p = ctx.node.params
    check_command(inner, p.chain_id, p.operators, p.operator_threshold, block_time,
                  MAX_AGE_MS, MAX_AHEAD_MS)


async def operator_tx_command(ctx: OpsContext, args: dict[str, str], ops: list[bytes]
        ) -> dict[str, Any]:
    """Commit a signed ``operator`` transaction in a block of its own, now (also while
    halted: selective cancellation and market modes are part of a recovery)."""
    only(args, {"tx"})
    tx, inner = checked_operator_tx(ctx, need(args, "tx"))
    node = ctx.node
    if node.halted is not None and node.halted.check == "maintenance":
        raise AdminRefused("refused", "a maintenance window is open: a block now would "
                           "change the state it verifies; end the window first")
    expected = node.chain.committed_nonce(tx.sender)
    if tx.nonce != expected:
        raise AdminRefused("bad_args", f"tx nonce {tx.nonce}, the sender's next is "
                           f"{expected}")
    async with node.producer.exclusive():
        if node.mempool.pending_nonce(tx.sender) is not None:
            raise AdminRefused("refused", "the operator key has transactions pending in "
                               "the mempool; use another key or wait")
        block_time = node.producer.system_block_time()
        check_inner_time(ctx, inner, block_time)
        head, results = await trio.to_thread.run_sync(
            node.producer.commit_block_now, [tx], block_time)
    r = results[0]
    out = {"height": str(head.height), "hash": tx.hash.hex(), **result_json(r)}
    if len(results) > 1:
        out["end_block_events"] = result_json(results[1])["events"]
    out["summary"] = (f"{inner.command.command} in block {head.height}: "
                      f"{'ok' if r.code == 0 else 'failed: ' + r.log}")
    return out


async def audit_log_command(ctx: OpsContext, args: dict[str, str], ops: list[bytes]
        ) -> dict[str, Any]:
    only(args, {"after", "limit"})
    after = int_arg(args, "after") or 0
    limit = min(int_arg(args, "limit") or 100, 1000)
    found = ctx.node.audit.entries(after, limit)
    return {"summary": f"{len(found)} audit entries", "entries": [jsonable(e)
                                                                  for e in found]}
