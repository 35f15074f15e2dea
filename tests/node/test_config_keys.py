"""config.toml (round trip, refusal of bad settings) and key files (0600, strict reading)."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from chain.crypto import PrivateKey
from node.config import (
    ConfigError,
    Home,
    MempoolConfig,
    NodeConfig,
    ProducerConfig,
    RPCConfig,
    StorageConfig,
    parse_config,
    parse_laddr,
)
from node.keyfile import KeyFileError, read_key, write_key

# -- config.toml ------------------------------------------------------------------------------


def custom_config() -> NodeConfig:
    return NodeConfig(
        moniker="val-1 ünïcode",
        rpc=RPCConfig(laddr="tcp://0.0.0.0:36657", max_body_bytes=123_456,
                      timeout_broadcast_tx_commit_ms=2_500),
        producer=ProducerConfig(block_interval_ms=250, max_txs_per_block=77, empty_blocks=False),
        mempool=MempoolConfig(size=9, max_tx_bytes=4096),
        storage=StorageConfig(sync=False),
    )


def test_config_round_trip(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    for cfg in (NodeConfig(), custom_config()):
        home.write_config(cfg)
        assert home.config_file.exists()
        assert home.load_config() == cfg
        # The file is plain TOML a human can read and edit.
        doc = tomllib.loads(home.config_file.read_text())
        assert doc["rpc"]["laddr"] == cfg.rpc.laddr
        assert doc["producer"]["empty_blocks"] is cfg.producer.empty_blocks
        assert parse_config(doc) == cfg


def test_partial_config_uses_defaults() -> None:
    assert parse_config({}) == NodeConfig()
    cfg = parse_config({"producer": {"block_interval_ms": 10}})
    assert cfg.producer.block_interval_ms == 10
    assert cfg.producer.max_txs_per_block == ProducerConfig().max_txs_per_block
    assert cfg.rpc == RPCConfig() and cfg.mempool == MempoolConfig()


def _refused(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as ei:
        parse_config(doc)
    return str(ei.value)


@pytest.mark.parametrize(("doc", "named"), [
    ({"monikor": "x"}, "monikor"),
    ({"p2p": {"laddrr": "x"}}, "p2p.laddrr"),
    ({"rpc": {"laddrr": "tcp://127.0.0.1:1"}}, "rpc.laddrr"),
    ({"producer": {"block_interval": 5}}, "producer.block_interval"),
    ({"storage": {"fsync": True}}, "storage.fsync"),
])
def test_unknown_settings_are_refused(doc: dict[str, Any], named: str) -> None:
    msg = _refused(doc)
    assert named in msg and "unknown" in msg


@pytest.mark.parametrize(("doc", "named"), [
    ({"moniker": 5}, "moniker"),
    ({"rpc": {"max_body_bytes": "1000"}}, "rpc.max_body_bytes"),
    ({"rpc": {"max_body_bytes": 1.5}}, "rpc.max_body_bytes"),
    ({"rpc": {"laddr": 26657}}, "rpc.laddr"),
    ({"producer": {"empty_blocks": 1}}, "producer.empty_blocks"),
    ({"producer": {"empty_blocks": "yes"}}, "producer.empty_blocks"),
    ({"mempool": {"size": True}}, "mempool.size"),  # a bool is not an int here
    ({"storage": {"sync": 0}}, "storage.sync"),
    ({"rpc": "tcp://127.0.0.1:1"}, "rpc"),  # a section must be a table
    ({"mempool": [1, 2]}, "mempool"),
])
def test_wrong_types_are_refused(doc: dict[str, Any], named: str) -> None:
    assert named in _refused(doc)


@pytest.mark.parametrize("name", [
    "rpc.max_body_bytes", "rpc.timeout_broadcast_tx_commit_ms", "producer.block_interval_ms",
    "producer.max_txs_per_block", "mempool.size", "mempool.max_tx_bytes",
])
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_values_are_refused(name: str, value: int) -> None:
    section, key = name.split(".")
    msg = _refused({section: {key: value}})
    assert name in msg and "positive" in msg
    # 1 is the smallest accepted value.
    assert getattr(getattr(parse_config({section: {key: 1}}), section), key) == 1


@pytest.mark.parametrize("laddr", [
    "127.0.0.1", "tcp://127.0.0.1", "tcp://:26657", "tcp://127.0.0.1:port",
    "tcp://127.0.0.1:65536", "tcp://127.0.0.1:-1", "tcp://127.0.0.1:\u00b2",
    "tcp://127.0.0.1:\u0661\u0662",  # Arabic-Indic digits: int() would accept them
])
def test_bad_laddr_is_refused(laddr: str) -> None:
    assert "rpc.laddr" in _refused({"rpc": {"laddr": laddr}})


def test_laddr_parsing() -> None:
    assert parse_laddr("tcp://127.0.0.1:26657") == ("127.0.0.1", 26657)
    assert parse_laddr("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_laddr("tcp://[::1]:8080") == ("::1", 8080)


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    with pytest.raises(ConfigError) as ei:
        home.load_config()
    assert str(home.config_file) in str(ei.value) and "init" in str(ei.value)

    home.config_dir.mkdir(parents=True)
    home.config_file.write_text("moniker = \n[rpc\n")
    with pytest.raises(ConfigError) as ei:
        home.load_config()
    assert str(home.config_file) in str(ei.value)

    home.config_file.write_text(tomli_w.dumps({"producer": {"block_interval_ms": 0}}))
    with pytest.raises(ConfigError) as ei:
        home.load_config()
    msg = str(ei.value)
    assert str(home.config_file) in msg and "producer.block_interval_ms" in msg

    # A hand-edited file with a typo is refused, not silently ignored.
    home.write_config(NodeConfig())
    text = home.config_file.read_text().replace("block_interval_ms", "block_intervall_ms")
    home.config_file.write_text(text)
    with pytest.raises(ConfigError, match="producer.block_intervall_ms"):
        home.load_config()


# -- key files ---------------------------------------------------------------------------------


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """A umask that would leave new files world-readable: write_key must not rely on it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_key_written_0600_and_read_back(tmp_path: Path, permissive_umask: None) -> None:
    key = PrivateKey.generate()
    p = tmp_path / "keys" / "k.json"  # parent folder is created
    write_key(p, key, "alice")
    assert mode_of(p) == 0o600
    doc = json.loads(p.read_text())
    assert doc == {"name": "alice", "type": "ed25519", "pub_key": key.public_key.hex(),
                   "priv_key": key.seed.hex()}
    back = read_key(p)
    assert back.seed == key.seed and back.public_key == key.public_key
    # No temporary file is left beside it.
    assert [q.name for q in p.parent.iterdir()] == ["k.json"]


