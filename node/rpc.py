"""JSON-RPC 2.0 over HTTP (POST ``/``), method names and shapes after CometBFT's RPC.

Also: ``GET /metrics`` (Prometheus text), ``GET /health``, and CometBFT-style URI calls
(``GET /status``, ``GET /block?height=5``) for quick looks with curl.

Every failure is a JSON-RPC error object with a stable code: the standard -32700 (parse
error), -32600 (invalid request, including an oversized body), -32601 (method not found),
-32602 (invalid params), -32603 (internal error), and this node's own codes: the mempool's
``RejectCode`` values (1001-1011), 1020 (timed out waiting for commit) and 1030 (not found).
A handler bug is logged and answered as -32603: the server keeps serving.

``block``, ``header`` and ``block_results`` also serve the blocks a rollback abandoned
(``era`` + ``height``, read from the archive, ``x`` keyspace): the evidence of a bad fork stays
readable by anyone, not only by the operators who hold the store.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chain.block import Block, TxResult
from chain.errors import ChainError
from node import __version__
from node.exchange_views import (
    account_exchange_json,
    orderbook_json,
    orders_json,
    position_of,
)
from node.mempool import MempoolReject
from node.node import Node, query_state
from node.views import (
    b64,
    block_json,
    decoded_or_error,
    jsonify,
    result_json,
    signed_header_json,
)
from state.records import (
    BAD_DEBT,
    INSURANCE_ADDRESS,
    MARKET,
    MARKET_STATE,
    SYMBOL_RE,
    Account,
    Market,
    MarketState,
    Pool,
    market_key,
    market_state_key,
)
from state.schema import account_key, archive_key, block_key, results_key
from state.store import StoreError, decode_local

log = logging.getLogger("appchain.rpc")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
COMMIT_TIMEOUT = 1020
NOT_FOUND = 1030
MAX_BATCH = 100
U64_MAX = 2**64 - 1

HEX32 = re.compile(r"[0-9a-fA-F]{64}")
HEXANY = re.compile(r"(?:[0-9a-fA-F]{2})+")
MAX_KEY = 1024


class RPCError(Exception):
    """An error answer: ``code`` and ``message`` go to the client, ``data`` if given."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


Params = dict[str, Any]
Handler = Callable[[Node, Params], Awaitable[Any]]


def _only(params: Params, allowed: set[str]) -> None:
    extra = set(params) - allowed
    if extra:
        raise RPCError(INVALID_PARAMS, f"unknown parameter(s) {sorted(extra)}")


def _u64(v: Any, name: str) -> int:
    """A u64 parameter given as a JSON integer or an ASCII decimal string.

    The string's length is checked before ``int()``: Python refuses to convert more than
    4300 digits (ValueError), and that must be an invalid-params answer, not an internal
    error. (A JSON *number* that long is read as Infinity by :func:`_json_int`.)"""
    if isinstance(v, float) and math.isinf(v):
        raise RPCError(INVALID_PARAMS, f"{name} must be an integer in [0, 2**64-1]")
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise RPCError(INVALID_PARAMS, f"{name} must be an integer or a decimal string")
    if isinstance(v, str):
        # isascii: str.isdigit() also accepts digits such as '²' that int() refuses.
        if not (v.isascii() and v.isdigit()):
            raise RPCError(INVALID_PARAMS, f"{name} must be a non-negative integer")
        if len(v.lstrip("0")) > len(str(U64_MAX)):
            raise RPCError(INVALID_PARAMS, f"{name} must be an integer in [0, 2**64-1]")
        v = int(v)
    if not 0 <= v <= U64_MAX:  # above 2**64-1 the store's height keys cannot be packed
        raise RPCError(INVALID_PARAMS, f"{name} must be an integer in [0, 2**64-1]")
    return v


def _height(params: Params, node: Node, name: str = "height") -> int:
    v = params.get(name)
    if v is None:
        return node.head.height
    return _u64(v, name)


def _json_int(text: str) -> int | float:
    """JSON integers for ``json.loads``; one longer than Python converts (4300 digits by
    default) becomes ±Infinity, which the id check and every parameter refuse, instead of
    making the whole body unparsable."""
    limit = sys.get_int_max_str_digits()
    if limit and len(text.lstrip("-")) > limit:
        return -math.inf if text.startswith("-") else math.inf
    return int(text)


def _hex32(params: Params, name: str) -> bytes:
    v = params.get(name)
    if not isinstance(v, str):
        raise RPCError(INVALID_PARAMS, f"{name} is required (64 hex characters)")
    v = v.removeprefix("0x")
    if not HEX32.fullmatch(v):
        raise RPCError(INVALID_PARAMS, f"{name} must be 64 hex characters")
    return bytes.fromhex(v)


