"""End-to-end: a real node subprocess produces blocks, takes transactions over HTTP, survives
SIGKILL under load, and its state equals a replay of its blocks into a fresh store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from chain.block import Block, Header
from chain.tx import Transfer, make_tx
from genesis.format import load_genesis
from genesis.initial_store import init_store
from node.client.rpc_client import AsyncRPCClient, NodeUnreachable
from node.dev.loadgen import TransferLoad
from node.dev.local import make_genesis, make_home, running_node
from node.node import open_node
from node.node_error import NodeError
from node.signer import Signer
from node.wire_json import b64
from state.params import load_params
from state.store import Store
from state.transition import apply_body, import_block
from tests.helpers import REPO


async def wait_height(client: AsyncRPCClient, height: int, within_s: float = 30) -> int:
    with trio.fail_after(within_s):
        while True:
            st = await client.call("status")
            h = int(st["sync_info"]["latest_block_height"])
            if h >= height:
                return h
            await trio.sleep(0.02)


async def test_node_produces_blocks_and_serves_transactions(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=2, balance=1000)
    home = make_home(tmp_path / "node", g, keys.producer, block_interval_ms=50)
    a, b = keys.accounts
    with running_node(home) as n:
        async with AsyncRPCClient(n.url) as c:
            await wait_height(c, 2)
            t = make_tx(a, g.chain_id, 0, Transfer(b.public_key, 250))
            res = await c.call("broadcast_tx_commit", tx=b64(t.raw))
            assert res["hash"] == t.hash.hex()
            assert res["tx_result"]["code"] == 0
            height = int(res["height"])
            got = await c.call("tx", hash=t.hash.hex())
            assert got["height"] == str(height)
            assert got["decoded"]["payload"] == {"to": b.public_key.hex(), "amount": "250"}
            assert got["tx_result"]["events"][0]["type"] == "transfer"
            block = await c.call("block", height=height)
            assert b64(t.raw) in block["block"]["data"]["txs"]
            acct_a = await c.call("account", address=a.public_key.hex())
            acct_b = await c.call("account", address=b.public_key.hex())
            assert (acct_a["balance"], acct_a["nonce"]) == ("750", "1")
            assert acct_b["balance"] == "1250"
            # A failing transfer is included, consumes the nonce, and says why.
            t2 = make_tx(a, g.chain_id, 1, Transfer(b.public_key, 10_000))
            res2 = await c.call("broadcast_tx_commit", tx=b64(t2.raw))
            assert res2["tx_result"]["code"] == 3
            assert "balance" in res2["tx_result"]["log"]
            acct_a = await c.call("account", address=a.public_key.hex())
            assert (acct_a["balance"], acct_a["nonce"]) == ("750", "2")
        assert n.terminate() == 0
    assert "stopped at height" in n.log()


def replay_into_fresh_store(src: Store, genesis_file: Path, dst_path: Path) -> Store:
    """Re-execute every committed block of ``src`` from genesis into a new store."""
    dst = Store(dst_path)
    init_store(dst, load_genesis(genesis_file))
    head = src.head()
    assert head is not None
    base = dst.head()
    assert base is not None
    for h in range(base.height + 1, head.height + 1):
        raw = src.block_bytes(h)
        assert raw is not None, f"block {h} missing"
        import_block(dst, raw)
    return dst


async def test_sigkill_under_load_loses_nothing(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=8, balance=10**9)
    home = make_home(tmp_path / "node", g, keys.producer, block_interval_ms=30)
    with running_node(home) as n:
        async with AsyncRPCClient(n.url) as c:
            load = TransferLoad(c, g.chain_id, list(keys.accounts), tps=2000)
            await load.sync_all()
            # Push load in bursts until a dozen blocks exist, then kill mid-burst.
            with trio.fail_after(60):
                while True:
                    await load.send(200)
                    st = await c.call("status")
                    if int(st["sync_info"]["latest_block_height"]) >= 12:
                        break
            seen_head = int((await c.call("status"))["sync_info"]["latest_block_height"])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(load.send, 2000)
                await trio.sleep(0.05)  # let the burst be in flight when the kill lands
                n.kill()
                nursery.cancel_scope.cancel()
        assert load.stats.accepted > 0

    with Store(home.store_dir) as s:
        head_after_kill = s.head()
        assert head_after_kill is not None
        assert head_after_kill.height >= seen_head

    # Restart: it continues from the last committed block.
    with running_node(home) as n2:
        async with AsyncRPCClient(n2.url) as c:
            with trio.fail_after(30):
                while True:
                    try:
                        st = await c.call("status")
                        break
                    except NodeUnreachable:
                        await trio.sleep(0.02)
            assert int(st["sync_info"]["latest_block_height"]) >= head_after_kill.height
            await wait_height(c, head_after_kill.height + 3)
        assert n2.terminate() == 0

    with Store(home.store_dir) as s:
        head = s.head()
        assert head is not None
        # No block lost or duplicated: every height present, linked, no tx twice.
        prev = g.hash
        seen_txs: set[bytes] = set()
        for h in range(1, head.height + 1):
            raw = s.block_bytes(h)
            assert raw is not None, f"block {h} missing"
            blk = Block.decode_block(raw)
            assert blk.header.height == h
            assert blk.header.prev_hash == prev
            prev = blk.hash
            for t in blk.txs:
                assert t not in seen_txs
                seen_txs.add(t)
        assert prev == head.hash
        assert len(seen_txs) > 100
        replayed = replay_into_fresh_store(s, home.genesis_file, tmp_path / "replay")
        try:
            assert replayed.head() == head
            assert replayed.dump_state() == s.dump_state()
        finally:
            replayed.close()


def test_signed_but_uncommitted_block_is_recommitted_on_start(tmp_path: Path) -> None:
    """A crash between recording a signature and the commit: the node commits exactly that
    block on restart instead of signing a different one at the same height."""
    g, keys = make_genesis(accounts=2, balance=1000)
    home = make_home(tmp_path / "node", g, keys.producer)
    node = open_node(home)
    a, b = keys.accounts
    t = make_tx(a, g.chain_id, 0, Transfer(b.public_key, 7))
    head = node.head
    params = load_params(node.store.overlay())
    out = apply_body(node.store, params, head.height + 1, head.time + 1, [t])
    header = Header(g.chain_id, 0, head.height + 1, head.hash, head.time + 1, out.tx_root,
                    out.results_root, out.state_root, keys.producer.public_key)
    assert node.signer is not None
    block, _ = node.signer.sign_block(header, (t.raw,))
    node.close()  # "crash": signed and recorded, never committed

    node = open_node(home)
    try:
        assert node.head.height == head.height + 1
        assert node.head.hash == block.hash
        assert node.store.tx_location(t.hash) == (head.height + 1, 0)
    finally:
        node.close()
    # The record survives, and a different block at that height is refused.
    s = Signer(keys.producer, home.signer_state_file)
    assert s.height == head.height + 1


def test_store_behind_last_signed_record_refuses_to_start(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=2)
    home = make_home(tmp_path / "node", g, keys.producer)
    open_node(home).close()
    home.signer_state_file.write_text(json.dumps(
        {"era": 0, "height": 5, "block_hash": "00" * 32, "block": ""}))
    with pytest.raises(NodeError, match="restored from an older copy"):
        open_node(home)


async def test_lost_last_signed_record_refuses_to_start_and_produce_is_serialised(
        tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=2)
    home = make_home(tmp_path / "node", g, keys.producer, block_interval_ms=60_000)
    node = open_node(home)
    try:
        # Two overlapping calls build two consecutive blocks, never one height twice.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.produce_block)
            nursery.start_soon(node.produce_block)
        assert node.head.height == 2
        # Waiting on a transaction that was already committed returns its result.
        a, b = keys.accounts
        t = make_tx(a, g.chain_id, 0, Transfer(b.public_key, 3))
        node.intake.submit(t.raw)
        await node.produce_block()
        _, committed = await node.intake.submit_and_wait(t.raw, 0.01)
        assert committed is not None and committed.height == 3 and committed.result.code == 0
    finally:
        node.close()
    home.signer_state_file.unlink()
    with pytest.raises(NodeError, match="missing or older than the store"):
        open_node(home)


def test_a_producer_refuses_storage_sync_false_and_a_reader_may_use_it(tmp_path: Path) -> None:
    """Without fsync a power cut takes back blocks the producer signed and sent: it could only
    go on by signing other blocks at those heights. One Error line, nothing written."""
    g, keys = make_genesis(accounts=2)
    home = make_home(tmp_path / "producer", g, keys.producer, sync=False)
    r = subprocess.run([sys.executable, "-m", "node.cli", "start", "--home", str(home.root)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out
    errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "storage.sync = false" in errors[0], out
    assert not home.store_dir.exists() and not home.signer_state_file.exists()
    reader = make_home(tmp_path / "reader", g, None, sync=False)
    open_node(reader).close()  # no key, nothing to equivocate: allowed
