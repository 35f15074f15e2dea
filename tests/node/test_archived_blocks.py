"""Blocks abandoned by a rollback stay readable over RPC: ``block``, ``header`` and
``block_results`` with ``era`` serve the archived block, in the live block's JSON shape plus
``"abandoned": true``, so anyone can audit the bad fork. A real in-process node, rolled back
through the admin service as the CLI does it."""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path
from typing import Any

from chain.admin import ForkCertificate, make_command, sign_command, sign_fork
from chain.block import SignedHeader
from node.ops.service import AdminService
from node.wire_json import b64
from state.recovery.audit import JOURNAL_FILE
from tests.harness.live_node import INVALID_PARAMS, NEVER_MS, Live, _req, call_error, live_node

NOT_FOUND = 1030


async def admin(live: Live, command: str, **args: str) -> Any:
    cmd = make_command(live.g.chain_id, command, args, time.time_ns() // 1_000_000,
                       secrets.randbits(64))
    env = sign_command(cmd, list(live.keys.operators))
    return await AdminService(live.node).execute(env.encode())


async def roll_back(live: Live, to_height: int, reason: str) -> Any:
    """What ``appchain admin rollback`` sends: a dry run, then the signed certificate."""
    plan = (await admin(live, "rollback", to_height=str(to_height), dry_run="true"))["plan"]
    cert = ForkCertificate(live.g.chain_id, int(plan["new_era"]), int(plan["from_height"]),
                           to_height, bytes.fromhex(plan["to_block_hash"]),
                           bytes.fromhex(plan["state_root"]), reason)
    signed = sign_fork(cert, list(live.keys.operators), 1)
    return await admin(live, "rollback", to_height=str(to_height), reason=reason,
                       certificate=signed.encode().hex())


async def block_with(live: Live, *txs: bytes) -> int:
    for raw in txs:
        await live.client.call("broadcast_tx_sync", tx=b64(raw))
    return (await live.node.produce_block()).height


async def test_abandoned_blocks_are_served_by_era_and_height(tmp_path: Path) -> None:
    async with live_node(tmp_path, block_interval_ms=NEVER_MS) as live:
        a, b = live.keys.accounts[0], live.keys.accounts[1]
        await block_with(live)
        fork_at = await block_with(live, live.transfer(a, 0, 10).raw)  # height 2, kept
        await block_with(live, live.transfer(a, 1, 20).raw, live.transfer(b, 0, 30).raw)
        await block_with(live)
        top = await block_with(live, live.transfer(a, 2, 40).raw)  # 3..5: abandoned
        before = {h: {m: await live.client.call(m, height=h)
                      for m in ("block", "header", "block_results")}
                  for h in range(fork_at + 1, top + 1)}
        kept = await live.client.call("block", height=fork_at)

        await admin(live, "halt", reason="drill")
        out = await roll_back(live, fork_at, "drill: audit the bad fork")
        assert out["next_era"] == "1"
        await admin(live, "resume")
        new3 = await block_with(live, live.transfer(a, 1, 99).raw)
        await block_with(live)
        assert new3 == fork_at + 1 and live.node.head.height == fork_at + 2

        # The abandoned blocks: same JSON as before the rollback, plus the two fields.
        for h, was in before.items():
            for method, result in was.items():
                got = await live.client.call(method, era="0", height=str(h))
                assert got == {**result, "abandoned": True, "era": "0"}, (method, h)
            blk = await live.client.call("block", era=0, height=h)
            hdr = await live.client.call("header", era=0, height=h)
            assert blk["block_id"]["hash"] == was["block"]["block_id"]["hash"]
            assert blk["block"]["header"]["era"] == "0"
            sh = SignedHeader.decode(base64.b64decode(hdr["canonical"]))
            assert sh.header.hash.hex() == was["block"]["block_id"]["hash"]
            sh.verify(live.g.producer.pub_key)
        b3 = await live.client.call("block_results", era="0", height=str(fork_at + 1))
        assert len(b3["txs_results"]) == 2
        assert all(r["code"] == 0 for r in b3["txs_results"])
        assert [len((await live.client.call("block", era="0", height=h))["block"]["data"][
            "txs"]) for h in before] == [2, 0, 1]

        # The chain's own blocks at those heights, by their era; a kept block by era 0.
        live3 = await live.client.call("block", height=new3)
        got = await live.client.call("block", era="1", height=str(new3))
        assert got == {**live3, "abandoned": False, "era": "1"}
        assert got["block_id"]["hash"] != before[new3]["block"]["block_id"]["hash"]
        got = await live.client.call("block_results", era="1", height=str(new3))
        assert got["abandoned"] is False and len(got["txs_results"]) == 1
        assert await live.client.call("block", era="0", height=str(fork_at)) == {
            **kept, "abandoned": False, "era": "0"}
        hdr = await live.client.call("header", era="1", height=str(new3))
        assert hdr["hash"] == live3["block_id"]["hash"] and hdr["abandoned"] is False

        # Without era nothing changed: the chain as it is.
        assert await live.client.call("block", height=new3) == live3
        assert "abandoned" not in await live.client.call("header", height=new3)

        # URI form, as in the runbook.
        r = await live.http.get("/block", params={"era": "0", "height": str(top)})
        assert r.status_code == 200 and r.json()["result"]["abandoned"] is True
        assert r.json()["result"]["block_id"] == before[top]["block"]["block_id"]

        # Not found: an era with no block there, live or abandoned.
        for method in ("block", "header", "block_results"):
            e = await call_error(live, method, era="1", height=str(top))  # era 1 ends at 4
            assert e.code == NOT_FOUND and "no block of era 1 at height 5" in e.message
            assert "the chain has no block there (head is 4)" in e.message
            e = await call_error(live, method, era="2", height=str(new3))
            assert e.code == NOT_FOUND
            assert "the chain's block there is of era 1" in e.message, e.message
            e = await call_error(live, method, era="1", height=str(fork_at))
            assert e.code == NOT_FOUND and "of era 0" in e.message
            e = await call_error(live, method, era="0", height="0")  # genesis: not a block
            assert e.code == NOT_FOUND
            e = await call_error(live, method, era=str(2**64 - 1), height=str(2**64 - 1))
            assert e.code == NOT_FOUND
        r = await live.http.get("/block", params={"era": "5", "height": "3"})
        assert r.status_code == 400 and r.json()["error"]["code"] == NOT_FOUND

        # The rollback and the rest were audited, journal and store alike.
        entries = (await admin(live, "audit"))["entries"]
        lines = (live.node.home.data_dir / JOURNAL_FILE).read_bytes().splitlines()
        assert [json.loads(line)["seq"] for line in lines] == [int(e["seq"])
                                                               for e in entries] + [len(lines)]
        assert [e["command"] for e in entries] == ["halt", "rollback", "rollback", "resume"]


