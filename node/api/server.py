"""The public JSON-RPC server: JSON-RPC 2.0 over HTTP (POST, batches, and the URI form ``GET
/<method>?param=...``), served by :mod:`node.api.http_server` in the node's trio nursery
(connection cap, timeouts and the streamed body limit there).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from typing import Any

import trio

from node.api.chain_methods import METHODS
from node.api.http_server import (
    Handler,
    HTTPLimits,
    HTTPRequest,
    HTTPResponse,
    HTTPServer,
    error_response,
    json_body,
)
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
from node.api.tx_forward import forward_batch
from node.mempool import MempoolReject
from node.node import Node

log = logging.getLogger("appchain.rpc")


MAX_BATCH = 100


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
    sender's nonces may follow each other within a batch. A follower forwards them to the
    producer as one batch, in the same order."""
    raws = [_plain_broadcast(r) for r in reqs]
    wanted = [r for r in raws if r is not None]
    if len(wanted) <= 1:
        return [await dispatch(node, req) for req in reqs]
    if node.follower is not None:
        try:
            results: list[Any] = await forward_batch(node, wanted)
        except RPCError as e:  # not forwarded at all (no producer RPC known)
            results = [e] * len(wanted)
        checked: Iterator[Any] = iter(results)
    else:
        checked = iter(await node.intake.precheck_many(wanted))
    answers: list[dict[str, Any] | None] = []
    for req, raw in zip(reqs, raws, strict=True):
        if raw is None:
            answers.append(await dispatch(node, req))
            continue
        item = next(checked)
        if isinstance(item, RPCError):
            answers.append(_error(req["id"], item))
            continue
        if node.follower is not None:
            answers.append({"jsonrpc": "2.0", "id": req["id"], "result": item})
            continue
        try:
            tx = node.intake.admit(item)
        except MempoolReject as e:
            answers.append(_error(req["id"], reject_error(e)))
        else:
            answers.append({"jsonrpc": "2.0", "id": req["id"],
                            "result": {"code": 0, "hash": tx.hash.hex(), "log": ""}})
    return answers


def limits_of(max_connections: int, header_timeout_ms: int, body_timeout_ms: int,
              idle_timeout_ms: int, max_body_bytes: int) -> HTTPLimits:
    """HTTP limits from config values (milliseconds)."""
    return HTTPLimits(max_connections=max_connections, header_timeout_s=header_timeout_ms / 1000,
                      body_timeout_s=body_timeout_ms / 1000,
                      idle_timeout_s=idle_timeout_ms / 1000, max_body_bytes=max_body_bytes)


def json_response(doc: Any, status: int = 200) -> HTTPResponse:
    return HTTPResponse(status, json_body(doc))


NO_CONTENT = HTTPResponse(204)


def route_error(request: HTTPRequest, routes: dict[str, str]) -> HTTPResponse | None:
    """404 or 405 for a request outside ``routes`` (path -> the one method it takes); a
    path of ``/*`` stands for any single segment."""
    path = request.path
    key = path if path in routes else ("/*" if path.count("/") == 1 and path != "/" else None)
    if key is None or key not in routes:
        return error_response(404, INVALID_REQUEST, f"no such path {path!r}")
    if request.method != routes[key]:
        return error_response(405, INVALID_REQUEST,
                              f"{request.method} not allowed on {path!r}",
                              (("allow", routes[key]),))
    return None


def build_app(node: Node) -> Handler:
    """The handler serving JSON-RPC, URI calls, metrics and health for ``node``."""

    async def jsonrpc(body: bytes) -> HTTPResponse:
        try:
            req = json.loads(body, parse_int=json_int)
        except (ValueError, UnicodeDecodeError):
            return json_response(_error(None, RPCError(PARSE_ERROR, "body is not valid JSON")))
        except RecursionError:
            return json_response(_error(None, RPCError(PARSE_ERROR, "JSON is nested too deeply")))
        if isinstance(req, list):
            if not req:
                return json_response(_error(None, RPCError(INVALID_REQUEST, "empty batch")))
            if len(req) > MAX_BATCH:
                return json_response(_error(
                    None, RPCError(INVALID_REQUEST, f"batch larger than {MAX_BATCH}")))
            answers = [a for a in await dispatch_batch(node, req) if a is not None]
            return json_response(answers) if answers else NO_CONTENT
        answer = await dispatch(node, req)
        return json_response(answer) if answer is not None else NO_CONTENT

    async def uri_call(method: str, query: dict[str, str]) -> HTTPResponse:
        if method == "metrics":
            return HTTPResponse(200, node.metrics.render(),
                                "text/plain; version=0.0.4; charset=utf-8")
        params: Params = {k: v.strip('"') for k, v in query.items()}
        answer = await dispatch(node, {"jsonrpc": "2.0", "id": -1, "method": method,
                                       "params": params})
        if answer is None:  # cannot happen: an id was given
            return NO_CONTENT
        status = 200 if "result" in answer else (404 if answer["error"]["code"] ==
                                                 METHOD_NOT_FOUND else 400)
        return json_response(answer, status)

    async def handle(request: HTTPRequest) -> HTTPResponse:
        refused = route_error(request, {"/": "POST", "/*": "GET"})
        if refused is not None:
            return refused
        if request.path == "/":
            return await jsonrpc(request.body)
        return await uri_call(request.path[1:], request.query)

    return handle


async def serve_rpc(node: Node, host: str, port: int, *, max_connections: int | None = None,
                    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; reports the bound ``http://host:port`` through ``task_status``.
    ``max_connections`` is the effective cap (``rpc.max_connections`` lowered to fit the
    descriptor budget); by default the configured one."""
    c = node.cfg.rpc
    limits = limits_of(max_connections or c.max_connections, c.header_timeout_ms,
                       c.body_timeout_ms, c.idle_timeout_ms, c.max_body_bytes)
    server = HTTPServer("rpc", build_app(node), limits,
                        on_refused=node.metrics.connection_refused("rpc"))
    await server.serve(host, port, task_status=task_status)
