"""Snapshot files: export a pin from a running node (below the head), verify the file,
start a fresh home from it; a damaged file or another chain's file is refused, nothing
written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from chain.tx import Transfer, make_tx
from node.client.admin_client import AdminClient
from node.client.rpc_client import RPCClient
from node.dev.local import make_genesis, make_home, running_node
from node.wire_json import b64
from state.store import Store
from tests.helpers import REPO


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_export_verify_import(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=2, balance=10**9)
    a, b = keys.accounts
    home = make_home(tmp_path / "src", g, keys.producer, block_interval_ms=30)
    with running_node(home) as n, RPCClient(n.url) as c, AdminClient(
            (home.root / "data" / "admin_address").read_text().strip(),
            list(keys.operators)) as adm:
        for i in range(2):
            t = make_tx(a, g.chain_id, i, Transfer(b.public_key, 1000))
            assert c.call("broadcast_tx_commit", tx=b64(t.raw))["tx_result"]["code"] == 0
        pin = adm.run("snapshot_create", {"label": "s1"})
        balance_at_pin = c.call("account", address=b.public_key.hex())["balance"]
        for i in range(2, 4):
            t = make_tx(a, g.chain_id, i, Transfer(b.public_key, 1000))
            assert c.call("broadcast_tx_commit", tx=b64(t.raw))["tx_result"]["code"] == 0
        file = tmp_path / "s1.snap"
        out = adm.run("snapshot_export", {"label": "s1", "path": str(file)})
        assert out["height"] == pin["height"] and out["state_root"] == pin["state_root"]
        assert n.terminate() == 0
    r = cli("snapshot", "verify", "--file", str(file))
    assert r.returncode == 0, r.stderr
    gfile = tmp_path / "genesis.json"
    gfile.write_text(g.to_json())
    assert cli("snapshot", "verify", "--file", str(file), "--genesis", str(gfile)
               ).returncode == 0
    assert json.loads(r.stdout)["state_root"] == pin["state_root"]

    # A damaged copy is refused by verify and by import (nothing written).
    raw = bytearray(file.read_bytes())
    raw[len(raw) - 60] ^= 0xFF  # inside the last entries / the trailer
    bad = tmp_path / "bad.snap"
    bad.write_bytes(bytes(raw))
    assert cli("snapshot", "verify", "--file", str(bad)).returncode == 1
    dst = make_home(tmp_path / "dst", g, None)
    r = cli("snapshot", "import", "--home", str(dst.root), "--file", str(bad))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    with Store(dst.store_dir) as s:
        assert s.head() is None
    # A header signed by someone else is refused when the genesis is given.
    g3, _ = make_genesis(accounts=1)  # same chain id, another producer
    other_g = tmp_path / "other-genesis.json"
    other_g.write_text(g3.to_json())
    r = cli("snapshot", "verify", "--file", str(file), "--genesis", str(other_g))
    assert r.returncode == 1 and "signed header" in r.stderr
    # Another chain's home refuses the file.
    g2, _ = make_genesis(accounts=1, chain_id="other-chain")
    other = make_home(tmp_path / "other", g2, None)
    r = cli("snapshot", "import", "--home", str(other.root), "--file", str(file))
    assert r.returncode == 1 and "other-chain" in r.stderr

    r = cli("snapshot", "import", "--home", str(dst.root), "--file", str(file))
    assert r.returncode == 0, r.stderr
    with running_node(dst) as n2, RPCClient(n2.url) as c2:
        st = c2.call("status")
        assert st["sync_info"]["latest_block_height"] == pin["height"]
        assert st["sync_info"]["latest_app_hash"] == pin["state_root"]
        assert c2.call("account", address=b.public_key.hex())["balance"] == balance_at_pin
        q = c2.call("query", path="/key", data=(b"acct/" + b.public_key).hex(), prove=True)
        assert q["response"]["proof"]
        assert n2.terminate() == 0
