"""SIGKILL in the middle of a rollback and in the middle of a replay: after a restart the node
finishes each operation, and the chain ends exactly where an uninterrupted run ends (same
state, same blocks)."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from chain.crypto import PrivateKey
from chain.tx import Deposit, PlaceOrder, Transfer, make_tx
from node.client.admin_client import AdminClient
from node.client.rpc_client import NodeUnreachable, RPCCallError, RPCClient
from node.config import Home
from node.dev.local import make_genesis, make_home, running_node
from node.wire_json import b64
from state.store import Store

BTC = "BTC-USD-PERP"
USD = 10**6


def admin_url(root: Path) -> str:
    return (root / "data" / "admin_address").read_text().strip()


def outcome(home: Home) -> tuple[list[tuple[bytes, bytes]], list[bytes | None]]:
    with Store(home.store_dir) as s:
        head = s.head()
        assert head is not None
        return s.dump_state(), [s.block_bytes(h) for h in range(1, head.height + 1)]


def recover(home: Home, ops: list[PrivateKey], to_height: int,
            monkeypatch: pytest.MonkeyPatch, kill_rollback: int = 0,
            kill_replay: int = 0) -> None:
    """Rollback then replay; with kill_* > 0 the node SIGKILLs itself after that many steps
    and is restarted (which finishes the operation)."""
    monkeypatch.setenv("APPCHAIN_TEST_KILL_ROLLBACK", str(kill_rollback))
    monkeypatch.setenv("APPCHAIN_TEST_KILL_REPLAY", str(kill_replay))
    with running_node(home) as n, AdminClient(admin_url(home.root), ops) as adm:
        try:
            adm.rollback("drill", to_height=to_height)
            assert not kill_rollback, "the node should have been killed"
        except (NodeUnreachable, RPCCallError, httpx.HTTPError) as e:
            assert kill_rollback, e
            n.proc.wait(30)
            assert n.proc.returncode == -9
    monkeypatch.setenv("APPCHAIN_TEST_KILL_ROLLBACK", "0")
    with running_node(home) as n, AdminClient(admin_url(home.root), ops) as adm, \
            RPCClient(n.url) as c:
        st = c.call("status")
        assert int(st["sync_info"]["latest_block_height"]) == to_height  # finished on start
        assert st["sync_info"]["next_era"] == "1"
        try:
            adm.run("replay", {})
            assert not kill_replay, "the node should have been killed"
        except (NodeUnreachable, RPCCallError, httpx.HTTPError) as e:
            assert kill_replay, e
            n.proc.wait(30)
            assert n.proc.returncode == -9
    monkeypatch.setenv("APPCHAIN_TEST_KILL_REPLAY", "0")
    with running_node(home) as n, RPCClient(n.url) as c:
        assert c.call("status")["halted"] is not None  # still halted: nothing else produced
        assert n.terminate() == 0


def test_sigkill_during_rollback_and_replay(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    g, keys = make_genesis(accounts=3, balance=10_000 * USD, markets=True)
    ops = list(keys.operators)
    a, b, c_ = keys.accounts
    home = make_home(tmp_path / "a", g, keys.producer, block_interval_ms=30)
    cfg = home.load_config()  # one block per rollback step, so a kill lands mid-way
    home.write_config(replace(cfg, recovery=replace(cfg.recovery, rollback_chunk_blocks=1)))
    with running_node(home) as n, RPCClient(n.url) as c, \
            AdminClient(admin_url(home.root), ops) as adm:
        def commit(key, payload) -> None:  # type: ignore[no-untyped-def]
            nonce = int(c.call("account", address=key.public_key.hex())["next_nonce"])
            t = make_tx(key, g.chain_id, nonce, payload)
            assert c.call("broadcast_tx_commit", tx=b64(t.raw))["tx_result"]["code"] == 0

        commit(keys.faucet, Deposit(a.public_key, 100_000 * USD))
        start = int(c.call("status")["sync_info"]["latest_block_height"])
        for i in range(6):
            commit(a, PlaceOrder(BTC, "sell", "limit", "gtc", (60_000 + i) * USD, 10**7,
                                 False, 0))
            commit(b, PlaceOrder(BTC, "buy", "market", "ioc", 61_000 * USD, 5 * 10**6,
                                 False, 0))
            commit(c_, Transfer(a.public_key, 1 + i))
        adm.run("halt", {"reason": "drill"})
        head = int(c.call("status")["sync_info"]["latest_block_height"])
        assert head - start >= 12
        assert n.terminate() == 0
    # Two copies of the same halted chain: one recovers uninterrupted, one is killed twice.
    copy = Home(tmp_path / "b")
    shutil.copytree(home.root, copy.root)
    (copy.root / "data" / "rpc_address").unlink(missing_ok=True)
    target = start + 1
    recover(copy, ops, target, monkeypatch)
    t0 = time.monotonic()
    recover(home, ops, target, monkeypatch, kill_rollback=4, kill_replay=3)
    assert time.monotonic() - t0 < 120
    state_a, blocks_a = outcome(home)
    state_b, blocks_b = outcome(copy)
    assert state_a == state_b
    assert blocks_a == blocks_b  # the same blocks, signed the same way, at the same heights
    assert len(blocks_a) == head  # the replay rebuilt every abandoned height
