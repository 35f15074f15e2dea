"""The JSON-RPC server against a real in-process node: real HTTP on 127.0.0.1, real LevelDB.

Every wait is bounded (``trio.fail_after``) and polls for a condition; nothing sleeps and hopes.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import trio

from chain.block import SignedHeader
from chain.codec import decode, encode
from chain.crypto import PrivateKey
from chain.tx import Deposit, Transfer, make_tx
from node.api.rpc_params import INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR
from node.client.rpc_client import RPCCallError
from node.wire_json import b64
from tests.harness.live_node import (
    BALANCE,
    HEX64,
    NEVER_MS,
    WAIT_S,
    _req,
    call_error,
    live_node,
    manual_tx,
)

# -- reads -------------------------------------------------------------------------------------


async def test_status_shape(tmp_path: Path) -> None:
    async with live_node(tmp_path) as live:
        await live.wait_height(1)
        st = await live.client.call("status")
        assert set(st) == {"node_info", "sync_info", "producer_info", "mempool", "halted",
                           "halt_scheduled", "held_back_txs", "markets", "follower"}
        assert st["halted"] is None and st["halt_scheduled"] is None
        assert st["follower"] is None  # (a producer follows no one)
        assert st["held_back_txs"] == 0
        ni, si = st["node_info"], st["sync_info"]
        assert ni == {"network": live.g.chain_id, "version": "0.1.0", "moniker": "node",
                      "genesis_hash": live.g.hash.hex()}
        # 64-bit numbers are decimal strings, as in CometBFT.
        for k in ("latest_block_height", "latest_block_time", "earliest_block_height", "era"):
            assert isinstance(si[k], str) and si[k].isdigit(), (k, si[k])
        assert int(si["latest_block_height"]) >= 1
        assert int(si["latest_block_height"]) <= live.node.head.height
        assert si["earliest_block_height"] == "1"
        assert si["era"] == "0" and si["next_era"] == "0"
        assert si["catching_up"] is False
        assert HEX64.match(si["latest_block_hash"]) and HEX64.match(si["latest_app_hash"])
        assert int(si["latest_block_time"]) > live.g.genesis_time_ms
        assert st["producer_info"]["pub_key"] == live.keys.producer.public_key.hex()
        assert st["producer_info"]["producing"] is True
        assert st["mempool"] == {"size": 0, "max_size": 100_000}
        # The status hash is the hash of the block at that height.
        h = int(si["latest_block_height"])
        blk = await live.client.call("block", height=h)
        assert blk["block_id"]["hash"] == si["latest_block_hash"]
        assert blk["block"]["header"]["state_root"] == si["latest_app_hash"]
        # health and genesis
        assert await live.client.call("health") == {}
        gen = await live.client.call("genesis")
        assert gen["hash"] == live.g.hash.hex()
        assert gen["genesis"] == live.g.to_json_obj()


async def test_blocks_by_height_and_hash_headers_and_results(tmp_path: Path) -> None:
    async with live_node(tmp_path) as live:
        await live.wait_height(3)
        c = live.client
        b1 = await c.call("block", height=1)
        b2 = await c.call("block", height="2")  # decimal strings are accepted too
        h1 = b1["block"]["header"]
        assert h1["height"] == "1" and h1["era"] == "0"
        assert h1["chain_id"] == live.g.chain_id
        assert h1["prev_hash"] == live.g.hash.hex()  # block one links to the genesis
        assert h1["producer"] == live.keys.producer.public_key.hex()
        assert b2["block"]["header"]["prev_hash"] == b1["block_id"]["hash"]
        assert int(b2["block"]["header"]["time"]) > int(h1["time"])
        assert b1["block"]["data"]["txs"] == []
        # By hash (with and without 0x, upper case) is the same document.
        hsh = b1["block_id"]["hash"]
        assert await c.call("block", hash=hsh) == b1
        assert await c.call("block", hash="0x" + hsh.upper()) == b1
        # No params: the latest block.
        latest = await c.call("block")
        assert int(latest["block"]["header"]["height"]) >= 3
        # The header: same hash, and its canonical bytes carry a valid producer signature.
        hdr = await c.call("header", height=1)
        assert hdr["hash"] == hsh
        assert hdr["header"] == h1
        assert hdr["signature"] == b1["block"]["signature"]
        sh = SignedHeader.decode(base64.b64decode(hdr["canonical"]))
        sh.verify(live.keys.producer.public_key)
        assert sh.header.hash.hex() == hsh
        # Empty block results.
        assert await c.call("block_results", height=1) == {"height": "1", "txs_results": [],
                                                          "end_block_events": []}
        # Not found: 1030.
        far = 10**9
        for method, params in (("block", {"height": far}), ("header", {"height": far}),
                               ("block_results", {"height": far}),
                               ("block", {"hash": "ab" * 32}),
                               ("tx", {"hash": "cd" * 32})):
            err = await call_error(live, method, **params)
            assert err.code == 1030, (method, err)
        # Height 0 is the genesis, which is not a block.
        assert (await call_error(live, "block", height=0)).code == 1030


async def test_transfer_commit_then_tx_results_and_balances(tmp_path: Path) -> None:
    async with live_node(tmp_path) as live:
        c = live.client
        a, b, _ = live.keys.accounts
        t = live.transfer(a, 0, 250, to=b)
        with trio.fail_after(WAIT_S):
            res = await c.call("broadcast_tx_commit", tx=b64(t.raw))
        assert res["hash"] == t.hash.hex()
        assert res["tx_result"]["code"] == 0
        assert res["tx_result"]["codespace"] == "ok"
        height = int(res["height"])
        assert height >= 1
        ev = res["tx_result"]["events"]
        assert ev[0]["type"] == "transfer"
        attrs = {x["key"]: x["value"] for x in ev[0]["attributes"]}
        assert attrs == {"amount": "250", "recipient": b.public_key.hex(),
                         "sender": a.public_key.hex()}

        got = await c.call("tx", hash=t.hash.hex())
        assert got["hash"] == t.hash.hex()
        assert got["height"] == str(height)
        assert got["index"] == res["index"]
        assert base64.b64decode(got["tx"]) == t.raw
        assert got["decoded"]["sender"] == a.public_key.hex()
        assert got["decoded"]["nonce"] == "0"
        assert got["decoded"]["type"] == "transfer"
        assert got["decoded"]["payload"] == {"to": b.public_key.hex(), "amount": "250"}
        assert got["tx_result"] == res["tx_result"]

        blk = await c.call("block", height=height)
        assert blk["block"]["data"]["txs"][res["index"]] == b64(t.raw)
        br = await c.call("block_results", height=height)
        assert br["txs_results"][res["index"]] == res["tx_result"]

        acct_a = await c.call("account", address=a.public_key.hex())
        acct_b = await c.call("account", address=b.public_key.hex())
        assert acct_a["balance"] == str(BALANCE - 250)
        assert (acct_a["nonce"], acct_a["next_nonce"], acct_a["exists"]) == ("1", "1", True)
        assert acct_b["balance"] == str(BALANCE + 250)
        assert acct_b["nonce"] == "0"

        # A transfer beyond the balance is included, fails with code 3, consumes the nonce.
        t2 = live.transfer(a, 1, BALANCE * 10, to=b)
        with trio.fail_after(WAIT_S):
            res2 = await c.call("broadcast_tx_commit", tx=b64(t2.raw))
        assert res2["tx_result"]["code"] == 3
        assert res2["tx_result"]["codespace"] == "insufficient_funds"
        assert res2["tx_result"]["events"] == []
        acct_a = await c.call("account", address=a.public_key.hex())
        assert (acct_a["balance"], acct_a["nonce"]) == (str(BALANCE - 250), "2")

        # A fresh address has an empty, non-existent account.
        fresh = PrivateKey.generate().public_key.hex()
        acct = await c.call("account", address=fresh)
        assert acct == {"address": fresh, "balance": "0", "nonce": "0", "next_nonce": "0",
                        "height": acct["height"], "exists": False, "collateral": "0",
                        "equity": "0", "initial_margin": "0", "maintenance_margin": "0",
                        "free_collateral": "0", "positions": [], "open_orders": 0}
        # The faucet's deposit creates it.
        d = make_tx(live.keys.faucet, live.g.chain_id, 0, Deposit(bytes.fromhex(fresh), 77))
        with trio.fail_after(WAIT_S):
            res3 = await c.call("broadcast_tx_commit", tx=b64(d.raw))
        assert res3["tx_result"]["code"] == 0
        acct = await c.call("account", address=fresh)
        assert (acct["balance"], acct["exists"]) == ("77", True)
        await live.assert_still_serving()


async def test_broadcast_sync_and_mempool_error_codes(tmp_path: Path) -> None:
    # No blocks during this test, so pending state is stable; a small mempool to fill.
    async with live_node(tmp_path, block_interval_ms=NEVER_MS, mempool_size=3) as live:
        c = live.client
        a, b, d = live.keys.accounts
        t0 = live.transfer(a, 0, 5)
        res = await c.call("broadcast_tx_sync", tx=b64(t0.raw))
        assert res == {"code": 0, "hash": t0.hash.hex(), "log": ""}
        assert await c.call("num_unconfirmed_txs") == {"n_txs": 1, "total": 1}
        acct = await c.call("account", address=a.public_key.hex())
        assert (acct["nonce"], acct["next_nonce"]) == ("0", "1")
        err = await call_error(live, "tx", hash=t0.hash.hex())
        assert err.code == 1030 and err.data == {"pending": True}

        async def code_of(raw: bytes) -> tuple[int, Any]:
            e = await call_error(live, "broadcast_tx_sync", tx=b64(raw))
            return e.code, e.data

        zero = manual_tx(a, live.g.chain_id, 1, "transfer", {"to": b.public_key, "amount": 0})
        sig_flipped = decode(live.transfer(a, 1, 5).raw)
        sig_flipped["sig"] = bytes([sig_flipped["sig"][0] ^ 1]) + sig_flipped["sig"][1:]
        cases = [
            (b"\x00garbage", 1001, "decode"),
            (b"\x00" * 70_000, 1002, "too_large"),
            (make_tx(a, "another-chain", 1, Transfer(b.public_key, 5)).raw, 1003, "wrong_chain"),
            (encode(sig_flipped), 1004, "bad_signature"),
            (t0.raw, 1005, "duplicate"),
            (live.transfer(a, 0, 6).raw, 1006, "nonce_too_low"),
            (live.transfer(a, 5, 5).raw, 1007, "nonce_gap"),
            (zero, 1009, "invalid_tx"),
            (make_tx(a, live.g.chain_id, 1, Deposit(b.public_key, 5)).raw, 1010, "unauthorized"),
        ]
        for raw, code, reason in cases:
            assert await code_of(raw) == (code, {"reason": reason}), reason
        assert await c.call("num_unconfirmed_txs") == {"n_txs": 1, "total": 1}

        # Fill the mempool (size 3, one tx per sender: an equal share, so nobody's is
        # evicted for another's), then one more is refused with 1008.
        await c.call("broadcast_tx_sync", tx=b64(live.transfer(b, 0, 5).raw))
        await c.call("broadcast_tx_sync", tx=b64(live.transfer(d, 0, 5).raw))
        assert await code_of(live.transfer(a, 1, 5).raw) == (1008, {"reason": "mempool_full"})
        st = await c.call("status")
        assert st["mempool"] == {"size": 3, "max_size": 3}

        # Bad tx params are -32602, not a mempool code.
        for params in ({"tx": "not base64!"}, {}, {"tx": 5}, {"tx": b64(t0.raw), "x": 1}):
            assert (await call_error(live, "broadcast_tx_sync", **params)).code == INVALID_PARAMS

        # Every refusal is counted by reason in the metrics.
        text = (await live.http.get("/metrics")).text
        for _, _, reason in cases:
            assert f'appchain_mempool_rejected_total{{reason="{reason}"}} 1.0' in text, reason
        assert 'appchain_mempool_rejected_total{reason="mempool_full"} 1.0' in text
        assert "appchain_mempool_size 3.0" in text


async def test_broadcast_tx_commit_timeout_is_bounded(tmp_path: Path) -> None:
    async with live_node(tmp_path, block_interval_ms=NEVER_MS,
                         timeout_broadcast_tx_commit_ms=300) as live:
        a = live.keys.accounts[0]
        t = live.transfer(a, 0, 5)
        start = time.monotonic()
        with trio.fail_after(WAIT_S):
            err = await call_error(live, "broadcast_tx_commit", tx=b64(t.raw))
        elapsed = time.monotonic() - start
        assert err.code == 1020
        assert err.data == {"hash": t.hash.hex()}
        assert 0.25 <= elapsed < 5, elapsed
        # The transaction was accepted and is still pending; nothing was committed.
        assert await live.client.call("num_unconfirmed_txs") == {"n_txs": 1, "total": 1}
        assert (await call_error(live, "tx", hash=t.hash.hex())).data == {"pending": True}
        assert live.node.head.height == 0
        # Waiting again for the still-pending transaction is allowed (not a duplicate):
        # it times out again, bounded, and the transaction stays pending once.
        with trio.fail_after(WAIT_S):
            err = await call_error(live, "broadcast_tx_commit", tx=b64(t.raw))
        assert err.code == 1020
        assert await live.client.call("num_unconfirmed_txs") == {"n_txs": 1, "total": 1}
        # A refused transaction answers at once with its mempool code, not 1020.
        start = time.monotonic()
        gap = live.transfer(a, 5, 5)
        err = await call_error(live, "broadcast_tx_commit", tx=b64(gap.raw))
        assert err.code == 1007
        assert time.monotonic() - start < 0.25
        # The abandoned waiter does not break a later block: produce one by hand.
        await live.node.produce_block()
        got = await live.client.call("tx", hash=t.hash.hex())
        assert got["height"] == "1" and got["tx_result"]["code"] == 0
        await live.assert_still_serving()


async def test_metrics_and_uri_calls(tmp_path: Path) -> None:
    async with live_node(tmp_path) as live:
        await live.wait_height(2)
        http = live.http
        r = await http.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        m = re.search(r"^appchain_height (\S+)$", r.text, re.M)
        assert m is not None and float(m.group(1)) >= 2
        assert "appchain_block_commit_seconds_bucket" in r.text

        r = await http.get("/status")
        assert r.status_code == 200
        doc = r.json()
        assert doc["jsonrpc"] == "2.0"
        assert int(doc["result"]["sync_info"]["latest_block_height"]) >= 2
        assert doc["result"]["node_info"]["network"] == live.g.chain_id

        r = await http.get("/block", params={"height": "1"})
        assert r.status_code == 200
        b1 = r.json()["result"]
        assert b1["block"]["header"]["height"] == "1"
        # CometBFT-style quoted values are accepted.
        r = await http.get("/block", params={"hash": '"' + b1["block_id"]["hash"] + '"'})
        assert r.status_code == 200 and r.json()["result"] == b1
        r = await http.get("/health")
        assert r.status_code == 200 and r.json()["result"] == {}

        r = await http.get("/block", params={"height": "-1"})
        assert r.status_code == 400 and r.json()["error"]["code"] == INVALID_PARAMS
        r = await http.get("/block", params={"height": "999999999"})
        assert r.status_code == 400 and r.json()["error"]["code"] == 1030
        r = await http.get("/no_such_method")
        assert r.status_code == 404 and r.json()["error"]["code"] == METHOD_NOT_FOUND
        r = await http.get("/status", params={"bogus": "1"})
        assert r.status_code == 400 and r.json()["error"]["code"] == INVALID_PARAMS
        await live.assert_still_serving()


# -- malformed traffic ---------------------------------------------------------------------------

DEEP = 100_000  # far beyond Python's recursion limit, yet far below max_body_bytes

# (name, body, expected error code, expected id in the answer)
MALFORMED: list[tuple[str, bytes, int, Any]] = [
    ("garbage", b"\x00\x01\x02 not json at all {{{", PARSE_ERROR, None),
    ("empty body", b"", PARSE_ERROR, None),
    ("truncated", b'{"jsonrpc":"2.0","id":1,"method":"sta', PARSE_ERROR, None),
    ("invalid utf-8", b'{"jsonrpc":"2.0","id":1,"method":"st\xff\xfeatus"}', PARSE_ERROR, None),
    ("invalid utf-8 lone continuation", b'{"jsonrpc":"2.0","id":"\x80","method":"status"}',
     PARSE_ERROR, None),
    ("deeply nested arrays", b"[" * DEEP + b"]" * DEEP, PARSE_ERROR, None),
    ("deeply nested objects", b'{"a":' * DEEP + b"1" + b"}" * DEEP, PARSE_ERROR, None),
    ("deeply nested params",
     b'{"jsonrpc":"2.0","id":9,"method":"status","params":{"x":' + b"[" * DEEP + b"]" * DEEP
     + b"}}", PARSE_ERROR, None),
    ("number", b"42", INVALID_REQUEST, None),
    ("string", b'"status"', INVALID_REQUEST, None),
    ("null", b"null", INVALID_REQUEST, None),
    ("true", b"true", INVALID_REQUEST, None),
    ("empty batch", b"[]", INVALID_REQUEST, None),
    ("missing method", b'{"jsonrpc":"2.0","id":1}', INVALID_REQUEST, 1),
    ("method not a string", b'{"jsonrpc":"2.0","id":2,"method":["status"]}', INVALID_REQUEST, 2),
    ("wrong jsonrpc version", b'{"jsonrpc":"1.0","id":3,"method":"status"}', INVALID_REQUEST, 3),
    ("missing jsonrpc", b'{"id":4,"method":"status"}', INVALID_REQUEST, 4),
    ("jsonrpc as a number", b'{"jsonrpc":2.0,"id":5,"method":"status"}', INVALID_REQUEST, 5),
    ("id is an object", b'{"jsonrpc":"2.0","id":{"a":1},"method":"status"}', INVALID_REQUEST,
     None),
    ("id is a boolean", b'{"jsonrpc":"2.0","id":true,"method":"status"}', INVALID_REQUEST, None),
    ("id is NaN", b'{"jsonrpc":"2.0","id":NaN,"method":"status"}', INVALID_REQUEST, None),
    ("id is infinite", b'{"jsonrpc":"2.0","id":1e999,"method":"status"}', INVALID_REQUEST, None),
    ("unknown method", b'{"jsonrpc":"2.0","id":"u","method":"no_such"}', METHOD_NOT_FOUND, "u"),
    ("method case matters", b'{"jsonrpc":"2.0","id":7,"method":"STATUS"}', METHOD_NOT_FOUND, 7),
]


BAD_PARAMS: list[tuple[str, bytes]] = [
    ("non-hex hash", _req(10, "tx", {"hash": "zz" * 32})),
    ("short hash", _req(11, "tx", {"hash": "ab" * 31})),
    ("hash not a string", _req(12, "block", {"hash": 12345})),
    ("missing hash", _req(13, "tx", {})),
    ("negative height", _req(14, "block", {"height": -1})),
    ("negative height string", _req(15, "block", {"height": "-1"})),
    ("fractional height", _req(16, "block", {"height": 1.5})),
    ("height as text", _req(17, "block_results", {"height": "one"})),
    ("height as bool", _req(18, "header", {"height": True})),
    ("height as a non-ASCII digit", _req(19, "block", {"height": "\u00b2"})),
    ("height above 2**64-1", _req(20, "block", {"height": 2**64})),
    ("height far above 2**64-1", _req(21, "block", {"height": "9" * 40})),
    ("unknown param name", _req(22, "block", {"heigth": 1})),
    ("param on a method without params", _req(23, "status", {"verbose": True})),
    ("params as a list of values", _req(24, "block", [1])),
    ("params as a string", _req(25, "block", "1")),
    ("params as a number", _req(26, "status", 5)),
    ("account without address", _req(27, "account", {})),
    ("address not hex", _req(28, "account", {"address": "g" * 64})),
    ("tx not base64", _req(29, "broadcast_tx_sync", {"tx": "@@@"})),
]


async def test_malformed_traffic_then_status_still_correct(tmp_path: Path) -> None:
    async with live_node(tmp_path) as live:
        await live.wait_height(1)
        for name, body, code, id_ in MALFORMED:
            r = await live.post(body)
            assert r.status_code == 200, (name, r.status_code, r.text[:200])
            doc = r.json()
            assert doc.get("jsonrpc") == "2.0", name
            assert "result" not in doc, name
            assert doc["error"]["code"] == code, (name, doc)
            assert isinstance(doc["error"]["message"], str) and doc["error"]["message"], name
            assert doc["id"] == id_, (name, doc)
        for name, body in BAD_PARAMS:
            r = await live.post(body)
            assert r.status_code == 200, (name, r.status_code, r.text[:200])
            doc = r.json()
            assert doc["error"]["code"] == INVALID_PARAMS, (name, doc)
            assert doc["id"] == json.loads(body)["id"], name
        # Odd but valid requests are answered normally.
        r = await live.post(_req("\ud800", "health", {}))  # a lone surrogate as the id
        assert r.status_code == 200 and r.json() == {"jsonrpc": "2.0", "id": "\ud800",
                                                     "result": {}}
        r = await live.post(_req(1.5, "health", []))  # fractional id; empty list = no params
        assert r.json() == {"jsonrpc": "2.0", "id": 1.5, "result": {}}
        r = await live.post(_req(None, "health", {}))  # a null id is still answered
        assert r.json() == {"jsonrpc": "2.0", "id": None, "result": {}}
        r = await live.post(b'{"jsonrpc":"2.0","id":"h","method":"health"}',
                            **{"content-type": "text/plain"})
        assert r.json()["result"] == {}
        # Unknown methods list the known ones.
        r = await live.post(_req(1, "nope", {}))
        assert "status" in r.json()["error"]["data"]["methods"]
        # Wrong HTTP verbs on the JSON-RPC route are refused by HTTP, not by crashing.
        assert (await live.http.get("/")).status_code in (404, 405)
        assert (await live.http.put("/", content=b"{}")).status_code == 405
        # After all of it the node still serves and produces.
        await live.assert_still_serving()
        st = await live.client.call("status")
        assert int(st["sync_info"]["latest_block_height"]) >= 2
        assert st["mempool"]["size"] == 0


async def test_oversized_body(tmp_path: Path) -> None:
    limit = 4096
    async with live_node(tmp_path, max_body_bytes=limit) as live:
        ok = _req(1, "status", {})
        at_limit = ok[:-1] + b" " * (limit - len(ok)) + b"}"
        assert len(at_limit) == limit
        r = await live.post(at_limit)
        assert r.status_code == 200 and "result" in r.json()

        over = ok[:-1] + b" " * (limit + 1 - len(ok)) + b"}"
        r = await live.post(over)
        assert r.status_code == 413
        doc = r.json()
        assert doc["jsonrpc"] == "2.0" and doc["id"] is None
        assert doc["error"]["code"] == INVALID_REQUEST
        assert str(limit) in doc["error"]["message"]

        # Far over the limit, declared up front.
        r = await live.post(b"x" * (4 * limit))
        assert r.status_code == 413 and r.json()["error"]["code"] == INVALID_REQUEST

        # Chunked upload with no Content-Length: counted while streaming.
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b" " * 2048

        async with httpx.AsyncClient(timeout=WAIT_S) as fresh:
            r = await fresh.post(live.url, content=chunks())
        assert "content-length" not in r.request.headers
        assert r.status_code == 413 and r.json()["error"]["code"] == INVALID_REQUEST
        # A large broadcast (base64 tx bigger than the body limit) gets the same answer.
        t = live.transfer(live.keys.accounts[0], 0, 1)
        big = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "broadcast_tx_sync",
                          "params": {"tx": b64(t.raw), "pad": "p" * limit}}).encode()
        r = await live.post(big)
        assert r.status_code == 413
        assert live.node.mempool.pending_nonce(live.keys.accounts[0].public_key) is None
        await live.assert_still_serving()


async def test_oversized_body_at_the_default_limit_gets_an_answer_not_a_reset(
        tmp_path: Path) -> None:
    """The body is drained before answering, so a large upload sees the 413, every time."""
    async with live_node(tmp_path) as live:
        limit = live.node.cfg.rpc.max_body_bytes
        for size in (limit + 1, 2 * limit, 3 * limit):
            r = await live.post(b" " * size)
            assert r.status_code == 413
            assert r.json()["error"]["code"] == INVALID_REQUEST
        await live.assert_still_serving()


async def test_batches(tmp_path: Path) -> None:
    async with live_node(tmp_path) as live:
        await live.wait_height(1)
        batch = [
            {"jsonrpc": "2.0", "id": 1, "method": "status"},
            {"jsonrpc": "2.0", "id": 2, "method": "no_such_method"},
            {"foo": "bar"},
            {"jsonrpc": "2.0", "method": "health"},  # notification: no answer
            {"jsonrpc": "2.0", "id": 4, "method": "block", "params": {"height": -1}},
            5,
            {"jsonrpc": "1.0", "id": 6, "method": "status"},
            {"jsonrpc": "2.0", "id": "seven", "method": "block", "params": {"height": 1}},
            {"jsonrpc": "2.0", "id": 8, "method": "tx", "params": {"hash": "00" * 32}},
        ]
        r = await live.post_json(batch)
        assert r.status_code == 200
        answers = r.json()
        assert isinstance(answers, list)
        assert len(answers) == 8  # everything but the notification
        by_id = {a["id"]: a for a in answers if a["id"] is not None}
        nulls = [a for a in answers if a["id"] is None]
        assert by_id[1]["result"]["node_info"]["network"] == live.g.chain_id
        assert by_id[2]["error"]["code"] == METHOD_NOT_FOUND
        assert by_id[4]["error"]["code"] == INVALID_PARAMS
        assert by_id[6]["error"]["code"] == INVALID_REQUEST
        assert by_id["seven"]["result"]["block"]["header"]["height"] == "1"
        assert by_id[8]["error"]["code"] == 1030
        assert [a["error"]["code"] for a in nulls] == [INVALID_REQUEST, INVALID_REQUEST]
        assert all(a["jsonrpc"] == "2.0" for a in answers)

        # The client's batch helper: answers in call order, errors as values.
        out = await live.client.call_batch([("health", {}), ("block", {"height": -1}),
                                            ("nope", {}), ("block", {"height": 1})])
        assert out[0] == {}
        assert isinstance(out[1], RPCCallError) and out[1].code == INVALID_PARAMS
        assert isinstance(out[2], RPCCallError) and out[2].code == METHOD_NOT_FOUND
        assert not isinstance(out[3], RPCCallError)
        assert out[3]["block"]["header"]["height"] == "1"

        # A batch of notifications only: no JSON-RPC answer at all.
        r = await live.post_json([{"jsonrpc": "2.0", "method": "health"},
                                  {"jsonrpc": "2.0", "method": "status"}])
        assert r.status_code == 204 and r.content == b""
        # Too large a batch is one error.
        r = await live.post_json([{"jsonrpc": "2.0", "id": i, "method": "health"}
                                  for i in range(101)])
        doc = r.json()
        assert isinstance(doc, dict) and doc["error"]["code"] == INVALID_REQUEST
        # Exactly 100 is fine.
        r = await live.post_json([{"jsonrpc": "2.0", "id": i, "method": "health"}
                                  for i in range(100)])
        assert sorted(a["id"] for a in r.json()) == list(range(100))
        await live.assert_still_serving()


async def test_notifications_get_no_answer_but_run(tmp_path: Path) -> None:
    async with live_node(tmp_path) as live:
        r = await live.post(b'{"jsonrpc":"2.0","method":"status"}')
        assert r.status_code == 204 and r.content == b""
        r = await live.post(b'{"jsonrpc":"2.0","method":"no_such_method"}')
        assert r.status_code == 204 and r.content == b""
        # Not even an error goes back to a notification with bad params.
        r = await live.post(b'{"jsonrpc":"2.0","method":"block","params":[1]}')
        assert r.status_code == 204 and r.content == b""
        r = await live.post(b'{"jsonrpc":"2.0","method":"block","params":{"height":"x"}}')
        assert r.status_code == 204 and r.content == b""
        # A notification still does its work: this transfer gets committed.
        a, b, _ = live.keys.accounts
        t = live.transfer(a, 0, 42, to=b)
        r = await live.post(json.dumps({"jsonrpc": "2.0", "method": "broadcast_tx_sync",
                                        "params": {"tx": b64(t.raw)}}))
        assert r.status_code == 204 and r.content == b""
        with trio.fail_after(WAIT_S):
            while True:
                try:
                    got = await live.client.call("tx", hash=t.hash.hex())
                    break
                except RPCCallError as e:
                    assert e.code == 1030
                await trio.sleep(0.01)
        assert got["tx_result"]["code"] == 0
        acct = await live.client.call("account", address=b.public_key.hex())
        assert acct["balance"] == str(BALANCE + 42)
        await live.assert_still_serving()