def _tx_param(params: Params) -> bytes:
    v = params.get("tx")
    if not isinstance(v, str):
        raise RPCError(INVALID_PARAMS, "tx is required (base64 of the transaction bytes)")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RPCError(INVALID_PARAMS, "tx is not valid base64") from e


def _reject(e: MempoolReject) -> RPCError:
    return RPCError(int(e.code), e.message, {"reason": e.code.name.lower()})


def _block_at(node: Node, height: int) -> Any:
    block = node.block(height)
    if block is None:
        raise RPCError(NOT_FOUND, f"no block at height {height} (head is {node.head.height})")
    return block


@dataclass(frozen=True)
class _EraBlock:
    """A block named by era and height: the chain's own, or one a rollback abandoned."""

    block: Block
    results: list[bytes] | None
    era: int
    abandoned: bool

    def tag(self) -> dict[str, Any]:
        """Added to the usual result, so a client never mistakes an abandoned block."""
        return {"abandoned": self.abandoned, "era": str(self.era)}


def _era_height(params: Params) -> tuple[int, int] | None:
    """``(era, height)`` when the call names an era, else None (the chain as it is)."""
    if params.get("era") is None:
        return None
    era = _u64(params["era"], "era")
    if "hash" in params:
        raise RPCError(INVALID_PARAMS, "era goes with height, not hash: give era and height")
    if params.get("height") is None:
        raise RPCError(INVALID_PARAMS, "height is required with era")
    return era, _u64(params["height"], "height")


def _decode_stored(raw: bytes, what: str) -> Block:
    try:
        return Block.decode_block(raw)
    except ChainError as e:
        raise RPCError(INTERNAL_ERROR, f"store inconsistency: {what} does not decode "
                       f"({e}); run verification") from e


def _block_in_era(node: Node, era: int, height: int) -> _EraBlock:
    """The block of ``era`` at ``height``: the chain's block there if it is of that era,
    else the archived block a rollback abandoned (``x`` + era + height). One snapshot, so a
    rollback moving the block from the chain to the archive meanwhile is seen whole."""
    with node.store.db.snapshot() as snap:
        raw = snap.get(block_key(height))
        live = None if raw is None else _decode_stored(raw, f"block {height}")
        if live is not None and live.header.era == era:
            res = snap.get(results_key(height))
            return _EraBlock(live, None if res is None else list(decode_local(res)), era,
                             False)
        archived = snap.get(archive_key(era, height, b"b"))
        if archived is not None:
            res = snap.get(archive_key(era, height, b"r"))
            block = _decode_stored(archived, f"the archived block of era {era} at height "
                                             f"{height}")
            return _EraBlock(block, None if res is None else list(decode_local(res)), era,
                             True)
        head = node.head.height
    there = (f"the chain's block there is of era {live.header.era}" if live is not None
             else f"the chain has no block there (head is {head})")
    raise RPCError(NOT_FOUND, f"no block of era {era} at height {height}: {there}, and no "
                   f"block of era {era} was abandoned there")


async def rpc_health(node: Node, params: Params) -> Any:
    _only(params, set())
    return {}


async def rpc_fork_certificate(node: Node, params: Params) -> Any:
    """The operator-signed certificate that opened ``era`` (hex of its canonical bytes)."""
    _only(params, {"era"})
    from state.schema import fork_key

    raw_era = params.get("era")
    try:
        era = int(str(raw_era))
    except ValueError:
        era = -1
    if era < 1:
        raise RPCError(INVALID_PARAMS, "era must be an integer >= 1")
    raw = node.store.db.get(fork_key(era))
    if raw is None:
        raise RPCError(NOT_FOUND, f"no fork certificate for era {era}")
    from chain.admin import SignedForkCertificate

    c = SignedForkCertificate.decode(raw).certificate
    return {"era": str(era), "certificate": raw.hex(),
            "from_height": str(c.from_height), "to_height": str(c.to_height),
            "to_block_hash": c.to_block_hash.hex(), "state_root": c.state_root.hex(),
            "reason": c.reason}


