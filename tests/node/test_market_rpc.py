"""Markets over RPC and the CLI: parameters, oracle price, and oracle updates landing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from chain.tx import OraclePrice, make_tx
from node.client import AsyncRPCClient, RPCCallError
from node.node import open_node
from node.run import run_node
from node.views import b64
from tests.helpers import REPO, make_genesis, make_home, running_node

BTC = "BTC-USD-PERP"


async def test_market_rpc_shows_params_and_oracle_updates(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=2, markets=True)
    node = open_node(make_home(tmp_path / "n", g, keys.producer, block_interval_ms=50,
                               sync=False))
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
