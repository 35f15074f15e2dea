"""Operator commands: authenticate a signed envelope, run the command, audit both outcomes.

Every command arrives as an :class:`~chain.admin.AdminEnvelope` (chain/admin.py) on the admin
endpoint (node/ops/endpoint.py). The service checks it in a fixed order (decoding, chain id,
signatures against the genesis operators and threshold, validity window, nonce not seen
before), records the nonce, runs the command, and appends an audit entry whether it ran or
was refused, except for envelopes no threshold of operators signed: those are counted and
summarised (node/ops/refusals.py), so an anonymous sender cannot grow the audit log. Commands
run one at a time; those that touch the chain run inside the producer's exclusive section, so
an in-flight block always finishes first and nothing is written after a halt.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import trio

from chain.admin import AdminEnvelope, AdminRefused, check_command
from chain.errors import ChainError, DecodeError, Failure
from node.chain_head import wall_ms
from node.node import Node
from node.ops import control, recovery, snapshots
from node.ops.args import audit_args
from node.ops.ops_context import Command, OpsContext
from node.ops.refusals import RATE_LIMITED, UNAUTHENTICATED, RefusalLimiter, vouched
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
        cfg = node.cfg.admin
        self.refusals = RefusalLimiter(cfg.unauthenticated_burst,
                                       cfg.unauthenticated_per_second,
                                       cfg.refusal_summary_interval_ms / 1000)
        self._operators = frozenset(node.params.operators)

    async def execute(self, raw: bytes, peer: str = "local") -> dict[str, Any]:
        """Authenticate and run one envelope from ``peer`` (its address, for the rate limit);
        raises ``AdminRefused`` if refused (audited, or counted if unauthenticated)."""
        if not self.refusals.allowed(peer) and not vouched(raw, self._operators):
            self._unauthenticated(peer, RATE_LIMITED, "")
            raise AdminRefused(RATE_LIMITED, f"too many unauthenticated envelopes from "
                               f"{peer}: this one's first signature is not an operator's; "
                               f"try again in a few seconds")
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
                if e.reason in UNAUTHENTICATED and not entry["operators"]:  # before signed
                    self._unauthenticated(peer, e.reason, e.message)
                    raise
                self._refused(entry, e)
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

    def _refused(self, entry: dict[str, Any], e: AdminRefused) -> NoReturn:
        """Audit and log a refusal of a signed envelope, then raise it (with a note if the
        audit entry could not be written)."""
        entry.update(outcome="refused", reason=e.reason, message=e.message)
        unaudited = self._audit(entry)[1]
        log.warning("admin command %r refused (%s): %s", entry["command"], e.reason,
                    e.message)
        if unaudited:
            raise AdminRefused(e.reason, e.message + unaudited) from e
        raise e

    def _unauthenticated(self, peer: str, reason: str, message: str) -> None:
        """Count a refusal of an envelope no threshold of operators signed: a metric, a log
        line for the first of each peer per summary interval, a summary entry when due."""
        node = self.ctx.node
        node.metrics.admin_unauthenticated.labels(reason=reason).inc()
        if self.refusals.refused(peer, reason, wall_ms()):
            log.warning("unauthenticated admin envelope from %s refused (%s): %s; further "
                        "ones are counted (appchain_admin_unauthenticated_refused) and "
                        "summarised in the audit log", peer, reason, message or "rate limited")
        if self.refusals.summary_due():
            self.write_refusal_summary()

    def write_refusal_summary(self) -> None:
        """Write the pending unauthenticated refusals as one audit entry (if any): called
        when one is due, every summary interval by the endpoint, and when it stops."""
        entry = self.refusals.take_summary(wall_ms())
        if entry is not None:
            seq, _ = self._audit(entry)
            log.warning("%s (audit seq %s)", entry["message"], seq)

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
