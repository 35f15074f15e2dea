"""The real ``appchain`` CLI as a subprocess: files it writes, clean errors, and a live node."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chain.crypto import PrivateKey
from genesis.format import load_genesis, parse_time
from node.config import Home
from node.dev.local import make_genesis, make_home, running_node
from node.keyfile import read_key, write_key
from tests.helpers import REPO

GENESIS_TIME = "2026-01-01T00:00:00Z"
UNREACHABLE = "http://127.0.0.1:1"  # nothing listens on port 1


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )


def assert_clean_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit status 1, one ``Error:`` line naming the problem, and no traceback."""
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out, out
    assert "Error:" in r.stderr, out
    for n in needles:
        assert n in r.stderr, (n, out)
    return r.stderr


def mode_of(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture(scope="module")
def devnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``genesis new`` shared by the tests that only read its output."""
    out = tmp_path_factory.mktemp("cli") / "net"
    r = cli("genesis", "new", "--out", out, "--chain-id", "cli-chain", "--accounts", "2",
            "--genesis-time", GENESIS_TIME)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_version() -> None:
    r = cli("version")
    assert r.returncode == 0 and r.stdout.strip() == "0.1.0"


def test_genesis_new_writes_genesis_and_0600_keys(devnet_dir: Path) -> None:
    g = load_genesis(devnet_dir / "genesis.json")
    assert g.chain_id == "cli-chain" and g.genesis_time == parse_time(GENESIS_TIME)[0]
    # two funded accounts, then the insurance fund (the zero address) seeded with 10^12
    assert len(g.accounts) == 3
    assert (g.accounts[2].address, g.accounts[2].balance) == (bytes(32), 10**12)
    keys_dir = devnet_dir / "keys"
    names = sorted(p.name for p in keys_dir.iterdir())
    assert names == ["account-0.json", "account-1.json", "faucet.json", "operator-0.json",
                     "oracle-0.json", "producer.json"]
    for p in keys_dir.iterdir():
        assert mode_of(p) == 0o600, p
        read_key(p)
    assert read_key(keys_dir / "producer.json").public_key == g.producer.pub_key
    assert read_key(keys_dir / "faucet.json").public_key == g.faucet.pub_key
    assert read_key(keys_dir / "account-1.json").public_key == g.accounts[1].address
    # validate agrees and prints the same hash
    r = cli("genesis", "validate", devnet_dir / "genesis.json")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"ok: chain cli-chain, hash {g.hash.hex()}"


def test_genesis_new_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "net"
    r = cli("genesis", "new", "--out", out, "--accounts", "1")
    assert r.returncode == 0, r.stderr
    genesis_before = (out / "genesis.json").read_bytes()
    producer_before = (out / "keys" / "producer.json").read_bytes()

    r = cli("genesis", "new", "--out", out, "--accounts", "1")
    assert_clean_error(r, "already exists")
    assert (out / "genesis.json").read_bytes() == genesis_before
    assert (out / "keys" / "producer.json").read_bytes() == producer_before

    # Without genesis.json the existing keys still are not replaced.
    (out / "genesis.json").unlink()
    r = cli("genesis", "new", "--out", out, "--accounts", "1")
    assert_clean_error(r, "refusing to overwrite")
    assert (out / "keys" / "producer.json").read_bytes() == producer_before


def _bad_genesis(doc: dict, path: str, value: object) -> dict:
    """``doc`` with the JSON path (dotted, [i] for lists) set to ``value``."""
    doc = json.loads(json.dumps(doc))
    parts = path.replace("[", ".").replace("]", "").split(".")
    cur = doc
    for p in parts[:-1]:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    last = parts[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return doc


@pytest.mark.parametrize(("path", "value"), [
    ("app_state.accounts[1].balance", "-5"),
    ("app_state.producer.pub_key", "xyz"),
    ("chain_id", ""),
    ("app_state.operators.threshold", 2),
    ("surprise", 1),
])
def test_genesis_validate_names_the_bad_field(devnet_dir: Path, tmp_path: Path, path: str,
                                              value: object) -> None:
    doc = json.loads((devnet_dir / "genesis.json").read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_bad_genesis(doc, path, value)))
    r = cli("genesis", "validate", bad)
    assert_clean_error(r, f"'{path}'")


def test_genesis_validate_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    assert_clean_error(cli("genesis", "validate", bad), "not valid JSON")
    assert_clean_error(cli("genesis", "validate", tmp_path / "missing.json"), "cannot read")


def test_init_checks_the_producer_key(devnet_dir: Path, tmp_path: Path) -> None:
    genesis = devnet_dir / "genesis.json"
    keys_dir = devnet_dir / "keys"
    home = tmp_path / "home"

    r = cli("init", "--home", home, "--genesis", genesis, "--producer-key",
            keys_dir / "faucet.json")
    assert_clean_error(r, "not the producer")
    assert not Home(home).config_file.exists() and not Home(home).genesis_file.exists()

    r = cli("init", "--home", home, "--genesis", genesis, "--rpc-laddr", "localhost")
    assert_clean_error(r, "--rpc-laddr")
    assert not Home(home).config_file.exists()

    r = cli("init", "--home", home, "--genesis", genesis, "--producer-key",
            keys_dir / "producer.json", "--moniker", "val-1", "--block-interval-ms", "25",
            "--rpc-laddr", "tcp://127.0.0.1:0")
    assert r.returncode == 0, r.stderr
    assert "(producer)" in r.stdout
    h = Home(home)
    cfg = h.load_config()
    assert (cfg.moniker, cfg.producer.block_interval_ms, cfg.rpc.laddr) == (
        "val-1", 25, "tcp://127.0.0.1:0")
    assert load_genesis(h.genesis_file).hash == load_genesis(genesis).hash
    assert mode_of(h.producer_key_file) == 0o600
    assert read_key(h.producer_key_file).seed == read_key(keys_dir / "producer.json").seed
    assert h.data_dir.is_dir()

    r = cli("init", "--home", home, "--genesis", genesis)
    assert_clean_error(r, "already initialised")


def test_init_read_only_and_bad_genesis(devnet_dir: Path, tmp_path: Path) -> None:
    r = cli("init", "--home", tmp_path / "ro", "--genesis", devnet_dir / "genesis.json")
    assert r.returncode == 0 and "(read-only)" in r.stdout
    assert not Home(tmp_path / "ro").producer_key_file.exists()
    bad = tmp_path / "g.json"
    bad.write_text("[]")
    r = cli("init", "--home", tmp_path / "x", "--genesis", bad)
    assert_clean_error(r, "genesis")
    assert not (tmp_path / "x").exists()


def test_keys_new_and_show(tmp_path: Path) -> None:
    out = tmp_path / "k" / "alice.json"
    r = cli("keys", "new", "--out", out)
    assert r.returncode == 0, r.stderr
    addr = r.stdout.strip()
    assert len(addr) == 64 and bytes.fromhex(addr)
    assert mode_of(out) == 0o600
    key = read_key(out)
    assert key.public_key.hex() == addr
    assert json.loads(out.read_text())["name"] == "alice"

    r = cli("keys", "show", out)
    assert r.returncode == 0 and r.stdout.strip() == addr

    before = out.read_bytes()
    assert_clean_error(cli("keys", "new", "--out", out), "already exists")
    assert out.read_bytes() == before

    os.chmod(out, 0o644)
    assert_clean_error(cli("keys", "show", out), "chmod 600")


def test_commands_without_a_node_fail_cleanly(tmp_path: Path) -> None:
    r = cli("status", "--node", UNREACHABLE)
    assert_clean_error(r, "cannot reach", UNREACHABLE)
    # The node address may also come from the environment.
    r = cli("status", env={"APPCHAIN_NODE": UNREACHABLE})
    assert_clean_error(r, "cannot reach")

    key = tmp_path / "k.json"
    write_key(key, PrivateKey.generate())
    to = PrivateKey.generate().public_key.hex()
    r = cli("tx", "transfer", "--key", key, "--to", to, "--amount", "5", "--node", UNREACHABLE)
    assert_clean_error(r, "cannot reach")
    # Usage errors are caught before any network traffic (exit status 2).
    r = cli("tx", "transfer", "--key", key, "--to", to, "--amount", "0", "--node", UNREACHABLE)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = cli("tx", "transfer", "--key", key, "--to", "nothex", "--amount", "1",
            "--node", UNREACHABLE)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = cli("account", "abc", "--node", UNREACHABLE)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    for bad in (("--amount", "0"), ("--amount", "5", "--usd", "1"), ("--usd", "1.0000001"),
                ("--usd", "-2"), ()):
        r = cli("tx", "withdraw", "--key", key, *bad, "--node", UNREACHABLE)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (bad, r.stderr)
    r = cli("tx", "withdraw", "--key", key, "--usd", "12.5", "--node", UNREACHABLE)
    assert_clean_error(r, "cannot reach")
    order = ("tx", "order", "--key", key, "--market", "BTC-USD-PERP", "--side", "sell",
             "--type", "stop_loss", "--price", "58000", "--size", "0.1", "--node", UNREACHABLE)
    assert_clean_error(cli(*order), "trigger_price")  # a stop-loss needs its trigger
    assert_clean_error(cli(*order, "--trigger-price", "59000.5"), "cannot reach")


def test_transfer_and_account_against_a_running_node(tmp_path: Path) -> None:
    balance = 10_000
    g, keys = make_genesis(accounts=2, balance=balance)
    a, b = keys.accounts
    home = make_home(tmp_path / "node", g, keys.producer, block_interval_ms=50)
    key_a = tmp_path / "a.json"
    write_key(key_a, a)
    with running_node(home) as n:
        r = cli("tx", "transfer", "--key", key_a, "--to", b.public_key.hex(), "--amount", "5",
                "--node", n.url)
        assert r.returncode == 0, r.stdout + r.stderr
        res = json.loads(r.stdout)
        assert res["tx_result"]["code"] == 0
        assert int(res["height"]) >= 1

        r = cli("account", b.public_key.hex(), "--node", n.url)
        assert r.returncode == 0, r.stderr
        acct = json.loads(r.stdout)
        assert acct["balance"] == str(balance + 5) and acct["exists"] is True

        r = cli("account", "0x" + a.public_key.hex(), "--node", n.url)
        acct = json.loads(r.stdout)
        assert (acct["balance"], acct["nonce"]) == (str(balance - 5), "1")

        r = cli("tx-info", res["hash"], "--node", n.url)
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["height"] == res["height"]
        assert info["decoded"]["payload"] == {"to": b.public_key.hex(), "amount": "5"}

        # A refused transaction: clean error with the node's code (1010: not the faucet).
        r = cli("tx", "deposit", "--key", key_a, "--to", b.public_key.hex(), "--amount", "5",
                "--node", n.url)
        assert_clean_error(r, "node refused", "code 1010")
        # A withdrawal of 0.000003 USD = 3 base units.
        r = cli("tx", "withdraw", "--key", key_a, "--usd", "0.000003", "--node", n.url)
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["tx_result"]["events"][0]["type"] == "withdraw"
        acct = json.loads(cli("account", a.public_key.hex(), "--node", n.url).stdout)
        assert acct["balance"] == str(balance - 5 - 3)
        # An included but failed transfer says so and exits 1.
        r = cli("tx", "transfer", "--key", key_a, "--to", b.public_key.hex(),
                "--amount", str(balance * 2), "--node", n.url)
        assert_clean_error(r, "failed")
        r = cli("status", "--node", n.url)
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["node_info"]["network"] == g.chain_id
        assert n.proc.poll() is None  # the node is still running
        assert n.terminate() == 0  # and stops cleanly on SIGTERM
    assert "stopped at height" in n.log()
