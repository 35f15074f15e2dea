"""The public JSON-RPC server: JSON-RPC 2.0 over HTTP (POST, batches, and the URI form ``GET
/<method>?param=...``), served by hypercorn in the node's trio nursery.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from node.api.chain_methods import METHODS
from node.api.rpc_params import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    Params,
    RPCError,
    json_int,
    reject_error,
    tx_param,
)
from node.mempool import MempoolReject
from node.node import Node

log = logging.getLogger("appchain.rpc")


MAX_BATCH = 100


class JSONRPCResponse(JSONResponse):
    """ASCII-only JSON: an echoed id may hold a lone surrogate, which UTF-8 cannot encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")


def _error(id_: Any, err: RPCError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "error": err.to_json()}


async def dispatch(node: Node, req: Any) -> dict[str, Any] | None:
    """Answer one request object; ``None`` for a notification (no ``id``)."""
    if not isinstance(req, dict):
        return _error(None, RPCError(INVALID_REQUEST, "request must be a JSON object"))
    id_ = req.get("id")
    if isinstance(id_, (dict, list)) or isinstance(id_, bool) or (
            isinstance(id_, float) and not math.isfinite(id_)):  # NaN/Infinity: not JSON
        return _error(None, RPCError(INVALID_REQUEST, "id must be a string, number or null"))
    if req.get("jsonrpc") != "2.0":
        return _error(id_, RPCError(INVALID_REQUEST, 'jsonrpc must be "2.0"'))
    method = req.get("method")
    if not isinstance(method, str):
        return _error(id_, RPCError(INVALID_REQUEST, "method must be a string"))
    notification = "id" not in req  # the server must not answer it, even with an error
    params = req.get("params", {})
    if params == []:
        params = {}
    if not isinstance(params, dict):
        err = RPCError(INVALID_PARAMS, "params must be an object (named params)")
        return None if notification else _error(id_, err)
    handler = METHODS.get(method)
    try:
        if handler is None:
            raise RPCError(METHOD_NOT_FOUND, f"method {method!r} not found",
                           {"methods": sorted(METHODS)})
        result = await handler(node, params)
    except RPCError as e:
        out = _error(id_, e)
    except Exception:  # a bug must not take the server down; the log keeps the traceback
        log.exception("internal error in %s", method)
        out = _error(id_, RPCError(INTERNAL_ERROR, "internal error"))
    else:
        out = {"jsonrpc": "2.0", "id": id_, "result": result}
    return None if notification else out


def _plain_broadcast(req: Any) -> bytes | None:
    """The tx bytes of a well-formed ``broadcast_tx_sync`` request with an id, else None."""
    if (type(req) is not dict or req.get("method") != "broadcast_tx_sync"
            or req.get("jsonrpc") != "2.0" or type(req.get("id")) not in (int, str)):
        return None
    params = req.get("params")
    if type(params) is not dict or params.keys() != {"tx"}:
        return None
    try:
        return tx_param(params)
    except RPCError:
        return None


async def dispatch_batch(node: Node, reqs: list[Any]) -> list[dict[str, Any] | None]:
    """Answer a batch in order. Its ``broadcast_tx_sync`` entries have their signatures
    checked together on all cores first; admission still happens in batch order, so one
    sender's nonces may follow each other within a batch."""
    raws = [_plain_broadcast(r) for r in reqs]
    wanted = [r for r in raws if r is not None]
    checked = iter(await node.intake.precheck_many(wanted) if len(wanted) > 1 else [])
    answers: list[dict[str, Any] | None] = []
    for req, raw in zip(reqs, raws, strict=True):
        if raw is None or len(wanted) <= 1:
            answers.append(await dispatch(node, req))
            continue
        try:
            tx = node.intake.admit(next(checked))
        except MempoolReject as e:
            answers.append(_error(req["id"], reject_error(e)))
        else:
            answers.append({"jsonrpc": "2.0", "id": req["id"],
                            "result": {"code": 0, "hash": tx.hash.hex(), "log": ""}})
    return answers


DRAIN_LIMIT = 16 * 1024 * 1024


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, or ``RPCError`` if it exceeds ``limit``.

    An oversized body is still read (and discarded) up to ``DRAIN_LIMIT`` so that the client
    receives the error answer instead of a connection reset.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            if size > DRAIN_LIMIT:
                break
            chunks.clear()
            continue
        chunks.append(chunk)
    if size > limit:
        raise RPCError(INVALID_REQUEST, f"request body exceeds {limit} bytes")
    return b"".join(chunks)


def build_app(node: Node) -> Starlette:
    """The ASGI app serving JSON-RPC, URI calls, metrics and health for ``node``."""

    async def jsonrpc(request: Request) -> Response:
        try:
            body = await _read_body(request, node.cfg.rpc.max_body_bytes)
        except RPCError as e:
            return JSONRPCResponse(_error(None, e), status_code=413)
        try:
            req = json.loads(body, parse_int=json_int)
        except (ValueError, UnicodeDecodeError):
            return JSONRPCResponse(_error(None, RPCError(PARSE_ERROR, "body is not valid JSON")))
        except RecursionError:
            return JSONRPCResponse(_error(None, RPCError(PARSE_ERROR, "JSON is nested too deeply")))
        if isinstance(req, list):
            if not req:
                return JSONRPCResponse(_error(None, RPCError(INVALID_REQUEST, "empty batch")))
            if len(req) > MAX_BATCH:
                return JSONRPCResponse(_error(
                    None, RPCError(INVALID_REQUEST, f"batch larger than {MAX_BATCH}")))
            answers = [a for a in await dispatch_batch(node, req) if a is not None]
            return JSONRPCResponse(answers) if answers else Response(status_code=204)
        answer = await dispatch(node, req)
        return JSONRPCResponse(answer) if answer is not None else Response(status_code=204)

    async def uri_call(request: Request) -> Response:
        method = request.path_params["method"]
        if method == "metrics":
            return Response(node.metrics.render(),
                            media_type="text/plain; version=0.0.4; charset=utf-8")
        params: Params = {k: v.strip('"') for k, v in request.query_params.items()}
        answer = await dispatch(node, {"jsonrpc": "2.0", "id": -1, "method": method,
                                       "params": params})
        if answer is None:  # cannot happen: an id was given
            return Response(status_code=204)
        status = 200 if "result" in answer else (404 if answer["error"]["code"] ==
                                                 METHOD_NOT_FOUND else 400)
        return JSONRPCResponse(answer, status_code=status)

    return Starlette(routes=[
        Route("/", jsonrpc, methods=["POST"]),
        Route("/{method}", uri_call, methods=["GET"]),
    ])


async def serve_app(app: Starlette, host: str, port: int, *,
                    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve an ASGI app until cancelled; reports the bound ``http://host:port``."""
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("appchain.http")
    config.keep_alive_timeout = 30
    config.graceful_timeout = 1

    async def run(*, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        await serve(app, config, task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(run)
        task_status.started(binds[0])


async def serve_rpc(node: Node, host: str, port: int, *,
                    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; reports the bound ``http://host:port`` through ``task_status``."""
    await serve_app(build_app(node), host, port, task_status=task_status)
