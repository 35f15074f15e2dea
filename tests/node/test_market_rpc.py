"""Markets over RPC and the CLI: parameters, oracle price, and oracle updates landing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from chain.tx import OraclePrice, make_tx
from node.client.rpc_client import AsyncRPCClient, RPCCallError
from node.dev.local import make_genesis, make_home, running_node
from node.node import open_node
from node.serve import run_node
from node.wire_json import b64
from tests.helpers import REPO

BTC = "BTC-USD-PERP"


async def test_market_rpc_shows_params_and_oracle_updates(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=2, markets=True)
    node = open_node(make_home(tmp_path / "n", g, keys.producer, block_interval_ms=50))
    try:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(run_node, node)
            async with AsyncRPCClient(url) as c:
                all_m = await c.call("markets")
                assert [m["symbol"] for m in all_m["markets"]] == [BTC, "ETH-USD-PERP"]
                m = await c.call("market", symbol=BTC)
                assert m["params"]["initial_margin_ppm"] == "50000"
                assert m["state"]["oracle_price"] == str(60_000 * 10**6)
                assert m["state"]["mode"] == "active"
                t = make_tx(keys.oracles[0], g.chain_id, 0,
                            OraclePrice(BTC, 61_234 * 10**6, g.genesis_time_ms + 1))
                res = await c.call("broadcast_tx_commit", tx=b64(t.raw))
                # The genesis time is far in the past: this observation is too old.
                assert res["tx_result"]["code"] == 6
                import time

                now = time.time_ns() // 1_000_000
                t = make_tx(keys.oracles[0], g.chain_id, 1, OraclePrice(BTC, 61_234 * 10**6, now))
                res = await c.call("broadcast_tx_commit", tx=b64(t.raw))
                assert res["tx_result"]["code"] == 0
                m = await c.call("market", symbol=BTC)
                assert m["state"]["oracle_price"] == str(61_234 * 10**6)
                assert int(m["height"]) >= int(res["height"])
                with pytest.raises(RPCCallError) as e:
                    await c.call("market", symbol="DOGE-USD-PERP")
                assert e.value.code == 1030
                with pytest.raises(RPCCallError) as e:
                    await c.call("market", symbol="not a symbol")
                assert e.value.code == -32602
            nursery.cancel_scope.cancel()
    finally:
        node.close()


def test_cli_oracle_and_market(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=2, markets=True)
    home = make_home(tmp_path / "n", g, keys.producer, block_interval_ms=50)
    from node.keyfile import write_key

    write_key(tmp_path / "oracle.json", keys.oracles[0], "oracle-0")
    write_key(tmp_path / "acct.json", keys.accounts[0], "account-0")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=60)

    with running_node(home) as n:
        r = cli("tx", "oracle", "--key", str(tmp_path / "oracle.json"), "--market", BTC,
                "--price", "59000000000", "--node", n.url)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["tx_result"]["code"] == 0
        r = cli("market", BTC, "--node", n.url)
        assert json.loads(r.stdout)["state"]["oracle_price"] == "59000000000"
        r = cli("tx", "oracle", "--key", str(tmp_path / "acct.json"), "--market", BTC,
                "--price", "1", "--node", n.url)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert "only genesis oracle keys" in r.stderr
        n.terminate()


async def test_trading_over_rpc_book_positions_and_account_margin(tmp_path: Path) -> None:
    from chain.tx import PlaceOrder

    g, keys = make_genesis(accounts=3, balance=10_000 * 10**6, markets=True)
    node = open_node(make_home(tmp_path / "n", g, keys.producer, block_interval_ms=30))
    alice, bob, _ = keys.accounts
    try:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(run_node, node)
            async with AsyncRPCClient(url) as c:
                async def send(key, nonce, payload):  # type: ignore[no-untyped-def]
                    t = make_tx(key, g.chain_id, nonce, payload)
                    return await c.call("broadcast_tx_commit", tx=b64(t.raw))

                px = 60_000 * 10**6
                for i, (p, s) in enumerate([(px, 10_000_000), (px + 100_000, 20_000_000),
                                            (px + 100_000, 5_000_000)]):
                    res = await send(alice, i, PlaceOrder(BTC, "sell", "limit", "gtc", p, s,
                                                          False, 0))
                    assert res["tx_result"]["code"] == 0
                book = await c.call("orderbook", symbol=BTC, depth=5)
                assert book["asks"] == [[str(px), "10000000", 1],
                                        [str(px + 100_000), "25000000", 2]]
                assert book["bids"] == []
                res = await send(bob, 0, PlaceOrder(BTC, "buy", "market", "ioc",
                                                    61_000 * 10**6, 15_000_000, False, 0))
                assert [e["type"] for e in res["tx_result"]["events"]] == ["fill", "fill"]
                pos = await c.call("position", address=bob.public_key.hex(), symbol=BTC)
                p = pos["position"]
                assert p["size"] == "15000000"
                # 0.1 at 60,000 + 0.05 at 60,000.10 = 6,000 + 3,000.005 USDC of cost.
                assert p["cost"] == str(9_000_005_000)
                # 10,000 USDC behind a 9,000 USDC long: no price can liquidate it.
                assert p["liquidation_price"] is None
                assert p["entry_price"] == str(60_000_033_333)
                acct = await c.call("account", address=bob.public_key.hex())
                assert acct["positions"][0]["market"] == BTC
                assert int(acct["initial_margin"]) == 450_000_000  # 5% of 0.15 * 60,000
                assert int(acct["equity"]) < 10_000 * 10**6  # fees paid, marked at oracle
                orders = await c.call("orders", address=alice.public_key.hex())
                assert [o["size"] for o in orders["orders"]] == ["15000000", "5000000"]
                with pytest.raises(RPCCallError) as e:
                    await c.call("orderbook", symbol="NOPE-PERP")
                assert e.value.code == 1030
            nursery.cancel_scope.cancel()
    finally:
        node.close()


def test_cli_order_cancel_and_book(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=2, balance=10_000 * 10**6, markets=True)
    home = make_home(tmp_path / "n", g, keys.producer, block_interval_ms=50)
    from node.keyfile import write_key

    write_key(tmp_path / "a.json", keys.accounts[0], "account-0")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=60)

    with running_node(home) as n:
        r = cli("tx", "order", "--key", str(tmp_path / "a.json"), "--market", BTC, "--side",
                "buy", "--price", "59000.5", "--size", "0.25", "--node", n.url)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert res["tx_result"]["events"][0]["type"] == "order_rested"
        r = cli("orderbook", BTC, "--node", n.url)
        assert json.loads(r.stdout)["bids"] == [["59000500000", "25000000", 1]]
        oid = res["tx_result"]["events"][0]["attributes"][1]["value"]
        r = cli("tx", "cancel", "--key", str(tmp_path / "a.json"), "--market", BTC,
                "--order-id", oid, "--node", n.url)
        assert r.returncode == 0, r.stderr
        assert json.loads(cli("orderbook", BTC, "--node", n.url).stdout)["bids"] == []
        # Sub-tick precision is refused by the chain with its code, cleanly.
        r = cli("tx", "order", "--key", str(tmp_path / "a.json"), "--market", BTC, "--side",
                "buy", "--price", "59000.55", "--size", "0.25", "--node", n.url)
        assert r.returncode == 1 and "tick" in r.stderr and "Traceback" not in r.stderr
        r = cli("tx", "order", "--key", str(tmp_path / "a.json"), "--market", BTC, "--side",
                "buy", "--price", "abc", "--size", "0.25", "--node", n.url)
        assert r.returncode == 2 and "not a number" in r.stderr
        n.terminate()
