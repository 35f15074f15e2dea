"""Operator commands: authenticate a signed envelope, run the command, audit both outcomes.

Every command arrives as an :class:`~chain.admin.AdminEnvelope` (chain/admin.py) on the admin
endpoint (node/admin_rpc.py). The service checks it in a fixed order (decoding, chain id,
signatures against the genesis operators and threshold, validity window, nonce not seen
before), records the nonce, runs the command, and appends an audit entry whether it ran or
was refused. Commands run one at a time; those that touch the chain take the producer's lock,
so an in-flight block always finishes first and nothing is written after a halt.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from chain.admin import AdminEnvelope, AdminRefused, SignedForkCertificate, check_command
from chain.errors import ChainError, DecodeError
from chain.tx import OperatorCall, Transaction, decode_tx
from node import replay as rp
from node.node import Node, tree_root_problem, wall_ms
from node.replay import ProgressLog
from node.testhooks import test_kill_hook
from node.views import result_json
from state.meta import next_era
from state.recovery import pins, rollback, snapshot_file
from state.recovery.archive import Exclusions, archived_blocks, classify
from state.recovery.compensation import build_report
from state.recovery.rehearsal import RehearsalPlan, rehearse
from state.recovery.rollback import RollbackPlan
from state.recovery.verify import verify_store
from state.schema import META_ADMIN_NONCE, META_REOPEN, META_REPLAYED
from state.store import StoreError

log = logging.getLogger("appchain.admin")

_NONCE = struct.Struct(">Q")

Command = Callable[["AdminService", dict[str, str], list[bytes]], Awaitable[dict[str, Any]]]


def _pin_json(p: pins.SnapshotPin) -> dict[str, Any]:
    return {"label": p.label, "height": str(p.height), "block_hash": p.block_hash.hex(),
            "state_root": p.state_root.hex(), "era": str(p.era), "time": str(p.time),
            "created_ms": str(p.created_ms), "operators": [o.hex() for o in p.operators]}


def _need(args: dict[str, str], name: str) -> str:
    v = args.get(name)
    if v is None or v == "":
        raise AdminRefused("bad_args", f"argument {name!r} is required")
    return v


def _int_arg(args: dict[str, str], name: str) -> int | None:
    v = args.get(name)
    if v is None:
        return None
    if not (v.isascii() and v.isdigit()) or len(v) > 20:
        raise AdminRefused("bad_args", f"argument {name!r} must be a non-negative integer")
    return int(v)


def _bool_arg(args: dict[str, str], name: str) -> bool:
    v = args.get(name, "false")
    if v not in ("true", "false"):
        raise AdminRefused("bad_args", f"argument {name!r} must be true or false")
    return v == "true"


def _only(args: dict[str, str], allowed: set[str]) -> None:
    extra = set(args) - allowed
    if extra:
        raise AdminRefused("bad_args", f"unknown argument(s) {sorted(extra)}; this command "
                           f"takes {sorted(allowed) or 'none'}")


class AdminService:
    """Runs operator commands against one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._lock = trio.Lock()

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.node.store

    async def execute(self, raw: bytes) -> dict[str, Any]:
        """Authenticate and run one envelope; raises ``AdminRefused`` (audited) if refused."""
        async with self._lock:
            entry: dict[str, Any] = {"time_ms": wall_ms(), "command": "", "args": {},
                                     "operators": [], "claimed_keys": [], "nonce": ""}
            try:
                env = self._authenticate(raw, entry)
                handler = COMMANDS.get(env.command.command)
                if handler is None:
                    raise AdminRefused("unknown_command", f"no command {env.command.command!r}"
                                       f"; commands: {', '.join(sorted(COMMANDS))}")
                result = await handler(self, env.command.arg_dict(),
                                       [bytes.fromhex(o) for o in entry["operators"]])
            except AdminRefused as e:
                entry.update(outcome="refused", reason=e.reason, message=e.message)
                self.node.audit.append(entry)
                log.warning("admin command %r refused (%s): %s", entry["command"], e.reason,
                            e.message)
                raise
            except StoreError as e:
                entry.update(outcome="refused", reason="refused", message=str(e))
                self.node.audit.append(entry)
                raise AdminRefused("refused", str(e)) from e
            entry.update(outcome="ok", summary=result.get("summary", ""))
            result["audit_seq"] = str(self.node.audit.append(entry))
            log.warning("admin command %r by %s: %s", entry["command"], entry["operators"],
                        result.get("summary", "ok"))
            return result

    def _authenticate(self, raw: bytes, entry: dict[str, Any]) -> AdminEnvelope:
        try:
            env = AdminEnvelope.decode(raw)
        except DecodeError as e:
            raise AdminRefused("malformed", f"the envelope does not decode: {e.message}") from e
        cmd = env.command
        entry.update(command=cmd.command, args=_audit_args(cmd.arg_dict()),
                     nonce=str(cmd.nonce), claimed_keys=[s.key.hex() for s in env.signatures])
        p = self.node.params
        cfg = self.node.cfg.admin
        signers = check_command(env, p.chain_id, p.operators, p.operator_threshold, wall_ms(),
                                cfg.max_age_ms, cfg.max_skew_ms)
        entry["operators"] = [s.hex() for s in signers]
        key = META_ADMIN_NONCE + _NONCE.pack(cmd.nonce)
        if self.store.db.get(key) is not None:
            raise AdminRefused("replayed", f"nonce {cmd.nonce} was already used")
        self.store.db.put(key, _NONCE.pack(cmd.issued_at), sync=True)
        return env

    def by(self, operators: list[bytes]) -> str:
        return "operators:" + ",".join(o.hex() for o in operators)

    # -- halt / resume ---------------------------------------------------------------------

    async def halt(self, args: dict[str, str], ops: list[bytes]) -> dict[str, Any]:
        _only(args, {"reason", "at_height"})
        reason = _need(args, "reason")
        at = _int_arg(args, "at_height")
        node = self.node
        async with node._produce_lock:  # an in-flight block finishes first
            if node.halted is not None:
                raise AdminRefused("refused", f"already halted: {node.halted['reason']}")
            if at is not None and at > node.head.height:
                node.schedule_halt(at, reason, self.by(ops))
                return {"summary": f"halt scheduled at height {at}", "halted": False,
                        "at_height": str(at), "height": str(node.head.height)}
            node.halt(reason, "operator", {}, node.head.height, by=self.by(ops))
        return {"summary": f"halted at height {node.head.height}", "halted": True,
                "height": str(node.head.height), "state_root": node.head.state_root.hex()}

    async def resume(self, args: dict[str, str], ops: list[bytes]) -> dict[str, Any]:
        _only(args, {"force"})
        force = _bool_arg(args, "force")
        node = self.node
        if node.halted is None and node.halt_at is None:
            raise AdminRefused("refused", "the chain is not halted")
        op = rollback.operation(self.store)
        if op is not None:
            raise AdminRefused("refused", f"a {op.get('kind', 'recovery')} operation is in "
                               "progress")
        problem = tree_root_problem(self.store, node.head)  # even with force: never serve it
        if problem is not None:
            raise AdminRefused("refused", problem + "; the chain stays halted")
        if node.halted is not None and node.halted.get("check") == "maintenance" and not force:
            raise AdminRefused("refused", "a maintenance window is open: end it with "
                               "`admin maintenance end` (it verifies before resuming), or "
                               "force=true to resume without verifying")
        if self.store.db.get(META_REOPEN) is not None and not force:
            active = [m["symbol"] for m in self._market_modes() if m["mode"] == "active"]
            if active:
                raise AdminRefused("refused", f"after a rollback, markets reopen carefully: "
                                   f"{', '.join(active)} still active. Switch them to "
                                   "post-only with a price band and a liquidation wait "
                                   "(`appchain admin resume` does it), or force=true")
        async with node._produce_lock:
            node.resume()
            self.store.db.delete(META_REOPEN, sync=True)
            readmitted, dropped = node.readmit_held_back()
        return {"summary": f"resumed at height {node.head.height}",
                "height": str(node.head.height), "readmitted": readmitted,
                "dropped": dropped}

    def _market_modes(self) -> list[dict[str, Any]]:
        from state.exchange.markets import get_market_state
        from state.records import MARKET, Market

        ov = self.store.overlay()
        out = []
        for k in ov.live_keys(MARKET):
            m = ov.get_obj(k, Market)
            st = get_market_state(ov, m.symbol) if m else None
            if m is not None and st is not None:
                out.append({"symbol": m.symbol, "mode": st.mode})
        return out

    # -- snapshots -------------------------------------------------------------------------

    async def snapshot_create(self, args: dict[str, str], ops: list[bytes]) -> dict[str, Any]:
        _only(args, {"label"})
        label = _need(args, "label")
        async with self.node._produce_lock:  # pin a committed head, never a moving one
            pin = pins.create_pin(self.store, label, wall_ms(), tuple(ops))
        return {"summary": f"snapshot {label} at height {pin.height}", **_pin_json(pin)}

    async def snapshot_list(self, args: dict[str, str], ops: list[bytes]) -> dict[str, Any]:
        _only(args, set())
        found = [_pin_json(p) for p in pins.list_pins(self.store)]
        return {"summary": f"{len(found)} snapshot(s)", "snapshots": found}

    async def snapshot_show(self, args: dict[str, str], ops: list[bytes]) -> dict[str, Any]:
        _only(args, {"label"})
        label = _need(args, "label")
        pin = pins.get_pin(self.store, label)
        if pin is None:
            raise AdminRefused("refused", f"no snapshot {label!r}")
        return {"summary": f"snapshot {label}", **_pin_json(pin)}

    async def snapshot_delete(self, args: dict[str, str], ops: list[bytes]) -> dict[str, Any]:
        _only(args, {"label"})
        pin = pins.delete_pin(self.store, _need(args, "label"))
        return {"summary": f"deleted snapshot {pin.label}", **_pin_json(pin)}

    # -- rollback --------------------------------------------------------------------------

    def _target(self, args: dict[str, str]) -> int:
        h = _int_arg(args, "to_height")
        label = args.get("to_snapshot")
        if (h is None) == (label is None):
            raise AdminRefused("bad_args", "give exactly one of to_height and to_snapshot")
        if label is not None:
            pin = pins.get_pin(self.store, label)
            if pin is None:
                raise AdminRefused("refused", f"no snapshot {label!r}")
            if pin.height >= self.node.head.height:
                raise AdminRefused("refused", f"snapshot {label!r} is at height {pin.height}, "
                                   f"not below the head {self.node.head.height}")
            return pin.height
        assert h is not None
        return h

    async def rollback(self, args: dict[str, str], ops: list[bytes]) -> dict[str, Any]:
        _only(args, {"to_height", "to_snapshot", "dry_run", "reason", "certificate"})
        dry = _bool_arg(args, "dry_run")
        node = self.node
        plan = await self._planned(args, details=dry)
        out: dict[str, Any] = {"dry_run": dry, "plan": plan.to_json()}
        if dry:
            out["summary"] = (f"would roll back {len(plan.blocks)} block(s) "
                              f"({plan.from_height} -> {plan.to_height}), "
                              f"{len(plan.txs)} transaction(s), {len(plan.accounts)} account(s)")
            return out
        reason = _need(args, "reason")
        if node.halted is None:
            raise AdminRefused("refused", "halt the chain first (`admin halt`)")
        cert = self._check_certificate(_need(args, "certificate"), plan, reason)
        restore = await self._restore_file(args.get("to_snapshot"), plan)
        async with node._produce_lock:
            record = rollback.begin(self.store, plan, cert, reason, ops, wall_ms(), restore)
            head = await trio.to_thread.run_sync(
                rollback.run, self.store, record, test_kill_hook("APPCHAIN_TEST_KILL_ROLLBACK"),
                node.cfg.recovery.rollback_chunk_blocks)
            node.head = head
            node.next_era = next_era(self.store, head)
            node.held_back.extend(node.mempool.drain())
            # The halt now belongs to the recovery (a maintenance window it interrupted is
            # over: its "nothing changed" check cannot hold after a rollback).
            node.halt(f"rolled back to height {head.height}: {reason}", "recovery",
                      {"from_height": str(plan.from_height), "era": str(plan.new_era)},
                      head.height, by=self.by(ops))
        node.metrics.height.set(head.height)
        out["summary"] = (f"rolled back {plan.from_height - plan.to_height} block(s) to height "
                          f"{head.height}; "
                          f"the next block starts era {node.next_era}")
        out["height"] = str(head.height)
        out["state_root"] = head.state_root.hex()
        out["restored_from_file"] = restore
        out["next_era"] = str(node.next_era)
        out["held_back"] = len(node.held_back)
        return out

    async def _restore_file(self, label: str | None, plan: RollbackPlan) -> str | None:
        """The snapshot file a rollback to pin ``label`` also restores (state written
        outside the blocks), checked; None without one."""
        if label is None or not self.snapshot_path(label).exists():
            return None
        try:  # never restore from a file whose own root does not check out
            hdr, _ = await trio.to_thread.run_sync(snapshot_file.check_file,
                                                   self.snapshot_path(label))
        except StoreError as e:
            raise AdminRefused("refused", f"the snapshot file of {label!r} is damaged: "
                               f"{e}") from e
        if hdr.state_root != plan.target.state_root:
            raise AdminRefused("refused", f"the snapshot file of {label!r} holds root "
                               f"{hdr.state_root.hex()}, not the target's")
        return str(self.snapshot_path(label))

    async def _planned(self, args: dict[str, str], details: bool) -> RollbackPlan:
        """The rollback plan to ``to_height`` / ``to_snapshot`` (a pin whose block is
        still on the chain)."""
        target = self._target(args)
        plan = await trio.to_thread.run_sync(
            lambda: rollback.plan_rollback(self.store, target, details=details))
        label = args.get("to_snapshot")
        if label is not None:
            pin = pins.get_pin(self.store, label)
            if pin is not None and (pin.block_hash, pin.state_root) != (
                    plan.target.hash, plan.target.state_root):
                raise AdminRefused("refused", f"snapshot {label!r} pinned block "
                                   f"{pin.block_hash.hex()} at height {pin.height}, but the "
                                   f"chain now has {plan.target.hash.hex()} there (an earlier "
                                   "rollback abandoned the pinned block)")
        return plan

    def _check_certificate(self, hex_cert: str, plan: RollbackPlan,
                           reason: str) -> bytes:
        try:
            raw = bytes.fromhex(hex_cert)
            signed = SignedForkCertificate.decode(raw)
        except (ValueError, DecodeError) as e:
            raise AdminRefused("bad_args", f"certificate does not decode: {e}") from e
        c = signed.certificate
        want = {"chain_id": self.node.params.chain_id, "era": plan.new_era,
                "from_height": plan.from_height, "to_height": plan.to_height,
                "to_block_hash": plan.target.hash, "state_root": plan.target.state_root,
                "reason": reason}
        for name, value in want.items():
            if getattr(c, name) != value:
                raise AdminRefused("bad_args", f"certificate {name} is {getattr(c, name)!r}, "
                                   f"the rollback gives {value!r}")
        p = self.node.params
        signed.verify(p.operators, p.operator_threshold)
        return raw

    # -- maintenance -----------------------------------------------------------------------

    async def maintenance_begin(self, args: dict[str, str], ops: list[bytes]
                                ) -> dict[str, Any]:
        _only(args, {"reason"})
        reason = args.get("reason") or "maintenance"
        node = self.node
        async with node._produce_lock:
            if node.halted is not None:
                raise AdminRefused("refused", f"already halted: {node.halted['reason']}")
            report = await trio.to_thread.run_sync(verify_store, self.store)
            if not report.ok:
                node.halt(f"maintenance refused: verification failed ({reason})",
                          "verification", {"problems": report.problems}, node.head.height,
                          by=self.by(ops))
                raise AdminRefused("refused", "verification failed before maintenance; the "
                                   f"chain is halted: {report.problems}")
            label = f"pre-maintenance-{node.head.height}"
            # The state itself, not only its root: a write that bypasses the blocks during
            # the window cannot be undone from undo records (state/snapshot_file.py).
            # Written first: if it fails, nothing else has changed.
            try:
                hdr = await trio.to_thread.run_sync(snapshot_file.export, self.store,
                                                    self.snapshot_path(label), label)
            except OSError as e:
                raise AdminRefused("refused", f"cannot write the pre-maintenance snapshot "
                                   f"file: {e}") from e
            pin = pins.create_pin(self.store, label, wall_ms(), tuple(ops))
            node.halt(f"maintenance: {reason}", "maintenance",
                      {"snapshot": label, "state_root": node.head.state_root.hex(),
                       "state_keys": str(report.keys)}, node.head.height, by=self.by(ops))
        return {"summary": f"maintenance begun at height {pin.height}; snapshot {label}",
                "snapshot": _pin_json(pin), "verification": _report_json(report),
                "snapshot_file": str(self.snapshot_path(label)), "state_keys": hdr.keys}

    def snapshot_path(self, label: str) -> Path:
        return Path(self.node.home.data_dir) / "snapshots" / f"{label}.snap"

    async def snapshot_export(self, args: dict[str, str], ops: list[bytes]) -> dict[str, Any]:
        _only(args, {"label", "path"})
        label = _need(args, "label")
        pin = pins.get_pin(self.store, label)
        if pin is None:
            raise AdminRefused("refused", f"no snapshot {label!r}")
        path = Path(args.get("path") or self.snapshot_path(label))
        if pin.height > self.node.head.height:
            raise AdminRefused("refused", f"snapshot {label!r} is above the head (rolled back)")
        try:
            hdr = await trio.to_thread.run_sync(snapshot_file.export, self.store, path, label,
                                                pin.height)
        except OSError as e:
            raise AdminRefused("refused", f"cannot write {path}: {e}") from e
        if (hdr.block_hash, hdr.state_root) != (pin.block_hash, pin.state_root):
            await trio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
            raise AdminRefused("refused", f"snapshot {label!r} pinned block "
                               f"{pin.block_hash.hex()}, the chain now has "
                               f"{hdr.block_hash.hex()} at height {pin.height} (an earlier "
                               "rollback abandoned it)")
        return {"summary": f"exported snapshot {label} (height {pin.height}, {hdr.keys} "
                           f"keys) to {path}", "path": str(path), "keys": hdr.keys,
                "height": str(hdr.height), "state_root": hdr.state_root.hex()}

    async def maintenance_end(self, args: dict[str, str], ops: list[bytes]) -> dict[str, Any]:
        _only(args, set())
        node = self.node
        if node.halted is None or node.halted.get("check") != "maintenance":
            raise AdminRefused("refused", "no maintenance window is open")
        evidence = node.halted.get("evidence", {})
        report = await trio.to_thread.run_sync(verify_store, self.store)
        problems = list(report.problems)
        expected_root = evidence.get("state_root")
        if expected_root and report.recomputed_root.hex() != expected_root:
            problems.append(f"the state changed during maintenance: root {expected_root} at "
                            f"the start, {report.recomputed_root.hex()} recomputed now")
        if problems:
            raise AdminRefused("refused", "maintenance end refused, the chain stays halted: "
                               + "; ".join(problems))
        async with node._produce_lock:
            node.resume()
        return {"summary": f"maintenance ended, resumed at height {node.head.height}",
                "verification": _report_json(report)}

    # -- replay ----------------------------------------------------------------------------

    async def replay(self, args: dict[str, str], ops: list[bytes]) -> dict[str, Any]:
        _only(args, {"from_era", "exclude_tx", "exclude_sender", "exclude_type", "dry_run"})
        node = self.node
        era = _int_arg(args, "from_era")
        if era is None:
            if node.next_era == 0:
                raise AdminRefused("refused", "nothing to replay: no rollback happened")
            era = node.next_era - 1

        ex = _exclusions(args)
        blocks = await trio.to_thread.run_sync(archived_blocks, self.store, era)
        if not blocks:
            raise AdminRefused("refused", f"no abandoned blocks archived for era {era}")
        if _bool_arg(args, "dry_run"):
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
        if self.store.db.get(META_REPLAYED + str(era).encode()) is not None:
            raise AdminRefused("refused", f"era {era} was already replayed (report: "
                               f"data/reports/replay-era-{era}.json)")
        async with node._produce_lock:
            record = rp.begin(node, era, ex, [o.hex() for o in ops], wall_ms())
            out = await trio.to_thread.run_sync(rp.run, node, record)
        s = out["summary"]
        return {"summary": f"replayed era {era} up to height {node.head.height}: "
                           f"{s['identical']} identical, {s['diverged']} diverged, "
                           f"{s['dropped']} dropped", "era": str(era),
                "height": str(node.head.height), "counts": s, "report": out["path"],
                "diverged": [t for t in out["transactions"] if t["fate"] == "diverged"][:100],
                "dropped": [t for t in out["transactions"] if t["fate"] == "dropped"][:100]}

    async def rehearse(self, args: dict[str, str], ops: list[bytes]) -> dict[str, Any]:
        """The whole recovery (rollback, operator transactions, replay, compensation report)
        in a scratch copy: nothing of the chain changes (state/rehearsal.py)."""
        _only(args, {"to_height", "to_snapshot", "reason", "certificate", "operator_txs",
                     "exclude_tx", "exclude_sender", "exclude_type"})
        node = self.node
        plan = await self._planned(args, details=False)
        reason = _need(args, "reason")
        cert = self._check_certificate(_need(args, "certificate"), plan, reason)
        restore = await self._restore_file(args.get("to_snapshot"), plan)
        txs = tuple(self._checked_operator_tx(h.strip())[0]
                    for h in args.get("operator_txs", "").split(",") if h.strip())
        rp_plan = RehearsalPlan(plan.to_height, cert, reason, restore, txs, _exclusions(args))
        try:
            res = await trio.to_thread.run_sync(
                lambda: rehearse(self.store, rp_plan, ProgressLog(node, "rehearsal")))
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
        await trio.to_thread.run_sync(lambda: _write_json(path, doc))
        s = res.summary
        note = "" if node.halted is not None else (
            "; the chain is NOT halted: the real recovery will start from a later head and "
            "may differ")
        return {"summary": f"rehearsed era {res.era}: roll back {plan.from_height} -> "
                           f"{plan.to_height}, {len(txs)} operator transaction(s), replay "
                           f"{s['identical']} identical, {s['diverged']} diverged, "
                           f"{s['dropped']} dropped; {summary_of_report(res.report)}{note}",
                "era": str(res.era), "counts": s, "replayed_to_height":
                    str(res.replayed_to_height), "operator_txs": list(res.operator_results),
                "diverged": [t for t in fates if t["fate"] == "diverged"][:100],
                "dropped": [t for t in fates if t["fate"] == "dropped"][:100],
                "report": res.report, "path": str(path)}

    async def compensation_report(self, args: dict[str, str], ops: list[bytes]
                                  ) -> dict[str, Any]:
        _only(args, {"era"})
        era = _int_arg(args, "era")
        if era is None:
            if self.node.next_era == 0:
                raise AdminRefused("refused", "no rollback happened: nothing to compare")
            era = self.node.next_era - 1
        report = await trio.to_thread.run_sync(build_report, self.store, era)
        report["summary"] = summary_of_report(report)
        return report

    # -- operator transactions -------------------------------------------------------------

    def _checked_operator_tx(self, hex_tx: str) -> tuple[Transaction, AdminEnvelope]:
        """A signed ``operator`` transaction from an operator key, whose inner command is
        checked against the wall clock (the chain checks it against the block time only,
        which may run behind during a recovery)."""
        try:
            tx = decode_tx(bytes.fromhex(hex_tx))
            tx.verify_signature()
        except (ValueError, ChainError) as e:
            raise AdminRefused("bad_args", f"tx: {e}") from e
        if not isinstance(tx.payload, OperatorCall):
            raise AdminRefused("bad_args", "tx must be an operator transaction")
        p, cfg = self.node.params, self.node.cfg.admin
        if tx.sender not in p.operators:
            raise AdminRefused("bad_args", "the transaction's sender is not an operator")
        try:
            inner = AdminEnvelope.decode(tx.payload.envelope)
        except DecodeError as e:
            raise AdminRefused("malformed", f"operator command: {e.message}") from e
        check_command(inner, p.chain_id, p.operators, p.operator_threshold, wall_ms(),
                      cfg.max_age_ms, cfg.max_skew_ms)
        return tx, inner

    async def operator_tx(self, args: dict[str, str], ops: list[bytes]) -> dict[str, Any]:
        """Commit a signed ``operator`` transaction in a block of its own, now (also while
        halted: selective cancellation and market modes are part of a recovery)."""
        _only(args, {"tx"})
        tx, inner = self._checked_operator_tx(_need(args, "tx"))
        node = self.node
        if node.halted is not None and node.halted.get("check") == "maintenance":
            raise AdminRefused("refused", "a maintenance window is open: a block now would "
                               "change the state it verifies; end the window first")
        expected = node.committed_nonce(tx.sender)
        if tx.nonce != expected:
            raise AdminRefused("bad_args", f"tx nonce {tx.nonce}, the sender's next is "
                               f"{expected}")
        async with node._produce_lock:
            if node.mempool.pending_nonce(tx.sender) is not None:
                raise AdminRefused("refused", "the operator key has transactions pending in "
                                   "the mempool; use another key or wait")
            head, results = await trio.to_thread.run_sync(
                node.commit_block_now, [tx], node.system_block_time())
        r = results[0]
        out = {"height": str(head.height), "hash": tx.hash.hex(), **result_json(r)}
        if len(results) > 1:
            out["end_block_events"] = result_json(results[1])["events"]
        out["summary"] = (f"{inner.command.command} in block {head.height}: "
                          f"{'ok' if r.code == 0 else 'failed: ' + r.log}")
        return out

    # -- audit -----------------------------------------------------------------------------

    async def audit_log(self, args: dict[str, str], ops: list[bytes]) -> dict[str, Any]:
        _only(args, {"after", "limit"})
        after = _int_arg(args, "after") or 0
        limit = min(_int_arg(args, "limit") or 100, 1000)
        found = self.node.audit.entries(after, limit)
        return {"summary": f"{len(found)} audit entries", "entries": [_jsonable(e)
                                                                      for e in found]}


