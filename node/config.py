"""Node home layout and ``config/config.toml``, after CometBFT's.

::

    HOME/
      config/config.toml                node settings (below)
      config/genesis.json               the chain's genesis
      config/priv_validator_key.json    producer key (0600); absent on a read-only node
      data/store/                       LevelDB: blocks, state, undo records, metadata
      data/priv_validator_state.json    last-signed record (never sign two blocks at a height)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from chain.block import MAX_BLOCK_TXS
from chain.errors import ChainError
from chain.tx import MAX_TX_BYTES
from node.fsutil import write_atomic


class ConfigError(ChainError):
    """A config file that is missing or names a bad value; the message names the setting."""

    reason = "bad_config"


@dataclass(frozen=True)
class RPCConfig:
    laddr: str = "tcp://127.0.0.1:26657"
    """Where the JSON-RPC server listens (``tcp://HOST:PORT``)."""
    max_body_bytes: int = 1_000_000
    """Requests with a larger body are refused with a JSON-RPC error."""
    timeout_broadcast_tx_commit_ms: int = 10_000
    """How long ``broadcast_tx_commit`` waits for inclusion."""
    max_connections: int = 512
    """Open client connections at most (lowered at start to fit RLIMIT_NOFILE); one more is
    answered 503 and closed at once."""
    header_timeout_ms: int = 10_000
    """A request line and headers must arrive within this (from the first byte; on a new
    connection, from the accept)."""
    body_timeout_ms: int = 30_000
    """A whole request body must arrive within this (in total), and an answer be taken."""
    idle_timeout_ms: int = 5_000
    """A keep-alive connection with no new request for this long is closed."""


@dataclass(frozen=True)
class ProducerConfig:
    block_interval_ms: int = 1000
    """Target time between blocks."""
    max_txs_per_block: int = 10_000
    """Upper bound on transactions per block."""
    empty_blocks: bool = True
    """Produce blocks even when the mempool is empty (keeps the clock moving)."""


@dataclass(frozen=True)
class MempoolConfig:
    size: int = 100_000
    """Maximum number of pending transactions."""
    max_tx_bytes: int = 65_536
    """Largest accepted transaction."""
    min_sender_balance: int = 1
    """A sender's committed balance must be at least this (settlement units) for its
    transactions to be admitted (cancels excepted; 0: any account record will do)."""
    max_txs_per_sender: int = 1_000
    """Most transactions one sender may have pending (genesis keys excepted)."""


@dataclass(frozen=True)
class StorageConfig:
    sync: bool = True
    """fsync every block commit; turning it off risks losing the newest blocks on power loss."""
    keep_undo_blocks: int = 0
    """Keep the undo records of this many recent blocks (0: keep them all). Older ones are
    pruned, but never those a snapshot pin needs (every height above the oldest pin is
    kept): a rollback can always reach every pin, and queries at pruned heights say so."""
    check_tail_blocks: int = 64
    """At start, check the stored record of this many newest blocks (block, hash links, tx
    and results roots, results, undo records, tx index) and refuse to start on a hole or a
    mismatch (0: skip the check)."""
    cache_mb: int = 8
    """LevelDB block cache (uncompressed blocks recently read), MiB: fixed, never grows."""
    write_buffer_mb: int = 16
    """LevelDB memtable size, MiB: writes are held in memory up to this much before LevelDB
    writes them to a table file; up to twice this is resident while one is being written."""
    max_open_files: int = 256
    """Table files LevelDB keeps open (each with its index in memory, and a descriptor the
    connection caps are budgeted around); LevelDB clamps it to 74-50000."""


@dataclass(frozen=True)
class MemoryConfig:
    malloc_arena_max: int = 2
    """glibc only: at most this many malloc arenas (0: glibc's default, 8 per core). Each
    worker thread (signature checks, block commits) otherwise gets its own, and freed memory
    scattered over many arenas is not returned to the system."""
    malloc_trim_interval_ms: int = 5000
    """glibc only: return freed heap memory to the system (``malloc_trim``) at most this
    often, and only after transactions were admitted or committed; 0: never."""


@dataclass(frozen=True)
class AdminConfig:
    laddr: str = "tcp://127.0.0.1:26659"
    """Where the operator endpoint listens: its own port, loopback by default."""
    max_age_ms: int = 300_000
    """A signed admin command older than this (by the node's clock) is refused (expired)."""
    max_skew_ms: int = 60_000
    """A command issued further than this in the node's future is refused (not_yet_valid)."""
    unauthenticated_burst: int = 100
    """Envelopes a peer may have refused unauthenticated in a row before it is rate limited."""
    unauthenticated_per_second: int = 10
    """How fast a rate-limited peer's allowance refills (envelopes per second)."""
    refusal_summary_interval_ms: int = 60_000
    """Unauthenticated refusals are written to the audit log as one entry per interval."""
    max_connections: int = 16
    """Open operator connections at most; one more is answered 503 and closed at once."""
    header_timeout_ms: int = 10_000
    """As ``rpc.header_timeout_ms``, for the operator endpoint."""
    body_timeout_ms: int = 30_000
    """As ``rpc.body_timeout_ms`` (the body limit is 256 KiB, enforced while streaming)."""
    idle_timeout_ms: int = 5_000
    """As ``rpc.idle_timeout_ms``."""


@dataclass(frozen=True)
class SnapshotConfig:
    interval: int = 0
    """Pin a snapshot automatically every this many blocks (``auto-<height>``); 0: off."""
    keep_recent: int = 10
    """How many automatic snapshots to keep (the oldest are unpinned first)."""


@dataclass(frozen=True)
class RecoveryConfig:
    fresh_oracle_updates: int = 3
    """After a rollback, liquidations stay suspended in a market until it has received this
    many oracle updates (``admin resume`` reopens the markets with it)."""
    rollback_chunk_blocks: int = 1000
    """A rollback undoes at most this many blocks per atomic batch (each key written once
    per batch); lower it to bound memory, or to make progress visible."""
    reopen_price_band_ppm: int = 20_000
    """After a rollback, markets reopen post-only with orders limited to this band around the
    oracle price (2%) until an operator activates them (``admin market-mode M active``)."""


@dataclass(frozen=True)
class P2PConfig:
    laddr: str = "tcp://127.0.0.1:26656"
    """Where the peer protocol listens (docs/PROTOCOL.md §13); port 0 picks a free port
    (written to ``data/p2p_address``)."""
    persistent_peers: tuple[str, ...] = ()
    """``HOST:PORT`` of the producer's peer port: a node without the producer key follows
    the first one (``appchain start --follow HOST:PORT`` overrides it)."""
    max_peers: int = 32
    """Inbound peer connections at most; one more is sent an ``error`` frame and closed."""
    handshake_timeout_ms: int = 10_000
    """A peer must complete its ``hello`` (and a follower its ``subscribe``) within this."""
    exit_on_divergence: bool = False
    """A follower that halts on a divergence also exits with status 3."""
    state_sync: bool = False
    """A follower whose store is empty first fetches its peer's state (checked against a
    header the producer signed) instead of syncing every block from the genesis."""
    producer_rpc: str = ""
    """Where a follower forwards ``broadcast_tx_*`` (``http://HOST:PORT``); empty: the RPC URL
    the producer gives in its ``hello`` (an unspecified host such as 0.0.0.0 replaced by the
    host the follower connected to)."""


@dataclass(frozen=True)
class NodeConfig:
    moniker: str = "node"
    rpc: RPCConfig = field(default_factory=RPCConfig)
    producer: ProducerConfig = field(default_factory=ProducerConfig)
    mempool: MempoolConfig = field(default_factory=MempoolConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    snapshots: SnapshotConfig = field(default_factory=SnapshotConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    p2p: P2PConfig = field(default_factory=P2PConfig)

    def to_toml(self) -> str:
        doc: dict[str, Any] = {"moniker": self.moniker}
        for f in fields(self):
            if f.name == "moniker":
                continue
            section = getattr(self, f.name)
            doc[f.name] = {g.name: getattr(section, g.name) for g in fields(section)}
        return tomli_w.dumps(doc)


_SECTIONS: dict[str, type] = {
    "rpc": RPCConfig,
    "producer": ProducerConfig,
    "mempool": MempoolConfig,
    "storage": StorageConfig,
    "admin": AdminConfig,
    "snapshots": SnapshotConfig,
    "recovery": RecoveryConfig,
    "memory": MemoryConfig,
    "p2p": P2PConfig,
}
_POSITIVE = {
    "max_body_bytes", "timeout_broadcast_tx_commit_ms", "block_interval_ms",
    "max_txs_per_block", "size", "max_tx_bytes", "max_age_ms", "keep_recent",
    "rollback_chunk_blocks", "unauthenticated_burst", "unauthenticated_per_second",
    "refusal_summary_interval_ms", "max_connections", "header_timeout_ms", "body_timeout_ms",
    "idle_timeout_ms", "max_txs_per_sender", "cache_mb", "write_buffer_mb", "max_open_files",
    "max_peers", "handshake_timeout_ms",
}


_MAXIMUM = {
    # Protocol limits: a node configured above them would admit what no block can carry.
    "max_tx_bytes": MAX_TX_BYTES,
    "max_txs_per_block": MAX_BLOCK_TXS,
}


def parse_config(doc: dict[str, Any]) -> NodeConfig:
    """Validate a parsed TOML document; unknown settings are errors (typos must not pass)."""
    kwargs: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "moniker":
            if not isinstance(value, str):
                raise ConfigError("moniker must be a string")
            kwargs["moniker"] = value
            continue
        cls = _SECTIONS.get(key)
        if cls is None:
            raise ConfigError(f"unknown setting {key!r}")
        if not isinstance(value, dict):
            raise ConfigError(f"[{key}] must be a table")
        known = {f.name: f for f in fields(cls)}
        section: dict[str, Any] = {}
        for name, v in value.items():
            f = known.get(name)
            if f is None:
                raise ConfigError(f"unknown setting {key}.{name}")
            want = type(getattr(cls(), name))
            if want is tuple and type(v) is list and all(type(x) is str for x in v):
                v = tuple(v)  # (TOML arrays of strings: persistent_peers)
            if type(v) is not want:
                raise ConfigError(f"{key}.{name} must be a {want.__name__}, got {v!r}")
            if name in _POSITIVE and v <= 0:
                raise ConfigError(f"{key}.{name} must be positive, got {v}")
            if name in _MAXIMUM and v > _MAXIMUM[name]:
                raise ConfigError(
                    f"{key}.{name} = {v} exceeds the protocol limit {_MAXIMUM[name]}")
            section[name] = v
        kwargs[key] = cls(**section)
    cfg = NodeConfig(**kwargs)
    parse_laddr(cfg.rpc.laddr, "rpc.laddr")
    parse_laddr(cfg.admin.laddr, "admin.laddr")
    parse_laddr(cfg.p2p.laddr, "p2p.laddr")
    for peer in cfg.p2p.persistent_peers:
        parse_peer(peer, "p2p.persistent_peers")
    if cfg.p2p.producer_rpc:
        parse_rpc_url(cfg.p2p.producer_rpc, "p2p.producer_rpc")
    for setting, value in (("admin.max_skew_ms", cfg.admin.max_skew_ms),
                           ("snapshots.interval", cfg.snapshots.interval),
                           ("storage.keep_undo_blocks", cfg.storage.keep_undo_blocks),
                           ("storage.check_tail_blocks", cfg.storage.check_tail_blocks),
                           ("mempool.min_sender_balance", cfg.mempool.min_sender_balance),
                           ("recovery.fresh_oracle_updates", cfg.recovery.fresh_oracle_updates),
                           ("recovery.reopen_price_band_ppm",
                            cfg.recovery.reopen_price_band_ppm),
                           ("memory.malloc_arena_max", cfg.memory.malloc_arena_max),
                           ("memory.malloc_trim_interval_ms",
                            cfg.memory.malloc_trim_interval_ms)):
        if value < 0:
            raise ConfigError(f"{setting} must be >= 0, got {value}")
    if cfg.storage.write_buffer_mb > 1024:
        raise ConfigError(f"storage.write_buffer_mb must be at most 1024, got "
                          f"{cfg.storage.write_buffer_mb}")
    return cfg


def parse_peer(addr: str, setting: str = "peer") -> tuple[str, int]:
    """``HOST:PORT`` (a ``tcp://`` prefix is allowed) of a peer to connect to."""
    host, _, port = addr.removeprefix("tcp://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{setting}: {addr!r} is not HOST:PORT")
    return host, int(port)


def parse_rpc_url(url: str, setting: str = "rpc url") -> tuple[str, int]:
    """``http://HOST:PORT`` (a trailing ``/`` allowed) -> (host, port)."""
    rest = url.removeprefix("http://").rstrip("/")
    host, sep, port = rest.rpartition(":")
    if (not url.startswith("http://") or not sep or not host or "/" in rest
            or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536):
        raise ConfigError(f"{setting} must look like http://127.0.0.1:26657, got {url!r}")
    return host.strip("[]"), int(port)


def parse_laddr(laddr: str, setting: str = "laddr") -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (host, port)."""
    rest = laddr.removeprefix("tcp://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not (
            0 <= int(port) <= 65535):
        raise ConfigError(f"{setting} must look like tcp://127.0.0.1:26657, got {laddr!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Home:
    """Paths inside a node home directory."""

    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def genesis_file(self) -> Path:
        return self.config_dir / "genesis.json"

    @property
    def producer_key_file(self) -> Path:
        return self.config_dir / "priv_validator_key.json"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def signer_state_file(self) -> Path:
        return self.data_dir / "priv_validator_state.json"

    def load_config(self) -> NodeConfig:
        try:
            text = self.config_file.read_text()
        except FileNotFoundError as e:
            raise ConfigError(
                f"{self.config_file} does not exist; run `appchain init --home {self.root}`"
            ) from e
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{self.config_file}: {e}") from e
        try:
            return parse_config(doc)
        except ConfigError as e:
            raise ConfigError(f"{self.config_file}: {e}") from e

    def write_config(self, cfg: NodeConfig) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.config_file, cfg.to_toml().encode())
