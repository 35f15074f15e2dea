"""`appchain verify`: recompute the root from raw storage; catch corruption written straight
into the store (as the incident's faulty maintenance step did)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from chain.crypto import sha256
from state.records import MarketState, market_state_key
from state.schema import STATE
from state.store import Store
from tests.harness.exchange import BTC, Exchange, limit, market
from tests.helpers import REPO


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_verify_passes_then_catches_a_funding_index_written_into_the_store(
        tmp_path: Path) -> None:
    ex = Exchange(tmp_path / "home" / "data")
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, 0.5)))
    ex.block(ex.tx(ex.bob, market("buy", 61_000, 0.2)))
    ex.store.close()
    # `verify` takes a home; the store of the Exchange harness sits where a home keeps it.
    (tmp_path / "home" / "data" / "db").rename(tmp_path / "home" / "data" / "store")
    r = cli("verify", "--home", str(tmp_path / "home"))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["head_state_root"] == doc["recomputed_state_root"]

    # A faulty maintenance step writes straight into LevelDB, bypassing blocks and guards.
    with Store(tmp_path / "home" / "data" / "store") as s:
        key = market_state_key(BTC)
        st = MarketState.decode(s.state_get(key) or b"")
        s.db.put(STATE + key, replace(st, funding_index=0, open_interest_long=0).encode())
    r = cli("verify", "--home", str(tmp_path / "home"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False
    assert doc["head_state_root"] != doc["recomputed_state_root"]
    assert any("open interest" in p for p in doc["problems"])
    assert any("state root recomputed" in p for p in doc["problems"])


def test_verify_catches_a_position_missing_from_the_liquidation_index(tmp_path: Path) -> None:
    from state.exchange.liquidation import RISK_OF
    from state.recovery.verify import verify_store

    ex = Exchange(tmp_path / "db")
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, 0.5)))
    ex.block(ex.tx(ex.bob, market("buy", 61_000, 0.2)))
    assert verify_store(ex.store).ok
    ex.store.db.delete(STATE + RISK_OF + ex.bob.public_key)  # Bob would escape liquidation
    problems = verify_store(ex.store).problems
    assert any("could escape liquidation" in p and ex.bob.public_key.hex() in p
               for p in problems)
    assert any("named by no account" in p for p in problems)
    ex.store.close()


def test_verify_and_start_catch_a_hole_and_a_wrong_tx_index_in_the_chain_record(
        tmp_path: Path) -> None:
    """What one dropped write-ahead-log record left behind on an unchecked store: block,
    results, undo record and tx index of one height gone, the state still at its head.
    `verify` reports it by height (and a tx index entry pointing elsewhere); the node
    refuses to start on it, naming the height; with the tail check off it would start."""
    from chain.tx import Transfer, make_tx
    from node.dev.local import make_genesis, make_home
    from node.node import open_node
    from node.node_error import NodeError
    from state import schema

    g, keys = make_genesis(accounts=2, balance=10**6)
    home = make_home(tmp_path / "home", g, keys.producer, block_interval_ms=60_000)
    a, b = keys.accounts
    node = open_node(home)
    try:
        for i in range(6):
            node.intake.submit(make_tx(a, g.chain_id, i, Transfer(b.public_key, 1 + i)).raw)
            trio.run(node.produce_block)
        head = node.head
    finally:
        node.close()
    r = cli("verify", "--home", str(home.root))
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["chain"]["problems"] == []
    hole, moved = head.height - 3, head.height - 1
    with Store(home.store_dir) as s:
        blk = s.block(hole)
        other = s.block(moved)
        assert blk is not None and other is not None and blk.txs and other.txs
        s.commit_writes([(schema.block_key(hole), None), (schema.results_key(hole), None),
                         (schema.undo_key(hole), None),
                         (schema.block_hash_key(blk.hash), None),
                         (schema.tx_key(sha256(blk.txs[0])), None),
                         (schema.tx_key(sha256(other.txs[0])), schema.tx_location(1, 0))])
    r = cli("verify", "--home", str(home.root))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["problems"] == []  # the state alone is fine
    found = {(p["height"], p["problem"].split(" (")[0]) for p in doc["chain"]["problems"]}
    assert (str(hole), "block missing") in found, found
    assert any(h == str(moved) and "tx index entry of transaction 0" in w for h, w in found)
    with pytest.raises(NodeError) as e:
        open_node(home)
    assert e.value.reason == "store_damaged"
    assert f"damaged at height {hole}: block missing" in str(e.value), e.value
    assert "verify" in str(e.value) and "restore" in str(e.value)
    r = cli("verify", "--home", str(home.root), "--no-chain")
    assert r.returncode == 0 and "chain" not in json.loads(r.stdout)
