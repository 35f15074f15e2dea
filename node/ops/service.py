"""Operator commands: authenticate a signed envelope, run the command, audit both outcomes.

Every command arrives as an :class:`~chain.admin.AdminEnvelope` (chain/admin.py) on the admin
endpoint (node/ops/endpoint.py). The service checks it in a fixed order (decoding, chain id,
signatures against the genesis operators and threshold, validity window, nonce not seen
before), records the nonce, runs the command, and appends an audit entry whether it ran or
was refused. Commands run one at a time; those that touch the chain run inside the
producer's exclusive section, so an in-flight block always finishes first and nothing is
written after a halt.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from chain.admin import AdminEnvelope, AdminRefused, check_command
from chain.errors import ChainError, DecodeError, Failure
from node.chain_head import wall_ms
from node.node import Node
from node.ops import control, recovery, snapshots
from node.ops.args import audit_args
from node.ops.ops_context import Command, OpsContext
from state import meta

log = logging.getLogger("appchain.admin")

COMMANDS: dict[str, Command] = {
    "halt": control.halt_command,
    "resume": control.resume_command,
    "maintenance_begin": control.maintenance_begin_command,
    "maintenance_end": control.maintenance_end_command,
    "operator_tx": control.operator_tx_command,
    "audit": control.audit_log_command,
    "snapshot_create": snapshots.snapshot_create_command,
    "snapshot_list": snapshots.snapshot_list_command,
    "snapshot_show": snapshots.snapshot_show_command,
    "snapshot_delete": snapshots.snapshot_delete_command,
    "snapshot_export": snapshots.snapshot_export_command,
    "rollback": recovery.rollback_command,
    "replay": recovery.replay_command,
    "rehearse": recovery.rehearse_command,
    "compensation_report": recovery.compensation_report_command,
}
"""Every operator command by name (docs/PROTOCOL.md §12.4)."""


class AdminService:
    """Runs operator commands against one node, one at a time."""

    def __init__(self, node: Node) -> None:
        self.ctx = OpsContext(node)
        self._lock = trio.Lock()

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
                result = await handler(self.ctx, env.command.arg_dict(),
                                       [bytes.fromhex(o) for o in entry["operators"]])
            except AdminRefused as e:
                entry.update(outcome="refused", reason=e.reason, message=e.message)
                unaudited = self._audit(entry)[1]
                log.warning("admin command %r refused (%s): %s", entry["command"], e.reason,
                            e.message)
                if unaudited:
                    raise AdminRefused(e.reason, e.message + unaudited) from e
                raise
            except (ChainError, Failure) as e:  # a refusal of the store, or its failure
                entry.update(outcome="refused", reason="refused", message=e.message)
                raise AdminRefused("refused", e.message + self._audit(entry)[1]) from e
            entry.update(outcome="ok", summary=result.get("summary", ""))
            seq, unaudited = self._audit(entry)
            result["audit_seq"] = None if seq is None else str(seq)
            if unaudited:
                result["summary"] = result.get("summary", "ok") + unaudited
            log.warning("admin command %r by %s: %s", entry["command"], entry["operators"],
                        result.get("summary", "ok"))
            return result

    def _audit(self, entry: dict[str, Any]) -> tuple[int | None, str]:
        """Append ``entry`` to the audit log: (its seq, "") or, if the log cannot be written
        (a full disk), (None, a note for the answer): the operators are told, the command's
        own answer still reaches them."""
        try:
            return self.ctx.node.audit.append(entry), ""
        except (Failure, OSError) as e:
            log.error("admin command %r not recorded in the audit log: %s", entry["command"], e)
            return None, f" (NOT recorded in the audit log: {e})"

    def _authenticate(self, raw: bytes, entry: dict[str, Any]) -> AdminEnvelope:
        node = self.ctx.node
        try:
            env = AdminEnvelope.decode(raw)
        except DecodeError as e:
            raise AdminRefused("malformed", f"the envelope does not decode: {e.message}") from e
        cmd = env.command
        entry.update(command=cmd.command, args=audit_args(cmd.arg_dict()),
                     nonce=str(cmd.nonce), claimed_keys=[s.key.hex() for s in env.signatures])
        p = node.params
        cfg = node.cfg.admin
        signers = check_command(env, p.chain_id, p.operators, p.operator_threshold, wall_ms(),
                                cfg.max_age_ms, cfg.max_skew_ms)
        entry["operators"] = [s.hex() for s in signers]
        if meta.admin_nonce_seen(node.store, cmd.nonce):
            raise AdminRefused("replayed", f"nonce {cmd.nonce} was already used")
        meta.record_admin_nonce(node.store, cmd.nonce, cmd.issued_at)
        return env