def _write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))


def _hexes(args: dict[str, str], name: str, size: int) -> frozenset[bytes]:
    out = set()
    for item in filter(None, args.get(name, "").split(",")):
        try:
            b = bytes.fromhex(item.strip())
        except ValueError:
            b = b""
        if len(b) != size:
            raise AdminRefused("bad_args", f"{name}: {item!r} is not {size} hex bytes")
        out.add(b)
    return frozenset(out)


def _exclusions(args: dict[str, str]) -> Exclusions:
    """The replay's exclusions from ``exclude_tx`` / ``exclude_sender`` / ``exclude_type``
    (comma-separated)."""
    return Exclusions(_hexes(args, "exclude_tx", 32), _hexes(args, "exclude_sender", 32),
                      frozenset(t.strip() for t in args.get("exclude_type", "").split(",")
                                if t.strip()))


def summary_of_report(report: dict[str, Any]) -> str:
    t = report["totals"]
    return (f"era {report['era']}: {t['accounts']} account(s), "
            f"{t['accounts_to_compensate']} to compensate ({t['compensation_total']} "
            f"micro-USDC), {t['liquidated_only_on_abandoned_fork']} liquidated only on the "
            f"abandoned fork, {t['external_effects']} external effect(s) to decide")


def _audit_args(args: dict[str, str]) -> dict[str, str]:
    """Arguments as audited: long values (certificates, transactions) by their hash."""
    import hashlib

    return {k: (v if len(v) <= 256 else f"sha256:{hashlib.sha256(v.encode()).hexdigest()}"
                                        f" ({len(v)} chars)") for k, v in args.items()}


def _report_json(r: Any) -> dict[str, Any]:
    return {"height": str(r.height), "head_state_root": r.head_state_root.hex(),
            "recomputed_state_root": r.recomputed_root.hex(), "state_keys": r.keys,
            "ok": r.ok, "problems": r.problems}


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return v


COMMANDS: dict[str, Command] = {
    "halt": AdminService.halt,
    "resume": AdminService.resume,
    "snapshot_create": AdminService.snapshot_create,
    "snapshot_list": AdminService.snapshot_list,
    "snapshot_show": AdminService.snapshot_show,
    "snapshot_delete": AdminService.snapshot_delete,
    "snapshot_export": AdminService.snapshot_export,
    "rollback": AdminService.rollback,
    "maintenance_begin": AdminService.maintenance_begin,
    "maintenance_end": AdminService.maintenance_end,
    "audit": AdminService.audit_log,
    "operator_tx": AdminService.operator_tx,
    "replay": AdminService.replay,
    "compensation_report": AdminService.compensation_report,
    "rehearse": AdminService.rehearse,
}