BAD_ERA_PARAMS: list[tuple[str, dict[str, Any]]] = [
    ("negative era", {"era": -1, "height": 3}),
    ("negative era string", {"era": "-1", "height": "3"}),
    ("era of 5,000 digits", {"era": "9" * 5000, "height": "3"}),
    ("era above 2**64-1", {"era": 2**64, "height": 3}),
    ("era as text", {"era": "zero", "height": 3}),
    ("era as bool", {"era": True, "height": 3}),
    ("fractional era", {"era": 0.5, "height": 3}),
    ("era as a list", {"era": [0], "height": 3}),
    ("era as a non-ASCII digit", {"era": "\u0660", "height": 3}),
    ("height of 5,000 digits", {"era": "0", "height": "9" * 5000}),
    ("negative height", {"era": "0", "height": -3}),
    ("era without height", {"era": "0"}),
    ("era with a null height", {"era": "0", "height": None}),
]


async def test_bad_era_params_are_invalid_params(tmp_path: Path) -> None:
    async with live_node(tmp_path, block_interval_ms=NEVER_MS) as live:
        await live.node.produce_block()
        for method in ("block", "header", "block_results"):
            for name, params in BAD_ERA_PARAMS:
                r = await live.post(_req(7, method, params))
                doc = r.json()
                assert r.status_code == 200 and doc["error"]["code"] == INVALID_PARAMS, (
                    method, name, doc)
                assert doc["id"] == 7 and doc["error"]["message"], (method, name)
        e = await call_error(live, "block", era="0", hash="ab" * 32)
        assert e.code == INVALID_PARAMS and "era goes with height" in e.message
        e = await call_error(live, "block_results", era="0", height="1", hash="ab" * 32)
        assert e.code == INVALID_PARAMS  # block_results takes no hash at all
        assert (await live.client.call("block", era=None, height=1))["block_id"]  # null: none
        # 5,000 digits in other spellings, with or without era: invalid params, never -32603.
        huge = "9" * 5000
        for body in (f'{{"jsonrpc":"2.0","id":8,"method":"block","params":{{"height":{huge}}}}}',
                     f'{{"jsonrpc":"2.0","id":8,"method":"block","params":{{"era":-{huge},'
                     f'"height":1}}}}',
                     _req(8, "header", {"height": huge}).decode()):
            doc = (await live.post(body)).json()
            assert doc == {"jsonrpc": "2.0", "id": 8, "error": {
                "code": INVALID_PARAMS, "message": doc["error"]["message"]}}, doc
        r = await live.http.get("/block", params={"height": huge})
        assert r.status_code == 400 and r.json()["error"]["code"] == INVALID_PARAMS
        r = await live.http.get("/block_results", params={"era": huge, "height": "1"})
        assert r.status_code == 400 and r.json()["error"]["code"] == INVALID_PARAMS
        # A 5,000-digit id is refused as an id (like Infinity), not as unparsable JSON.
        doc = (await live.post(f'{{"jsonrpc":"2.0","id":{huge},"method":"health"}}')).json()
        assert doc["error"]["code"] == -32600 and doc["id"] is None
        await live.assert_still_serving()