async def rpc_status(node: Node, params: Params) -> Any:
    _only(params, set())
    h = node.head
    block = node.block(h.height)
    return {
        "node_info": {
            "network": node.params.chain_id,
            "version": __version__,
            "moniker": node.cfg.moniker,
            "genesis_hash": node.genesis.hash.hex(),
        },
        "sync_info": {
            "latest_block_hash": h.hash.hex(),
            "latest_app_hash": h.state_root.hex(),
            "latest_block_height": str(h.height),
            "latest_block_time": str(h.time),
            "earliest_block_height": str(node.genesis.initial_height),
            "era": str(h.era),
            "next_era": str(node.next_era),
            "catching_up": False,
        },
        "producer_info": {
            "pub_key": node.params.producer.hex(),
            "producing": node.signer is not None,
            "last_block_txs": len(block.txs) if block else 0,
        },
        "mempool": {"size": len(node.mempool), "max_size": node.mempool.max_size},
        "halted": node.halted,
        "halt_scheduled": node.halt_at,
        "held_back_txs": len(node.held_back),
        "markets": _market_modes(node),
    }


def _market_modes(node: Node) -> list[dict[str, Any]]:
    """Each market's trading mode and reopening limits (the resume policy, at a glance)."""
    out = []
    for k, raw in node.store.iter_state(MARKET_STATE):
        st = MarketState.decode(raw)
        out.append({"symbol": k[len(MARKET_STATE):].decode(), "mode": st.mode,
                    "price_band_ppm": str(st.price_band_ppm),
                    "liquidation_wait": str(st.liquidation_wait)})
    return out


async def rpc_genesis(node: Node, params: Params) -> Any:
    _only(params, set())
    return {"genesis": node.genesis.to_json_obj(), "hash": node.genesis.hash.hex()}


async def rpc_block(node: Node, params: Params) -> Any:
    _only(params, {"height", "hash", "era"})
    named = _era_height(params)
    if named is not None:
        found = _block_in_era(node, *named)
        return {**block_json(found.block), **found.tag()}
    if "hash" in params:
        h = node.store.height_of(_hex32(params, "hash"))
        if h is None:
            raise RPCError(NOT_FOUND, "no block with that hash on the chain (an abandoned "
                           "block is fetched by era and height)")
        return block_json(_block_at(node, h))
    return block_json(_block_at(node, _height(params, node)))


async def rpc_header(node: Node, params: Params) -> Any:
    _only(params, {"height", "era"})
    named = _era_height(params)
    if named is not None:
        found = _block_in_era(node, *named)
        return {**signed_header_json(found.block.signed_header), **found.tag()}
    return signed_header_json(_block_at(node, _height(params, node)).signed_header)


def _results_json(height: int, block: Block, results: list[bytes]) -> dict[str, Any]:
    n = len(block.txs)
    end = [TxResult.decode(r) for r in results[n:]]
    return {
        "height": str(height),
        "txs_results": [result_json(TxResult.decode(r)) for r in results[:n]],
        "end_block_events": [e for r in end for e in result_json(r)["events"]],
    }


async def rpc_block_results(node: Node, params: Params) -> Any:
    _only(params, {"height", "era"})
    named = _era_height(params)
    if named is not None:
        found = _block_in_era(node, *named)
        if found.results is None:
            raise RPCError(NOT_FOUND, f"no results stored for the "
                           f"{'abandoned ' if found.abandoned else ''}block of era "
                           f"{found.era} at height {named[1]}")
        return {**_results_json(named[1], found.block, found.results), **found.tag()}
    height = _height(params, node)
    results = node.store.results(height)
    block = node.block(height)
    if results is None or block is None:
        raise RPCError(NOT_FOUND, f"no block at height {height}")
    return _results_json(height, block, results)


async def rpc_tx(node: Node, params: Params) -> Any:
    _only(params, {"hash"})
    th = _hex32(params, "hash")
    loc = node.store.tx_location(th)
    abandoned = _abandoned(node, th)
    if loc is None:
        if th in node.mempool:
            raise RPCError(NOT_FOUND, "transaction is pending in the mempool, not yet committed",
                           {"pending": True})
        if abandoned is not None:
            raise RPCError(NOT_FOUND, "transaction was in an abandoned block "
                           f"(era {abandoned['era']}, height {abandoned['height']}) and is "
                           "not on the chain: " + (abandoned.get("fate") or {}).get(
                               "reason", "not replayed (yet)"), {"abandoned": abandoned})
        raise RPCError(NOT_FOUND, "transaction not found")
    height, index = loc
    block = _block_at(node, height)
    results = node.store.results(height) or []
    if index >= len(results) or index >= len(block.txs):
        raise RPCError(INTERNAL_ERROR, f"store inconsistency: block {height} lacks "
                       f"transaction {index} or its result; run verification")
    raw = block.txs[index]
    return {
        "hash": th.hex(),
        "height": str(height),
        "index": index,
        "tx": b64(raw),
        "decoded": decoded_or_error(raw),
        "tx_result": result_json(TxResult.decode(results[index])),
        **({"abandoned": abandoned} if abandoned is not None else {}),
    }


