"""The operator endpoint: JSON-RPC 2.0 over HTTP POST on its own port (127.0.0.1 by default).

Three methods (docs/OPERATIONS.md, docs/PROTOCOL.md §12):

* ``admin_info`` (no parameters, nothing privileged): chain id, operator keys, threshold,
  the node's clock and validity window, so a client can build an envelope the node accepts;
* ``admin_progress`` (no parameters, nothing privileged): how far the running replay or
  rehearsal is (``null`` when none runs), polled by the CLI while the command runs;
* ``admin`` with ``{"envelope": <base64 of a canonical AdminEnvelope>}``: runs the command;
  a refusal is a JSON-RPC error whose code names the reason (:data:`REFUSAL_CODES`) and whose
  ``data`` is ``{"reason": <reason>}``.

Separate from the public RPC so that a firewall rule or a bind address can keep operator power
off the network entirely; every command is still signed, checked and audited.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chain.admin import AdminRefused
from node.api.rpc_params import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RPCError,
)
from node.api.server import JSONRPCResponse, serve_app
from node.chain_head import wall_ms
from node.node import Node
from node.ops.service import COMMANDS, AdminService
from state import meta

log = logging.getLogger("appchain.admin")


MAX_BODY = 256 * 1024


REFUSAL_CODES = {
    "malformed": 1041, "wrong_chain": 1042, "unsigned": 1043, "unknown_key": 1044,
    "bad_signature": 1045, "under_threshold": 1046, "expired": 1047, "not_yet_valid": 1048,
    "replayed": 1049, "unknown_command": 1050, "bad_args": 1051, "refused": 1052,
    "rate_limited": 1053,
}


def _answer(id_: Any, result: Any = None, err: RPCError | None = None) -> JSONRPCResponse:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": id_}
    if err is not None:
        body["error"] = err.to_json()
    else:
        body["result"] = result
    return JSONRPCResponse(body)


def build_admin_app(node: Node, service: AdminService) -> Starlette:
    async def endpoint(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return _answer(None, err=RPCError(INVALID_REQUEST, f"body exceeds {MAX_BODY} bytes"))
        try:
            req = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _answer(None, err=RPCError(PARSE_ERROR, "body is not valid JSON"))
        if not isinstance(req, dict) or req.get("jsonrpc") != "2.0":
            return _answer(None, err=RPCError(INVALID_REQUEST,
                                              'a single JSON-RPC 2.0 object is required'))
        id_ = req.get("id")
        method = req.get("method")
        params = req.get("params", {})
        if not isinstance(params, dict):
            return _answer(id_, err=RPCError(INVALID_PARAMS, "params must be an object"))
        if method == "admin_info":
            p = node.params
            cfg = node.cfg.admin
            extra: dict[str, Any] = {}
            addr = params.get("address")
            if isinstance(addr, str):
                try:
                    extra["next_nonce"] = str(node.chain.committed_nonce(bytes.fromhex(addr)))
                except ValueError:
                    return _answer(id_, err=RPCError(INVALID_PARAMS, "address must be hex"))
            return _answer(id_, {**extra,
                "chain_id": p.chain_id, "operators": [o.hex() for o in p.operators],
                "threshold": p.operator_threshold, "now_ms": str(wall_ms()),
                "max_age_ms": str(cfg.max_age_ms), "max_skew_ms": str(cfg.max_skew_ms),
                "operator_block_time_ms": str(node.producer.system_block_time()),
                "reopen_pending": meta.reopen_pending(node.store),
                "reopen": {"price_band_ppm": str(node.cfg.recovery.reopen_price_band_ppm),
                           "liquidation_wait": str(node.cfg.recovery.fresh_oracle_updates)},
                "commands": sorted(COMMANDS)})
        if method == "admin_progress":  # read-only, unsigned: polled while a replay runs
            return _answer(id_, {"progress": node.progress, "height": str(node.head.height)})
        if method != "admin":
            return _answer(id_, err=RPCError(METHOD_NOT_FOUND, f"method {method!r} not found",
                                             {"methods": ["admin", "admin_info",
                                                                          "admin_progress"]}))
        env = params.get("envelope")
        if set(params) != {"envelope"} or not isinstance(env, str):
            return _answer(id_, err=RPCError(INVALID_PARAMS,
                                             'params must be {"envelope": <base64>}'))
        try:
            raw = base64.b64decode(env, validate=True)
        except (binascii.Error, ValueError):
            return _answer(id_, err=RPCError(INVALID_PARAMS, "envelope is not valid base64"))
        try:
            result = await service.execute(
                raw, request.client.host if request.client is not None else "unknown")
        except AdminRefused as e:
            return _answer(id_, err=RPCError(REFUSAL_CODES[e.reason], e.message,
                                             {"reason": e.reason}))
        except Exception:
            log.exception("internal error running an admin command")
            return _answer(id_, err=RPCError(INTERNAL_ERROR, "internal error"))
        return _answer(id_, result)

    return Starlette(routes=[Route("/", endpoint, methods=["POST"])])


async def _summarise_refusals(service: AdminService) -> None:
    """Write the pending unauthenticated refusals to the audit log every interval, and once
    more when the endpoint stops, so none goes unrecorded."""
    try:
        while True:
            await trio.sleep(service.refusals.summary_interval_s)
            service.write_refusal_summary()
    finally:
        service.write_refusal_summary()


async def serve_admin(node: Node, host: str, port: int, *,
                      task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    service = AdminService(node)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_summarise_refusals, service)
        url = await nursery.start(serve_app, build_admin_app(node, service), host, port)
        task_status.started(url)