def test_write_key_refuses_to_overwrite(tmp_path: Path) -> None:
    p = tmp_path / "k.json"
    first, second = PrivateKey.generate(), PrivateKey.generate()
    write_key(p, first)
    before = p.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        write_key(p, second)
    assert p.read_bytes() == before
    assert read_key(p).seed == first.seed
    # Only an explicit overwrite replaces it, still 0600.
    write_key(p, second, overwrite=True)
    assert read_key(p).seed == second.seed
    assert mode_of(p) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o700, 0o610])
def test_read_key_refuses_group_or_world_access(tmp_path: Path, mode: int) -> None:
    p = tmp_path / "k.json"
    write_key(p, PrivateKey.generate())
    os.chmod(p, mode)
    if mode & 0o077:
        with pytest.raises(KeyFileError, match="chmod 600"):
            read_key(p)
    else:
        read_key(p)  # 0700 is owner-only: accepted
    os.chmod(p, 0o600)
    read_key(p)
    os.chmod(p, 0o400)
    read_key(p)


def _write_raw(p: Path, text: str) -> Path:
    p.write_text(text)
    os.chmod(p, 0o600)
    return p


@pytest.mark.parametrize("text", [
    "",
    "{not json",
    "[]",
    '"a string"',
    "{}",
    '{"type": "ed25519", "pub_key": "00"}',
    '{"type": "rsa", "pub_key": "%(pub)s", "priv_key": "%(seed)s"}',
    '{"type": "ed25519", "pub_key": "%(pub)s", "priv_key": "zz%(seed)s"}',
    '{"type": "ed25519", "pub_key": "%(pub)s", "priv_key": "%(seed)s00"}',
    '{"type": "ed25519", "pub_key": "%(pub)s", "priv_key": 5}',
    '{"type": "ed25519", "pub_key": "%(pub)s", "priv_key": null}',
])
def test_read_key_refuses_malformed_files(tmp_path: Path, text: str) -> None:
    key = PrivateKey.generate()
    p = _write_raw(tmp_path / "k.json",
                   text % {"pub": key.public_key.hex(), "seed": key.seed.hex()})
    with pytest.raises(KeyFileError) as ei:
        read_key(p)
    assert str(p) in str(ei.value)


def test_read_key_refuses_mismatched_pub_key(tmp_path: Path) -> None:
    key, other = PrivateKey.generate(), PrivateKey.generate()
    p = _write_raw(tmp_path / "k.json", json.dumps({
        "name": "x", "type": "ed25519", "pub_key": other.public_key.hex(),
        "priv_key": key.seed.hex()}))
    with pytest.raises(KeyFileError, match="does not match"):
        read_key(p)
    # Upper-case hex of the right key is fine.
    _write_raw(p, json.dumps({"type": "ed25519", "pub_key": key.public_key.hex().upper(),
                              "priv_key": key.seed.hex()}))
    assert read_key(p).public_key == key.public_key


def test_read_key_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        read_key(tmp_path / "nope.json")
    with pytest.raises(KeyFileError):
        read_key(tmp_path)  # a folder, not a file