def _abandoned(node: Node, th: bytes) -> dict[str, Any] | None:
    """Where an abandoned block held this transaction, and what replay did with it."""
    from node.replay import fate_of
    from state.schema import TX_FATE, height_from, tx_location_from

    raw = node.store.db.get(TX_FATE + th)
    if raw is None:
        return None
    era = height_from(raw[:8])
    height, index = tx_location_from(raw[8:])
    fate = fate_of(node.store, th)
    out: dict[str, Any] = {"era": str(era), "height": str(height), "index": index}
    if fate is not None:
        out["fate"] = {k: (str(v) if isinstance(v, int) and not isinstance(v, bool) else v)
                       for k, v in fate.items() if k not in ("hash", "era", "height",
                                                             "index")}
    return out


async def rpc_account(node: Node, params: Params) -> Any:
    _only(params, {"address"})
    addr = _hex32(params, "address")
    with node.store.snapshot() as snap:  # state and height from the same commit
        raw = snap.state_get(account_key(addr))
        head = snap.head()
        exchange = account_exchange_json(snap.overlay(), addr)
    acct = Account(0, 0) if raw is None else Account.decode(raw)
    pending = node.mempool.pending_nonce(addr)
    return {
        "address": addr.hex(),
        "balance": str(acct.balance),
        "nonce": str(acct.nonce),
        "next_nonce": str(acct.nonce if pending is None else pending),
        "height": str(head.height if head else node.head.height),
        "exists": raw is not None,
        **exchange,
    }


def _symbol(params: Params) -> str:
    symbol = params.get("symbol")
    if not isinstance(symbol, str) or not SYMBOL_RE.fullmatch(symbol):
        raise RPCError(INVALID_PARAMS, "symbol is required, e.g. BTC-USD-PERP")
    return symbol


async def rpc_orderbook(node: Node, params: Params) -> Any:
    _only(params, {"symbol", "depth"})
    symbol = _symbol(params)
    depth = params.get("depth", 20)
    if isinstance(depth, str) and depth.isascii() and depth.isdigit():
        depth = int(depth)
    if type(depth) is not int or not 1 <= depth <= 500:
        raise RPCError(INVALID_PARAMS, "depth must be an integer in 1..500")
    with node.store.snapshot() as snap:
        if snap.state_get(market_key(symbol)) is None:
            raise RPCError(NOT_FOUND, f"no market {symbol!r}")
        head = snap.head()
        out = orderbook_json(snap.overlay(), symbol, depth)
    out["height"] = str(head.height if head else node.head.height)
    return out


async def rpc_position(node: Node, params: Params) -> Any:
    _only(params, {"address", "symbol"})
    addr = _hex32(params, "address")
    symbol = _symbol(params)
    with node.store.snapshot() as snap:
        head = snap.head()
        pos = position_of(snap.overlay(), addr, symbol)
    return {"address": addr.hex(), "position": pos,
            "height": str(head.height if head else node.head.height)}


async def rpc_orders(node: Node, params: Params) -> Any:
    _only(params, {"address", "symbol"})
    addr = _hex32(params, "address")
    symbol = _symbol(params) if "symbol" in params else None
    with node.store.snapshot() as snap:
        head = snap.head()
        orders = orders_json(snap.overlay(), addr, symbol)
    return {"address": addr.hex(), "orders": orders,
            "height": str(head.height if head else node.head.height)}


def _market_json(symbol: str, raw_m: bytes | None, raw_s: bytes | None) -> dict[str, Any]:
    if raw_m is None or raw_s is None:
        raise RPCError(NOT_FOUND, f"no market {symbol!r}")
    return {"symbol": symbol,
            "params": jsonify(Market.decode(raw_m).to_obj()),
            "state": jsonify(MarketState.decode(raw_s).to_obj())}


async def rpc_market(node: Node, params: Params) -> Any:
    _only(params, {"symbol"})
    symbol = _symbol(params)
    with node.store.snapshot() as snap:
        head = snap.head()
        out = _market_json(symbol, snap.state_get(market_key(symbol)),
                           snap.state_get(market_state_key(symbol)))
    out["height"] = str(head.height if head else node.head.height)
    return out


async def rpc_markets(node: Node, params: Params) -> Any:
    _only(params, set())
    with node.store.snapshot() as snap:
        head = snap.head()
        symbols = [k[len(MARKET):].decode() for k, _ in node.store.iter_state(MARKET)]
        markets = [_market_json(s, snap.state_get(market_key(s)),
                                snap.state_get(market_state_key(s))) for s in symbols]
        fund = snap.state_get(account_key(INSURANCE_ADDRESS))
        debt = snap.state_get(BAD_DEBT)
    return {"markets": markets, "height": str(head.height if head else node.head.height),
            "insurance_fund": {
                "address": INSURANCE_ADDRESS.hex(),
                "balance": str(Account.decode(fund).balance if fund else 0),
                "bad_debt": str(Pool.decode(debt).amount if debt else 0)}}


