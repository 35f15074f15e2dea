"""`appchain verify`: recompute the root from raw storage; catch corruption written straight
into the store (as the incident's faulty maintenance step did)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

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
