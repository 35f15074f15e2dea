"""The incident, end to end, on a real node process (../shared/DESIGN.md):

a trading chain; maintenance begins (halt, verify, pin); a faulty upgrade writes corrupted
funding indices straight into the store; maintenance end refuses to resume; forced through,
a liquidation cascade follows; then halt, rollback to the pre-maintenance snapshot, cancel
every order except take-profit/stop-loss, replay, and a compensation report that names
exactly the accounts liquidated only on the bad fork; resume reopens post-only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from chain.crypto import PrivateKey
from chain.tx import Deposit, OraclePrice, Transfer
from node.client.admin_client import AdminClient
from node.client.rpc_client import RPCCallError, RPCClient
from node.dev.local import make_genesis, make_home, running_node
from state.records import INSURANCE_ADDRESS, MarketState, market_state_key
from state.store import Store
from tests.harness.rpc_chain import Chain, admin_url, order
from tests.helpers import REPO, rewrite_behind_the_chain

BTC = "BTC-USD-PERP"
USD = 10**6


def px(usd: float) -> int:
    return int(round(usd * 10)) * 100_000


def test_the_incident_end_to_end(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=5, balance=10_000 * USD, markets=True)
    alice, bob, carol, dave, erin = keys.accounts
    home = make_home(tmp_path / "n", g, keys.producer, block_interval_ms=50)
    ops = list(keys.operators)

    # -- a trading chain --------------------------------------------------------------------
    with running_node(home) as n, RPCClient(n.url) as c:
        ch = Chain(c, g.chain_id)
        ch.commit(keys.faucet, Deposit(alice.public_key, 500_000 * USD))
        ch.commit(keys.faucet, Deposit(INSURANCE_ADDRESS, 100_000 * USD))
        ch.commit(alice, order("sell", "limit", 60_000, 3))
        ch.commit(alice, order("buy", "limit", 59_000, 3))
        ch.commit(bob, order("buy", "market", 60_100, 1, "ioc"))      # ~6x long
        ch.commit(carol, order("buy", "market", 60_100, 1.5, "ioc"))  # ~9x long
        ch.commit(dave, order("buy", "market", 60_100, 0.1, "ioc"))   # small long
        sl = ch.commit(dave, order("sell", "stop_loss", 45_000, 0.1, "ioc", 50_000))
        tp = ch.commit(dave, order("sell", "take_profit", 69_000, 0.1, "ioc", 70_000))
        ch.commit(erin, order("buy", "limit", 58_000, 0.2))
        index_before = c.call("market", symbol=BTC)["state"]["funding_index"]
        with AdminClient(admin_url(home.root), ops) as adm:
            mb = adm.run("maintenance_begin", {"reason": "database upgrade"})
        label = mb["snapshot"]["label"]
        pinned = int(mb["snapshot"]["height"])
        assert mb["verification"]["ok"] is True
        assert n.terminate() == 0

    # -- the faulty upgrade writes corrupted funding indices straight into the store, and
    # (thoroughly) re-roots the state tree and the head to match, so that the per-block
    # prior-value guard and the start-up root check both pass (a plain write into the store
    # is caught by those: tests/scenarios/test_guards.py) ----------------------------------
    with Store(home.store_dir) as s:
        st = MarketState.decode(s.state_get(market_state_key(BTC)) or b"")
    rewrite_behind_the_chain(home.store_dir, [(market_state_key(BTC), replace(
        st, funding_index=st.funding_index + 9_000 * 10**12).encode())], tree_too=True)

    with running_node(home) as n, RPCClient(n.url) as c, \
            AdminClient(admin_url(home.root), ops) as adm:
        ch = Chain(c, g.chain_id)
        assert c.call("status")["halted"]["check"] == "maintenance"  # survives the restart
        # Maintenance end refuses to resume, with the report.
        with pytest.raises(RPCCallError) as e:
            adm.run("maintenance_end")
        assert e.value.data["reason"] == "refused"
        assert "the state changed during maintenance" in e.value.message
        assert c.call("status")["halted"] is not None
        # Forced through: with the oracle feed posting again, the cascade follows.
        adm.run("resume", {"force": "true"})
        ch.commit(keys.oracles[0], OraclePrice(BTC, px(60_000), time.time_ns() // 10**6 - 10))
        deadline = time.monotonic() + 20
        liquidated: set[str] = set()
        while time.monotonic() < deadline and len(liquidated) < 2:
            liquidated = {x["account"] for x in ch.end_events(pinned + 1, ch.height(),
                                                             "liquidation_settled")}
            time.sleep(0.05)
        assert liquidated == {bob.public_key.hex(), carol.public_key.hex()}
        erin_tx = ch.commit(erin, Transfer(alice.public_key, 5 * USD))  # life goes on

        # -- recovery ---------------------------------------------------------------------------
        adm.run("halt", {"reason": "incident: corrupted funding indices"})
        dry = adm.rollback("corrupted funding indices", to_snapshot=label, dry_run=True)
        assert erin_tx["hash"] in {t["hash"] for t in dry["plan"]["txs"]}
        rb = adm.rollback("corrupted funding indices", to_snapshot=label)
        assert int(rb["height"]) == pinned and rb["next_era"] == "1"
        # The corruption was written outside any block, so undo records cannot see it: the
        # pre-maintenance snapshot file restores it (rb["restored_from_file"]).
        assert rb["restored_from_file"] and rb["restored_from_file"].endswith(f"{label}.snap")
        assert c.call("market", symbol=BTC)["state"]["funding_index"] == index_before
        cancel = adm.operator_tx("cancel_orders", {"keep": "take_profit,stop_loss"})
        assert cancel["code"] == 0
        reasons = {e["type"] for e in cancel["events"]}
        assert reasons == {"order_cancelled", "operator_cancel_orders"}
        dave_orders = c.call("orders", address=dave.public_key.hex())["orders"]
        assert {o["id"] for o in dave_orders} == {  # the take-profit and stop-loss survive
            str(ch_id) for ch_id in (_order_id(sl), _order_id(tp))}
        assert c.call("orders", address=erin.public_key.hex())["orders"] == []
        rp = adm.run("replay", {})
        assert rp["counts"]["dropped"] == 0, rp
        assert rp["counts"]["identical"] + rp["counts"]["diverged"] >= 1
        fate = c.call("tx", hash=erin_tx["hash"])
        assert fate["abandoned"]["fate"]["fate"] in ("identical", "diverged")
        assert int(fate["height"]) > pinned
        # No cascade on the recovered chain: the restored indices are sane.
        assert ch.end_events(pinned + 1, ch.height(), "liquidation_settled") == []
        report = adm.run("compensation_report", {})
        only = {x["account"]: int(x["collateral_loss_spared"])
                for x in report["liquidated_only_on_abandoned_fork"]}
        assert sorted(only) == sorted([bob.public_key.hex(), carol.public_key.hex()])
        assert all(p > 0 for p in only.values())  # what the rollback spared them
        rows = {r["account"]: r for r in report["accounts"]}
        assert rows[bob.public_key.hex()]["liquidated_recovered"] is False
        assert rows[erin.public_key.hex()]["orders_cancelled_by_operator"] == 1
        # Alice, short, gained from the corrupted index on the bad fork: that windfall is
        # not owed to her (the counterfactual never had it).
        assert rows[alice.public_key.hex()]["compensation"] == "0"
        assert report["external_effects"] == []
        # Resume: markets reopen post-only, liquidations wait for fresh prices.
        out = adm.resume()
        assert out["reopen"]["code"] == 0
        st = c.call("market", symbol=BTC)["state"]
        assert st["mode"] == "post-only" and int(st["liquidation_wait"]) > 0
        shown = {m["symbol"]: m for m in c.call("status")["markets"]}
        assert shown[BTC]["mode"] == "post-only" and shown[BTC]["liquidation_wait"] != "0"
        assert c.call("status")["halted"] is None
        h = ch.height()
        deadline = time.monotonic() + 10
        while ch.height() <= h + 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        blk = c.call("block", height=ch.height())["block"]["header"]
        assert blk["era"] == "1"
        assert n.terminate() == 0

    # The CLI writes the report files and prints the table.
    with running_node(home) as n:
        out_dir = tmp_path / "report"
        r = subprocess.run(
            [sys.executable, "-m", "node.cli", "admin", "--home", str(home.root),
             "--key", str(_keyfile(tmp_path, ops[0])), "compensation-report", "--out",
             str(out_dir)], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "liquidated only on the bad fork 2" in r.stdout
        doc = json.loads((out_dir / "report.json").read_text())
        # The same report, computed again after the chain resumed and moved on: it is
        # measured at the height that replayed the last abandoned block.
        assert doc["id"] == report["id"]
        assert (out_dir / "report.csv").read_text().count("\n") == len(doc["accounts"]) + 1
        assert "liquidated_only_abandoned" in (out_dir / "report.csv").read_text()
        # The operators decide the amounts (here: 250 USDC to each account liquidated only
        # on the bad fork) and pay them from the insurance fund, on chain.
        for row in doc["accounts"]:
            row["compensation"] = str(250 * USD if row["liquidated_only_abandoned"] else 0)
        (out_dir / "report.json").write_text(json.dumps(doc))
        with RPCClient(n.url) as c:
            before = {x["account"]: int(c.call("account", address=x["account"])["balance"])
                      for x in doc["liquidated_only_on_abandoned_fork"]}
            fund_before = int(c.call("markets")["insurance_fund"]["balance"])
            r = subprocess.run(
                [sys.executable, "-m", "node.cli", "admin", "--home", str(home.root),
                 "--key", str(_keyfile(tmp_path, ops[0])), "compensate", "--report",
                 str(out_dir / "report.json")], cwd=REPO, capture_output=True, text=True,
                timeout=60)
            assert r.returncode == 0, r.stderr
            paid = json.loads(r.stdout)
            assert paid["summary"].startswith("paid 2 account(s)")
            events = paid["transactions"][0]["events"]
            assert {e["type"] for e in events} == {"compensation"}
            for a, b0 in before.items():
                assert int(c.call("account", address=a)["balance"]) == b0 + 250 * USD
            assert int(c.call("markets")["insurance_fund"]["balance"]) == \
                fund_before - 500 * USD
        assert n.terminate() == 0


def _order_id(res: dict[str, Any]) -> int:
    """The id of the order a committed ``order`` transaction placed: its nonce."""
    return int(res["nonce"])


def _keyfile(tmp: Path, key: PrivateKey) -> Path:
    from node.keyfile import write_key

    p = tmp / "operator.json"
    if not p.exists():
        write_key(p, key, "operator-0")
    return p
