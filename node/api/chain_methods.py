"""The chain's JSON-RPC methods: health, status, genesis, blocks, headers and results (live or
abandoned, by era), transactions, state queries with proofs, fork certificates, and the
broadcast methods, plus the method table the server dispatches on (docs/PROTOCOL.md §9).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chain.admin import SignedForkCertificate
from chain.block import Block, TxResult
from chain.errors import ChainError
from node import __version__
from node.api.exchange_methods import (
    rpc_account,
    rpc_market,
    rpc_markets,
    rpc_orderbook,
    rpc_orders,
    rpc_position,
)
from node.api.rpc_params import (
    COMMIT_TIMEOUT,
    HEXANY,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    MAX_KEY,
    NOT_FOUND,
    Params,
    RPCError,
    era_height,
    only_params,
    param_hex32,
    parse_height,
    parse_u64,
    reject_error,
    tx_param,
)
from node.api.store_guard import guarded
from node.api.tx_forward import forward_commit, forward_sync
from node.mempool import MempoolReject
from node.node import Node
from node.wire_json import (
    b64,
    block_json,
    decoded_or_error,
    result_json,
    signed_header_json,
)
from state import meta
from state.queries import query_state
from state.records import (
    MARKET_STATE,
    MarketState,
)
from state.recovery.archive import find_era_block
from state.store_errors import CorruptValue, StoreError

Handler = Callable[[Node, Params], Awaitable[Any]]


def _block_at(node: Node, height: int) -> Any:
    block = node.store.block(height)
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


def _decode_stored(raw: bytes, what: str) -> Block:
    try:
        return Block.decode_block(raw)
    except ChainError as e:
        raise RPCError(INTERNAL_ERROR, f"store inconsistency: {what} does not decode "
                       f"({e}); run verification") from e


def _block_in_era(node: Node, era: int, height: int) -> _EraBlock:
    """The block of ``era`` at ``height`` (state/recovery/archive.py ``find_era_block``)."""
    try:
        found, live_raw = find_era_block(node.store, era, height)
    except ChainError as e:
        raise RPCError(INTERNAL_ERROR, f"store inconsistency: block {height} does not "
                       f"decode ({e}); run verification") from e
    if found is not None:
        what = (f"the archived block of era {era} at height {height}" if found.abandoned
                else f"block {height}")
        return _EraBlock(_decode_stored(found.raw, what), found.results, era, found.abandoned)
    live = None if live_raw is None else _decode_stored(live_raw, f"block {height}")
    there = (f"the chain's block there is of era {live.header.era}" if live is not None
             else f"the chain has no block there (head is {node.head.height})")
    raise RPCError(NOT_FOUND, f"no block of era {era} at height {height}: {there}, and no "
                   f"block of era {era} was abandoned there")


async def rpc_health(node: Node, params: Params) -> Any:
    only_params(params, set())
    return {}


async def rpc_fork_certificate(node: Node, params: Params) -> Any:
    """The operator-signed certificate that opened ``era`` (hex of its canonical bytes)."""
    only_params(params, {"era"})

    if params.get("era") is None:
        raise RPCError(INVALID_PARAMS, "era is required (an integer >= 1)")
    era = parse_u64(params["era"], "era")
    if era < 1:
        raise RPCError(INVALID_PARAMS, "era must be an integer >= 1")
    raw = meta.fork_certificate(node.store, era)
    if raw is None:
        raise RPCError(NOT_FOUND, f"no fork certificate for era {era}")

    c = SignedForkCertificate.decode(raw).certificate
    return {"era": str(era), "certificate": raw.hex(),
            "from_height": str(c.from_height), "to_height": str(c.to_height),
            "to_block_hash": c.to_block_hash.hex(), "state_root": c.state_root.hex(),
            "reason": c.reason}


async def rpc_status(node: Node, params: Params) -> Any:
    only_params(params, set())
    h = node.head
    block = node.store.block(h.height)
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
            "earliest_block_height": str(node.earliest_block_height),
            "era": str(h.era),
            "next_era": str(node.next_era),
            "catching_up": node.follower is not None and (
                node.follower.peer_height > h.height or not node.follower.connected),
        },
        "producer_info": {
            "pub_key": node.params.producer.hex(),
            "producing": node.signer is not None,
            "last_block_txs": len(block.txs) if block else 0,
        },
        "mempool": {"size": len(node.mempool), "max_size": node.mempool.max_size},
        "halted": None if node.halted is None else node.halted.to_obj(),
        "halt_scheduled": None if node.halt_at is None else node.halt_at.to_obj(),
        "held_back_txs": len(node.intake.held_back),
        "markets": _market_modes(node),
        "follower": None if node.follower is None else node.follower.to_obj(h.height),
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
    only_params(params, set())
    return {"genesis": node.genesis.to_json_obj(), "hash": node.genesis.hash.hex()}


async def rpc_block(node: Node, params: Params) -> Any:
    only_params(params, {"height", "hash", "era"})
    named = era_height(params)
    if named is not None:
        found = _block_in_era(node, *named)
        return {**block_json(found.block), **found.tag()}
    if "hash" in params:
        h = node.store.height_of(param_hex32(params, "hash"))
        if h is None:
            raise RPCError(NOT_FOUND, "no block with that hash on the chain (an abandoned "
                           "block is fetched by era and height)")
        return block_json(_block_at(node, h))
    return block_json(_block_at(node, parse_height(params, node)))


async def rpc_header(node: Node, params: Params) -> Any:
    only_params(params, {"height", "era"})
    named = era_height(params)
    if named is not None:
        found = _block_in_era(node, *named)
        return {**signed_header_json(found.block.signed_header), **found.tag()}
    return signed_header_json(_block_at(node, parse_height(params, node)).signed_header)


def _results_json(height: int, block: Block, results: list[bytes]) -> dict[str, Any]:
    n = len(block.txs)
    end = [TxResult.decode(r) for r in results[n:]]
    return {
        "height": str(height),
        "txs_results": [result_json(TxResult.decode(r)) for r in results[:n]],
        "end_block_events": [e for r in end for e in result_json(r)["events"]],
    }


async def rpc_block_results(node: Node, params: Params) -> Any:
    only_params(params, {"height", "era"})
    named = era_height(params)
    if named is not None:
        found = _block_in_era(node, *named)
        if found.results is None:
            raise RPCError(NOT_FOUND, f"no results stored for the "
                           f"{'abandoned ' if found.abandoned else ''}block of era "
                           f"{found.era} at height {named[1]}")
        return {**_results_json(named[1], found.block, found.results), **found.tag()}
    height = parse_height(params, node)
    results = node.store.results(height)
    block = node.store.block(height)
    if results is None or block is None:
        raise RPCError(NOT_FOUND, f"no block at height {height}")
    return _results_json(height, block, results)


async def rpc_tx(node: Node, params: Params) -> Any:
    only_params(params, {"hash"})
    th = param_hex32(params, "hash")
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
    loc = meta.abandoned_location(node.store, th)
    if loc is None:
        return None
    era, height, index = loc
    fate = meta.fate(node.store, th)
    out: dict[str, Any] = {"era": str(era), "height": str(height), "index": index}
    if fate is not None:
        out["fate"] = {k: (str(v) if isinstance(v, int) and not isinstance(v, bool) else v)
                       for k, v in fate.to_obj().items() if k not in ("hash", "era", "height",
                                                                       "index")}
    return out


async def rpc_query(node: Node, params: Params) -> Any:
    only_params(params, {"path", "data", "height", "prove"})
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
    height = parse_height(params, node) if "height" in params else None
    try:
        ans = query_state(node.store, bytes.fromhex(data), height, prove)
    except CorruptValue:
        raise  # the store's own failure: STORE_FAILURE (node/api/store_guard.py)
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
    only_params(params, {"tx"})
    raw = tx_param(params)
    if node.follower is not None:
        return await forward_sync(node, raw)
    try:
        tx = node.intake.submit(raw)
    except MempoolReject as e:
        raise reject_error(e) from e
    return {"code": 0, "hash": tx.hash.hex(), "log": ""}


async def rpc_broadcast_tx_commit(node: Node, params: Params) -> Any:
    only_params(params, {"tx"})
    raw = tx_param(params)
    if node.follower is not None:
        return await forward_commit(node, raw)
    timeout = node.cfg.rpc.timeout_broadcast_tx_commit_ms / 1000
    try:
        tx, committed = await node.intake.submit_and_wait(raw, timeout)
    except MempoolReject as e:
        raise reject_error(e) from e
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
    only_params(params, set())
    return {"n_txs": len(node.mempool), "total": len(node.mempool)}


_METHODS: dict[str, Handler] = {
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

METHODS: dict[str, Handler] = {name: guarded(h) for name, h in _METHODS.items()}
"""Every public method, its store failures answered typed (node/api/store_guard.py)."""
