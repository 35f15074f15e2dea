"""Hostile parameters on every public RPC method: each answers a typed JSON-RPC error (or a
result), never -32603 (internal error). Issue 11, finding 10: a 5,000-digit ``depth`` and a
``fork_certificate`` era of 2**64 or more reached an internal error.

The methods and their parameter names come from the server's own table, so a method added
later is probed too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from node.api.chain_methods import METHODS
from node.api.rpc_params import INTERNAL_ERROR, INVALID_PARAMS
from node.api.server import dispatch
from tests.harness.live_node import NEVER_MS, WAIT_S, live_node

PARAM_NAMES = ("address", "data", "depth", "era", "hash", "height", "path", "prove", "symbol",
               "tx")

HOSTILE: tuple[Any, ...] = (
    "9" * 5000, float("inf"), 2**64, str(2**64), 2**64 - 1,
    str(2**64 - 1), -1, "-1", 0, "0", 1.5, "1.5", True, None, [], {}, [1], {"a": 1},
    "", " 1", "1 ", "0x10", "٣", "²", "a" * 100_000, "\ud800", "00" * 40, "zz",
    "BTC-USD-PERP", "f" * 64,
)


async def _probe(node: Any, method: str, params: dict[str, Any]) -> dict[str, Any]:
    answer = await dispatch(node, {"jsonrpc": "2.0", "id": 1, "method": method,
                                   "params": params})
    assert answer is not None
    json.dumps(answer, ensure_ascii=True, allow_nan=False)  # always renderable
    return answer


async def test_no_hostile_parameter_reaches_an_internal_error(tmp_path: Path) -> None:
    async with live_node(tmp_path, block_interval_ms=NEVER_MS) as live:
        internal: list[tuple[str, dict[str, Any]]] = []
        probes = 0
        for method in sorted(METHODS):
            if method == "broadcast_tx_commit":
                continue  # waits for a block; its parameter is the same ``tx`` as _sync's
            cases: list[dict[str, Any]] = [{name: v} for name in PARAM_NAMES for v in HOSTILE]
            cases += [{"era": v, "height": h} for v in HOSTILE for h in (1, "1", 2**64)]
            cases += [{"era": 0, "height": v} for v in HOSTILE]
            cases += [{"symbol": "BTC-USD-PERP", "depth": v} for v in HOSTILE]
            cases += [{"path": "/account", "data": v} for v in HOSTILE]
            for params in cases:
                with trio.fail_after(WAIT_S):
                    answer = await _probe(live.node, method, params)
                probes += 1
                if "error" in answer and answer["error"]["code"] == INTERNAL_ERROR:
                    internal.append((method, {k: str(v)[:40] for k, v in params.items()}))
        assert probes > 5000
        assert internal == []


async def test_huge_numbers_are_invalid_params_not_internal(tmp_path: Path) -> None:
    """The two shapes of the finding, each named, over the real HTTP server."""
    async with live_node(tmp_path, block_interval_ms=NEVER_MS) as live:
        for method, params in (("orderbook", {"symbol": "BTC-USD-PERP", "depth": "9" * 5000}),
                               ("orderbook", {"symbol": "BTC-USD-PERP", "depth": 2**64}),
                               ("block", {"height": "9" * 5000}),
                               ("fork_certificate", {"era": 2**64}),
                               ("fork_certificate", {"era": str(2**70)}),
                               ("fork_certificate", {"era": "9" * 5000})):
            body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
            r = await live.post(body)
            err = r.json()["error"]
            assert err["code"] == INVALID_PARAMS, (method, params, err)
