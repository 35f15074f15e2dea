"""Client side of the operator endpoint: build, sign and send admin envelopes.

Used by ``appchain admin ...`` and by tests. The keys are operator keys from genesis; with a
threshold above one, pass as many keys as the threshold asks for.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Sequence
from typing import Any

from chain.admin import (
    AdminEnvelope,
    ForkCertificate,
    make_command,
    sign_command,
    sign_fork,
)
from chain.crypto import PrivateKey
from chain.errors import ChainError
from chain.tx import OperatorCall, make_tx
from node.client.rpc_client import RPCClient

DEFAULT_ADMIN = "http://127.0.0.1:26659"


class OperatorTxFailed(ChainError):
    """An operator transaction was committed but failed (its result code is not 0)."""

    reason = "operator_tx_failed"

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(f"operator transaction {result.get('hash')} in block "
                         f"{result.get('height')} failed: code {result.get('code')} "
                         f"({result.get('codespace')}): {result.get('log')}")
        self.result = result


class AdminClient:
    """Signs each command with ``keys`` and sends it to the admin endpoint at ``url``."""

    def __init__(self, url: str, keys: Sequence[PrivateKey], timeout: float = 300.0) -> None:
        self.rpc = RPCClient(url, timeout=timeout)
        self.keys = list(keys)
        self._info: dict[str, Any] | None = None

    def close(self) -> None:
        self.rpc.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = self.rpc.call("admin_info")
        return self._info

    def envelope(self, command: str, args: dict[str, str], *, issued_at: int | None = None,
                 nonce: int | None = None, chain_id: str | None = None,
                 keys: Sequence[PrivateKey] | None = None) -> AdminEnvelope:
        cmd = make_command(chain_id or self.info()["chain_id"], command, args,
                           time.time_ns() // 1_000_000 if issued_at is None else issued_at,
                           secrets.randbits(64) if nonce is None else nonce)
        return sign_command(cmd, self.keys if keys is None else keys)

    def send(self, env: AdminEnvelope) -> Any:
        return self.rpc.call("admin", envelope=base64.b64encode(env.encode()).decode())

    def run(self, command: str, args: dict[str, str] | None = None) -> Any:
        """Sign and send one command; raises ``RPCCallError`` when the node refuses it."""
        return self.send(self.envelope(command, args or {}))

    def signed_operator_tx(self, command: str, args: dict[str, str],
                           block_time_ms: int | None = None) -> bytes:
        """The raw ``operator`` transaction (state/exchange/operator_commands.py) of a
        command: signed by every key, sent by the first key with its next nonce. The command
        is dated for the block it goes in (the chain checks it against the BLOCK time, which
        runs behind the wall clock during a recovery): ``block_time_ms``, by default the
        time the node gives an operator block now (``admin_info``)."""
        sender = self.keys[0]
        info = self.rpc.call("admin_info", address=sender.public_key.hex())
        when = int(info["operator_block_time_ms"]) if block_time_ms is None else block_time_ms
        env = self.envelope(command, args, issued_at=when)
        return make_tx(sender, info["chain_id"], int(info["next_nonce"]),
                       OperatorCall(env.encode())).raw

    def operator_tx(self, command: str, args: dict[str, str]) -> Any:
        """An ``operator`` transaction, committed by the node in a block of its own."""
        out = self.run("operator_tx", {"tx": self.signed_operator_tx(command, args).hex()})
        if out.get("code") != 0:
            raise OperatorTxFailed(out)
        return out

    def resume(self, force: bool = False) -> Any:
        """Resume; after a rollback, first reopen every market post-only with the node's
        configured price band and liquidation wait (one operator transaction)."""
        info = self.rpc.call("admin_info")
        out: dict[str, Any] = {}
        if info.get("reopen_pending") and not force:
            out["reopen"] = self.operator_tx("market_mode", {
                "market": "*", "mode": "post-only",
                "price_band_ppm": info["reopen"]["price_band_ppm"],
                "liquidation_wait": info["reopen"]["liquidation_wait"]})
        out.update(self.run("resume", {"force": "true"} if force else {}))
        return out

    def rollback(self, reason: str, to_height: int | None = None,
                 to_snapshot: str | None = None, dry_run: bool = False) -> Any:
        """Dry run first (it names the target block), then sign the fork certificate of the
        new era and send the rollback with it."""
        target = ({"to_height": str(to_height)} if to_height is not None
                  else {"to_snapshot": str(to_snapshot)})
        plan = self.run("rollback", dict(target, dry_run="true"))
        if dry_run:
            return plan
        return self.run("rollback", dict(target, reason=reason,
                                         certificate=self._certificate(plan, reason)))

    def rehearse(self, reason: str, to_height: int | None = None,
                 to_snapshot: str | None = None, cancel_orders_keep: str | None = None,
                 cancel_orders_market: str | None = None,
                 exclusions: dict[str, str] | None = None) -> Any:
        """The whole recovery in a scratch copy on the node: the same certificate the real
        rollback would carry, the operators' ``cancel_orders`` transaction when
        ``cancel_orders_keep`` is given (kinds to keep, comma-separated, may be empty), and
        the replay's exclusions (``exclude_tx`` / ``exclude_sender`` / ``exclude_type``)."""
        target = ({"to_height": str(to_height)} if to_height is not None
                  else {"to_snapshot": str(to_snapshot)})
        plan = self.run("rollback", dict(target, dry_run="true"))
        args = dict(target, reason=reason, certificate=self._certificate(plan, reason),
                    **{k: v for k, v in (exclusions or {}).items() if v})
        if cancel_orders_keep is not None:
            cargs = {"keep": cancel_orders_keep}
            if cancel_orders_market:
                cargs["market"] = cancel_orders_market
            args["operator_txs"] = self.signed_operator_tx(  # in the block after the target
                "cancel_orders", cargs, int(plan["plan"]["to_time_ms"]) + 1).hex()
        return self.run("rehearse", args)

    def _certificate(self, plan: dict[str, Any], reason: str) -> str:
        """The fork certificate of a rollback plan, signed by the keys (hex)."""
        p = plan["plan"]
        cert = ForkCertificate(
            chain_id=self.info()["chain_id"], era=int(p["new_era"]),
            from_height=int(p["from_height"]), to_height=int(p["to_height"]),
            to_block_hash=bytes.fromhex(p["to_block_hash"]),
            state_root=bytes.fromhex(p["state_root"]), reason=reason)
        signed = sign_fork(cert, self.keys, int(self.info()["threshold"]))
        return signed.encode().hex()
