"""Operator commands of a recovery: roll back (to a pin or a height, restoring a
pre-maintenance snapshot file), replay the abandoned blocks, rehearse the whole recovery in
a scratch copy, and the compensation report (docs/PROTOCOL.md §12.4, §12.11-12.13)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from chain.admin import AdminRefused, SignedForkCertificate
from chain.errors import DecodeError
from node import replay_runner
from node.chain_head import wall_ms
from node.ops.args import (
    bool_arg,
    exclusions,
    int_arg,
    need,
    only,
    report_summary,
    write_json,
)
from node.ops.control import check_inner_time, checked_operator_tx
from node.ops.ops_context import OpsContext
from node.replay_runner import ProgressLog
from node.testhooks import test_kill_hook
from state.meta import replayed_height
from state.recovery import pins, rehearsal, rollback, snapshot_file
from state.recovery.archive import archived_blocks, classify
from state.recovery.compensation import build_report
from state.recovery.rehearsal import RehearsalPlan
from state.recovery.rollback import RollbackPlan
from state.store_errors import StoreError


def _target(ctx: OpsContext, args: dict[str, str]) -> int:
    h = int_arg(args, "to_height")
    label = args.get("to_snapshot")
    if (h is None) == (label is None):
        raise AdminRefused("bad_args", "give exactly one of to_height and to_snapshot")
    if label is not None:
        pin = pins.get_pin(ctx.store, label)
        if pin is None:
            raise AdminRefused("refused", f"no snapshot {label!r}")
        if pin.height >= ctx.node.head.height:
            raise AdminRefused("refused", f"snapshot {label!r} is at height {pin.height}, "
                               f"not below the head {ctx.node.head.height}")
        return pin.height
    assert h is not None
    return h


async def rollback_command(ctx: OpsContext, args: dict[str, str], ops: list[bytes]
        ) -> dict[str, Any]:
    only(args, {"to_height", "to_snapshot", "dry_run", "reason", "certificate"})
    dry = bool_arg(args, "dry_run")
    node = ctx.node
    plan = await _planned(ctx, args, details=dry)
    out: dict[str, Any] = {"dry_run": dry, "plan": plan.to_json()}
    if dry:
        out["summary"] = (f"would roll back {len(plan.blocks)} block(s) "
                          f"({plan.from_height} -> {plan.to_height}), "
                          f"{len(plan.txs)} transaction(s), {len(plan.accounts)} account(s)")
        return out
    reason = need(args, "reason")
    if node.halted is None:
        raise AdminRefused("refused", "halt the chain first (`admin halt`)")
    cert = _check_certificate(ctx, need(args, "certificate"), plan, reason)
    restore = await _restore_file(ctx, args.get("to_snapshot"), plan)
    async with node.producer.exclusive():
        record = rollback.begin(ctx.store, plan, cert, reason, ops, wall_ms(), restore)
        head = await trio.to_thread.run_sync(
            rollback.run, ctx.store, record, test_kill_hook("APPCHAIN_TEST_KILL_ROLLBACK"),
            node.cfg.recovery.rollback_chunk_blocks)
        node.chain.rolled_back(head)
        held_back = node.intake.hold_back()
        # The halt now belongs to the recovery (a maintenance window it interrupted is
        # over: its "nothing changed" check cannot hold after a rollback).
        node.chain.halt(f"rolled back to height {head.height}: {reason}", "recovery",
                        {"from_height": str(plan.from_height), "era": str(plan.new_era)},
                        head.height, by=ctx.by(ops))
    node.metrics.height.set(head.height)
    out["summary"] = (f"rolled back {plan.from_height - plan.to_height} block(s) to height "
                      f"{head.height}; "
                      f"the next block starts era {node.next_era}")
    out["height"] = str(head.height)
    out["state_root"] = head.state_root.hex()
    out["restored_from_file"] = restore
    out["next_era"] = str(node.next_era)
    out["held_back"] = held_back
    return out


async def _restore_file(ctx: OpsContext, label: str | None, plan: RollbackPlan) -> str | None:
    """The snapshot file a rollback to pin ``label`` also restores (state written
    outside the blocks), checked; None without one."""
    if label is None or not ctx.snapshot_path(label).exists():
        return None
    try:  # never restore from a file whose own root does not check out
        hdr, _ = await trio.to_thread.run_sync(snapshot_file.check_file,
                                               ctx.snapshot_path(label))
    except StoreError as e:
        raise AdminRefused("refused", f"the snapshot file of {label!r} is damaged: "
                           f"{e}") from e
    if hdr.state_root != plan.target.state_root:
        raise AdminRefused("refused", f"the snapshot file of {label!r} holds root "
                           f"{hdr.state_root.hex()}, not the target's")
    return str(ctx.snapshot_path(label))


async def _planned(ctx: OpsContext, args: dict[str, str], details: bool) -> RollbackPlan:
    """The rollback plan to ``to_height`` / ``to_snapshot`` (a pin whose block is
    still on the chain)."""
    target = _target(ctx, args)
    plan = await trio.to_thread.run_sync(
        lambda: rollback.plan_rollback(ctx.store, target, details=details))
    label = args.get("to_snapshot")
    if label is not None:
        pin = pins.get_pin(ctx.store, label)
        if pin is not None and (pin.block_hash, pin.state_root) != (
                plan.target.hash, plan.target.state_root):
            raise AdminRefused("refused", f"snapshot {label!r} pinned block "
                               f"{pin.block_hash.hex()} at height {pin.height}, but the "
                               f"chain now has {plan.target.hash.hex()} there (an earlier "
                               "rollback abandoned the pinned block)")
    return plan


def _check_certificate(ctx: OpsContext, hex_cert: str, plan: RollbackPlan,
                       reason: str) -> bytes:
    try:
        raw = bytes.fromhex(hex_cert)
        signed = SignedForkCertificate.decode(raw)
    except (ValueError, DecodeError) as e:
        raise AdminRefused("bad_args", f"certificate does not decode: {e}") from e
    c = signed.certificate
    want = {"chain_id": ctx.node.params.chain_id, "era": plan.new_era,
            "from_height": plan.from_height, "to_height": plan.to_height,
            "to_block_hash": plan.target.hash, "state_root": plan.target.state_root,
            "reason": reason}
    for name, value in want.items():
        if getattr(c, name) != value:
            raise AdminRefused("bad_args", f"certificate {name} is {getattr(c, name)!r}, "
                               f"the rollback gives {value!r}")
    p = ctx.node.params
    signed.verify(p.operators, p.operator_threshold)
    return raw


async def replay_command(ctx: OpsContext, args: dict[str, str], ops: list[bytes]
        ) -> dict[str, Any]:
    only(args, {"from_era", "exclude_tx", "exclude_sender", "exclude_type", "dry_run"})
    node = ctx.node
    era = int_arg(args, "from_era")
    if era is None:
        if node.next_era == 0:
            raise AdminRefused("refused", "nothing to replay: no rollback happened")
        era = node.next_era - 1

    ex = exclusions(args)
    blocks = await trio.to_thread.run_sync(archived_blocks, ctx.store, era)
    if not blocks:
        raise AdminRefused("refused", f"no abandoned blocks archived for era {era}")
    if bool_arg(args, "dry_run"):
        static: dict[str, int] = {}
        tried = 0
        for ab in blocks:
            for raw in ab.txs:
                _, why = classify(raw, ex)
                if why:  # dropped before execution (the sender's later ones follow)
                    static[why] = static.get(why, 0) + 1
                else:
                    tried += 1
        return {"summary": f"era {era}: {len(blocks)} block(s); {tried} transaction(s) "
                           f"to execute, {sum(static.values())} dropped before execution",
                "era": str(era), "blocks": len(blocks), "to_execute": tried,
                "dropped_before_execution": static,
                "note": "failures on the restored state are only known by executing"}
    if node.halted is None:
        raise AdminRefused("refused", "halt the chain first (`admin halt`)")
    if replayed_height(ctx.store, era) is not None:
        raise AdminRefused("refused", f"era {era} was already replayed (report: "
                           f"data/reports/replay-era-{era}.json)")
    async with node.producer.exclusive():
        record = replay_runner.begin(node, era, ex, [o.hex() for o in ops], wall_ms())
        out = await trio.to_thread.run_sync(replay_runner.run, node, record)
    s = out["summary"]
    return {"summary": f"replayed era {era} up to height {node.head.height}: "
                       f"{s['identical']} identical, {s['diverged']} diverged, "
                       f"{s['dropped']} dropped", "era": str(era),
            "height": str(node.head.height), "counts": s, "report": out["path"],
            "diverged": [t for t in out["transactions"] if t["fate"] == "diverged"][:100],
            "dropped": [t for t in out["transactions"] if t["fate"] == "dropped"][:100]}


async def rehearse_command(ctx: OpsContext, args: dict[str, str], ops: list[bytes]
        ) -> dict[str, Any]:
    """The whole recovery (rollback, operator transactions, replay, compensation report)
    in a scratch copy: nothing of the chain changes (state/recovery/rehearsal.py)."""
    only(args, {"to_height", "to_snapshot", "reason", "certificate", "operator_txs",
                 "exclude_tx", "exclude_sender", "exclude_type"})
    node = ctx.node
    plan = await _planned(ctx, args, details=False)
    reason = need(args, "reason")
    cert = _check_certificate(ctx, need(args, "certificate"), plan, reason)
    restore = await _restore_file(ctx, args.get("to_snapshot"), plan)
    checked = [checked_operator_tx(ctx, h.strip())
               for h in args.get("operator_txs", "").split(",") if h.strip()]
    for i, (_, inner) in enumerate(checked):  # the rehearsal's blocks: target time + 1, + 2…
        check_inner_time(ctx, inner, plan.target.time + 1 + i)
    txs = tuple(tx for tx, _ in checked)
    rp_plan = RehearsalPlan(plan.to_height, cert, reason, restore, txs, exclusions(args))
    try:
        res = await trio.to_thread.run_sync(
            lambda: rehearsal.rehearse(ctx.store, rp_plan, ProgressLog(node, "rehearsal")))
    except StoreError as e:
        raise AdminRefused("refused", f"rehearsal failed: {e}") from e
    finally:
        node.progress = None
    fates = [f.to_obj() for f in res.fates]
    path = Path(node.home.data_dir) / "reports" / (
        f"rehearsal-era-{res.era}-to-{plan.to_height}.json")
    doc = {"era": res.era, "to_height": plan.to_height, "summary": res.summary,
           "operator_txs": list(res.operator_results),
           "replayed_to_height": res.replayed_to_height, "transactions": fates,
           "report": res.report}
    await trio.to_thread.run_sync(lambda: write_json(path, doc))
    s = res.summary
    note = "" if node.halted is not None else (
        "; the chain is NOT halted: the real recovery will start from a later head and "
        "may differ")
    return {"summary": f"rehearsed era {res.era}: roll back {plan.from_height} -> "
                       f"{plan.to_height}, {len(txs)} operator transaction(s), replay "
                       f"{s['identical']} identical, {s['diverged']} diverged, "
                       f"{s['dropped']} dropped; {report_summary(res.report)}{note}",
            "era": str(res.era), "counts": s, "replayed_to_height":
                str(res.replayed_to_height), "operator_txs": list(res.operator_results),
            "diverged": [t for t in fates if t["fate"] == "diverged"][:100],
            "dropped": [t for t in fates if t["fate"] == "dropped"][:100],
            "report": res.report, "path": str(path)}


async def compensation_report_command(ctx: OpsContext, args: dict[str, str], ops: list[bytes]
                              ) -> dict[str, Any]:
    only(args, {"era"})
    era = int_arg(args, "era")
    if era is None:
        if ctx.node.next_era == 0:
            raise AdminRefused("refused", "no rollback happened: nothing to compare")
        era = ctx.node.next_era - 1
    report = await trio.to_thread.run_sync(build_report, ctx.store, era)
    report["summary"] = report_summary(report)
    return report
