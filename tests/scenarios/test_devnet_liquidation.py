"""The devnet's leveraged traders, against a real node process: they build ~15x positions,
a sharp oracle move liquidates one of them (visible in the block's events and the node's
metrics), and the next round tops the liquidated trader up from the faucet."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio

from chain.crypto import PrivateKey
from chain.tx import Deposit, OraclePrice, Payload, PlaceOrder, make_tx
from node.client.rpc_client import AsyncRPCClient
from node.dev.loadgen import LeveragedTraders
from node.dev.local import make_genesis, make_home, running_node
from node.wire_json import b64
from state.records import INSURANCE_ADDRESS

BTC = "BTC-USD-PERP"
USD = 10**6


async def commit(c: AsyncRPCClient, chain_id: str, key: PrivateKey, payload: Payload
                 ) -> dict[str, Any]:
    acct = await c.call("account", address=key.public_key.hex())
    t = make_tx(key, chain_id, int(acct["next_nonce"]), payload)
    res = await c.call("broadcast_tx_commit", tx=b64(t.raw))
    assert res["tx_result"]["code"] == 0, res
    return res  # type: ignore[no-any-return]


async def next_block(c: AsyncRPCClient) -> None:
    h0 = int((await c.call("status"))["sync_info"]["latest_block_height"])
    while int((await c.call("status"))["sync_info"]["latest_block_height"]) <= h0:  # noqa: ASYNC110
        await trio.sleep(0.02)  # polling another process's RPC: no event to wait on


def attrs(e: dict[str, Any]) -> dict[str, str]:
    return {a["key"]: a["value"] for a in e["attributes"]}


async def test_leveraged_traders_are_liquidated_by_a_sharp_move(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=3, balance=10**12, markets=True)
    maker, g1, g2 = keys.accounts
    home = make_home(tmp_path / "node", g, keys.producer, block_interval_ms=50)
    with running_node(home) as n:
        async with AsyncRPCClient(n.url) as c:
            cid = g.chain_id
            await commit(c, cid, keys.faucet, Deposit(INSURANCE_ADDRESS, 100_000 * USD))
            for side, price in (("buy", 59_900), ("sell", 60_100)):  # a tight, deep book
                await commit(c, cid, maker, PlaceOrder(BTC, side, "limit", "gtc", price * USD,
                                                       20 * 10**8, False, 0))
            traders = LeveragedTraders(c, cid, [g1, g2], keys.faucet, BTC, 10_000, 100_000)
            with trio.fail_after(60):
                while True:
                    await traders.step()
                    await next_block(c)
                    accts = [await c.call("account", address=k.public_key.hex())
                             for k in (g1, g2)]
                    # round 1 withdrew all but the 2,000 USDC stake; later rounds trade
                    lev = [sum(abs(int(p["size"])) for p in a["positions"]) * 60_000
                           // max(1, int(a["equity"])) for a in accts]
                    if all(x >= 10 for x in lev):  # notional/equity in USD per 10^-8 BTC
                        break
            assert traders.sent["Withdraw"] == 2 and traders.sent["PlaceOrder"] >= 2
            assert all(int(a["collateral"]) < 2_100 * USD for a in accts)
            # A 10% move against the first trader's position.
            pos = int(accts[0]["positions"][0]["size"])
            price = (54_000 if pos > 0 else 66_000) * USD
            res = await commit(c, cid, keys.oracles[0],
                               OraclePrice(BTC, price, time.time_ns() // 10**6 - 20))
            results = await c.call("block_results", height=int(res["height"]))
            liq = [attrs(e) for e in results["end_block_events"] if e["type"] == "liquidation"]
            assert g1.public_key.hex() in [x["account"] for x in liq]
            mine = next(x for x in liq if x["account"] == g1.public_key.hex())
            assert mine["price"] == str(price) and mine["size"] == str(pos)
            assert int(mine["equity"]) < int(mine["maintenance_margin"])
            metrics = (await c._http.get(n.url.rstrip("/") + "/metrics")).text
            assert "appchain_liquidations_total" in metrics
            count = next(float(line.split()[1]) for line in metrics.splitlines()
                         if line.startswith("appchain_liquidations_total "))
            assert count >= 1
            a1 = await c.call("account", address=g1.public_key.hex())
            assert all(int(p["size"]) == 0 for p in a1["positions"])
            # Next round: the liquidated trader is flat and short of its stake: topped up.
            await traders.step()
            await next_block(c)
            await next_block(c)
            a1 = await c.call("account", address=g1.public_key.hex())
            assert int(a1["collateral"]) >= 2_000 * USD
            fund = (await c.call("markets"))["insurance_fund"]
            assert fund["address"] == INSURANCE_ADDRESS.hex()
        assert n.terminate() == 0
