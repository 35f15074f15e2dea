"""The incident on a 3-node network (real processes, real TCP): the producer and two
followers; maintenance begins; a faulty upgrade rewrites the producer's funding index behind
the chain (tree and head re-rooted, so the producer's own checks pass); forced through, the
producer liquidates on the corrupted state; the followers, re-executing every block, refuse
the first one (divergence); then halt, rollback to the pre-maintenance snapshot, cancel
every order but TP/SL, replay, resume. With no command on either follower, the connected one
lifts its halt and follows the new era, and the one that was stopped for the whole recovery
catches up by itself; all three end on the producer's exact blocks and state."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from chain.tx import Deposit, OraclePrice
from node.client.admin_client import AdminClient
from node.client.rpc_client import RPCClient
from node.dev.local import NodeProcess, make_genesis, make_home
from state.records import INSURANCE_ADDRESS, MarketState, market_state_key
from state.store import Store
from tests.harness.rpc_chain import Chain, admin_url, order
from tests.helpers import rewrite_behind_the_chain
from tests.scenarios.test_follower import same_chain, status, wait_for

BTC = "BTC-USD-PERP"
USD = 10**6


def px(usd: float) -> int:
    return int(round(usd * 10)) * 100_000


def test_the_incident_across_a_producer_and_two_followers(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=5, balance=10_000 * USD, markets=True)
    alice, bob, carol, dave, _ = keys.accounts
    ph = make_home(tmp_path / "p", g, keys.producer, block_interval_ms=50)
    fh = [make_home(tmp_path / f"f{i}", g, None) for i in (1, 2)]
    ops = list(keys.operators)
    producer = NodeProcess(ph)
    peer = producer.p2p
    cfg = ph.load_config()  # restarts keep the peer port the followers follow
    ph.write_config(replace(cfg, p2p=replace(cfg.p2p, laddr=f"tcp://{peer}")))
    f1 = NodeProcess(fh[0], follow=peer)
    f2 = NodeProcess(fh[1], follow=peer)
    try:
        with RPCClient(producer.url) as c:
            ch = Chain(c, g.chain_id)
            ch.commit(keys.faucet, Deposit(alice.public_key, 500_000 * USD))
            ch.commit(keys.faucet, Deposit(INSURANCE_ADDRESS, 100_000 * USD))
            ch.commit(alice, order("sell", "limit", 60_000, 3))
            ch.commit(alice, order("buy", "limit", 59_000, 3))
            ch.commit(bob, order("buy", "market", 60_100, 1, "ioc"))      # ~6x long
            ch.commit(carol, order("buy", "market", 60_100, 1.5, "ioc"))  # ~9x long
            ch.commit(dave, order("buy", "market", 60_100, 0.1, "ioc"))
            sl = ch.commit(dave, order("sell", "stop_loss", 45_000, 0.1, "ioc", 50_000))
            tp = ch.commit(dave, order("sell", "take_profit", 69_000, 0.1, "ioc", 70_000))
            with AdminClient(admin_url(ph.root), ops) as adm:
                mb = adm.run("maintenance_begin", {"reason": "database upgrade"})
            label, pinned = mb["snapshot"]["label"], int(mb["snapshot"]["height"])
        for f in (f1, f2):
            wait_for(lambda f=f: status(f.url)["sync_info"]["latest_block_height"] ==
                     str(pinned), "a follower at the maintenance height")
        assert f2.terminate() == 0  # offline for the whole incident and recovery
        assert producer.terminate() == 0
        # The faulty upgrade, on the producer only.
        with Store(ph.store_dir) as s:
            st = MarketState.decode(s.state_get(market_state_key(BTC)) or b"")
        rewrite_behind_the_chain(ph.store_dir, [(market_state_key(BTC), replace(
            st, funding_index=st.funding_index + 9_000 * 10**12).encode())], tree_too=True)
        producer = NodeProcess(ph)
        with RPCClient(producer.url) as c, AdminClient(admin_url(ph.root), ops) as adm:
            ch = Chain(c, g.chain_id)
            adm.run("resume", {"force": "true"})  # forced through maintenance_end's refusal
            ch.commit(keys.oracles[0], OraclePrice(BTC, px(60_000),
                                                   time.time_ns() // 10**6 - 10))
            wait_for(lambda: len({x["account"] for x in ch.end_events(
                pinned + 1, ch.height(), "liquidation_settled")}) == 2,
                "the cascade on the corrupted producer")
            # The follower re-executes the producer's first block after maintenance and
            # cannot reproduce its state root: it halts there and imports nothing of it.
            wait_for(lambda: status(f1.url)["halted"] is not None, "follower 1 to diverge")
            halt = status(f1.url)["halted"]
            assert halt["check"] == "divergence" and halt["by"] == "node", halt
            assert halt["at_height"] == str(pinned + 1), halt
            assert halt["evidence"]["root"] in ("state_root", "results_root"), halt
            assert status(f1.url)["sync_info"]["latest_block_height"] == str(pinned)
            # Recovery, on the producer only.
            adm.run("halt", {"reason": "incident: corrupted funding indices"})
            rb = adm.rollback("corrupted funding indices", to_snapshot=label)
            assert int(rb["height"]) == pinned and rb["restored_from_file"]
            assert adm.operator_tx("cancel_orders", {"keep": "take_profit,stop_loss"})[
                "code"] == 0
            assert adm.run("replay", {})["counts"]["dropped"] == 0
            assert adm.resume()["reopen"]["code"] == 0
            dave_orders = {o["id"] for o in c.call("orders", address=dave.public_key.hex())[
                "orders"]}
            assert dave_orders == {str(sl["nonce"]), str(tp["nonce"])}
            top = ch.height() + 3
            wait_for(lambda: ch.height() >= top, "era-1 blocks")
            # No command on the followers: the connected one lifts its halt and follows.
            wait_for(lambda: status(f1.url)["halted"] is None and
                     int(status(f1.url)["sync_info"]["latest_block_height"]) >= top,
                     "follower 1 on the new era")
            f2 = NodeProcess(fh[1], follow=peer)
            wait_for(lambda: int(status(f2.url)["sync_info"]["latest_block_height"]) >= top,
                     "follower 2, stopped for the whole recovery, to catch up")
            for f in (f1, f2):
                info = status(f.url)["sync_info"]
                assert info["era"] == "1", info
            adm.run("halt", {"reason": "compare"})
            final = ch.height()
            for f in (f1, f2):
                wait_for(lambda f=f: status(f.url)["sync_info"]["latest_block_height"] ==
                         str(final), "a follower at the producer's head")
                assert status(f.url)["sync_info"]["latest_app_hash"] == \
                    c.call("status")["sync_info"]["latest_app_hash"]
                assert status(f.url)["halted"] is None
                wait_for(lambda f=f: status(f.url)["follower"]["producer_halt"] is not None,
                         "a follower to show the producer's halt")
        for n in (producer, f1, f2):
            assert n.terminate() == 0
    finally:
        for n in (producer, f1, f2):
            n.terminate()
    for h in fh:
        assert same_chain(ph.store_dir, h.store_dir) >= pinned + 3