async def rpc_query(node: Node, params: Params) -> Any:
    _only(params, {"path", "data", "height", "prove"})
    path = params.get("path", "/key")
    if path != "/key":
        raise RPCError(INVALID_PARAMS, 'path must be "/key" (data = hex of a state key)')
    data = params.get("data")
    if not isinstance(data, str) or not HEXANY.fullmatch(data) or len(data) > 2 * MAX_KEY:
        raise RPCError(INVALID_PARAMS, f"data must be hex of a state key (at most {MAX_KEY} "
                       "bytes)")
    prove = params.get("prove", True)
    if type(prove) is not bool:
        raise RPCError(INVALID_PARAMS, "prove must be true or false")
    height = _height(params, node) if "height" in params else None
    try:
        ans = query_state(node.store, bytes.fromhex(data), height, prove)
    except StoreError as e:
        raise RPCError(NOT_FOUND, str(e)) from e
    return {
        "response": {
            "code": 0,
            "key": ans.key.hex(),
            "value": None if ans.value is None else b64(ans.value),
            "exists": ans.value is not None,
            "height": str(ans.height),
            "proof": None if ans.proof is None else b64(ans.proof.encode()),
        },
        "signed_header": None if ans.signed_header is None
        else signed_header_json(ans.signed_header),
    }


async def rpc_broadcast_tx_sync(node: Node, params: Params) -> Any:
    _only(params, {"tx"})
    raw = _tx_param(params)
    try:
        tx = node.submit(raw)
    except MempoolReject as e:
        raise _reject(e) from e
    return {"code": 0, "hash": tx.hash.hex(), "log": ""}


async def rpc_broadcast_tx_commit(node: Node, params: Params) -> Any:
    _only(params, {"tx"})
    raw = _tx_param(params)
    timeout = node.cfg.rpc.timeout_broadcast_tx_commit_ms / 1000
    try:
        tx, committed = await node.submit_and_wait(raw, timeout)
    except MempoolReject as e:
        raise _reject(e) from e
    if committed is None:
        raise RPCError(
            COMMIT_TIMEOUT,
            f"transaction accepted but not committed within {timeout:g}s",
            {"hash": tx.hash.hex()},
        )
    return {
        "hash": tx.hash.hex(),
        "height": str(committed.height),
        "index": committed.index,
        "tx_result": result_json(committed.result),
    }


async def rpc_num_unconfirmed_txs(node: Node, params: Params) -> Any:
    _only(params, set())
    return {"n_txs": len(node.mempool), "total": len(node.mempool)}


METHODS: dict[str, Handler] = {
    "health": rpc_health,
    "status": rpc_status,
    "genesis": rpc_genesis,
    "block": rpc_block,
    "header": rpc_header,
    "block_results": rpc_block_results,
    "tx": rpc_tx,
    "account": rpc_account,
    "query": rpc_query,
    "market": rpc_market,
    "orderbook": rpc_orderbook,
    "position": rpc_position,
    "orders": rpc_orders,
    "markets": rpc_markets,
    "abci_query": rpc_query,
    "broadcast_tx_sync": rpc_broadcast_tx_sync,
    "broadcast_tx_commit": rpc_broadcast_tx_commit,
    "num_unconfirmed_txs": rpc_num_unconfirmed_txs,
    "fork_certificate": rpc_fork_certificate,
}


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
        return _tx_param(params)
    except RPCError:
        return None


async def dispatch_batch(node: Node, reqs: list[Any]) -> list[dict[str, Any] | None]:
    """Answer a batch in order. Its ``broadcast_tx_sync`` entries have their signatures
    checked together on all cores first; admission still happens in batch order, so one
    sender's nonces may follow each other within a batch."""
    raws = [_plain_broadcast(r) for r in reqs]
    wanted = [r for r in raws if r is not None]
    checked = iter(await node.precheck_many(wanted) if len(wanted) > 1 else [])
    answers: list[dict[str, Any] | None] = []
    for req, raw in zip(reqs, raws, strict=True):
        if raw is None or len(wanted) <= 1:
            answers.append(await dispatch(node, req))
            continue
        try:
            tx = node.admit(next(checked))
        except MempoolReject as e:
            answers.append(_error(req["id"], _reject(e)))
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
            req = json.loads(body, parse_int=_json_int)
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
