"""Local chains for development, tests and benchmarks: a genesis with a fixed time and fresh
keys, an initialised home (what `appchain init` writes), and a node run as a real child
process (`appchain start`) that can be stopped or SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from chain.crypto import PrivateKey
from genesis.builder import DevnetKeys, build_devnet, devnet_markets
from genesis.format import Genesis, parse_time
from node.config import AdminConfig, Home, NodeConfig, P2PConfig, ProducerConfig, RPCConfig
from node.fsutil import write_atomic
from node.keyfile import write_key

REPO = Path(__file__).resolve().parent.parent.parent
"""The source tree (child processes run ``python -m node.cli`` from it)."""


GENESIS_TIME = "2026-01-01T00:00:00Z"


def make_genesis(accounts: int = 4, balance: int = 10**9, operators: int = 1,
                 threshold: int = 1, chain_id: str = "test-chain",
                 markets: bool = False) -> tuple[Genesis, DevnetKeys]:
    """A test genesis; ``markets`` adds the devnet's BTC-USD-PERP and ETH-USD-PERP."""

    t, ms = parse_time(GENESIS_TIME)
    return build_devnet(chain_id, t, ms, accounts=accounts, balance=balance,
                        operators=operators, threshold=threshold,
                        markets=devnet_markets() if markets else ())


def make_home(root: Path, genesis: Genesis, producer: PrivateKey | None, *,
              block_interval_ms: int = 100, port: int = 0, sync: bool = True,
              max_txs_per_block: int = 10_000, mempool_size: int = 100_000,
              max_txs_per_sender: int = 1_000) -> Home:
    """An initialised home (what `appchain init` writes), RPC on 127.0.0.1:port."""
    home = Home(root)
    cfg = NodeConfig(moniker=root.name, rpc=RPCConfig(laddr=f"tcp://127.0.0.1:{port}"),
                     admin=AdminConfig(laddr="tcp://127.0.0.1:0"),
                     p2p=P2PConfig(laddr="tcp://127.0.0.1:0"),
                     producer=ProducerConfig(block_interval_ms=block_interval_ms,
                                             max_txs_per_block=max_txs_per_block))
    cfg = replace(cfg, mempool=replace(cfg.mempool, size=mempool_size,
                                       max_txs_per_sender=max_txs_per_sender),
                  storage=replace(cfg.storage, sync=sync))
    home.data_dir.mkdir(parents=True, exist_ok=True)
    home.write_config(cfg)
    write_atomic(home.genesis_file, genesis.to_json().encode())
    if producer is not None:
        write_key(home.producer_key_file, producer, "producer")
    return home


class NodeProcess:
    """`appchain start` as a real child process."""

    def __init__(self, home: Home, *, nofile: int | None = None,
                 follow: str | None = None, state_sync: bool = False,
                 start_timeout: float = 30.0) -> None:
        """``nofile``: start the node under ``prlimit --nofile=N`` (soft and hard limit);
        ``follow``: ``--follow HOST:PORT``; ``state_sync``: ``--state-sync``."""
        self.home = home
        self.log_path = home.root / "node.log"
        (home.data_dir / "rpc_address").unlink(missing_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        limit = ["prlimit", f"--nofile={nofile}", "--"] if nofile is not None else []
        self.proc = subprocess.Popen(
            [*limit, sys.executable, "-m", "node.cli", "start", "--home", str(home.root),
             *(["--follow", follow] if follow else []),
             *(["--state-sync"] if state_sync else [])],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        self.url = self._wait_for_address(start_timeout)

    def _wait_for_address(self, timeout: float = 30.0) -> str:
        addr = self.home.data_dir / "rpc_address"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited ({self.proc.returncode}):\n{self.log()}")
            if addr.exists():
                return addr.read_text().strip()
            time.sleep(0.02)
        raise TimeoutError(f"node did not start within {timeout}s:\n{self.log()}")

    @property
    def p2p(self) -> str:
        """``HOST:PORT`` of its peer protocol (written before ``rpc_address``)."""
        return (self.home.data_dir / "p2p_address").read_text().strip()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self._log.close()


@contextmanager
def running_node(home: Home, *, nofile: int | None = None, follow: str | None = None
                 ) -> Iterator[NodeProcess]:
    n = NodeProcess(home, nofile=nofile, follow=follow)
    try:
        yield n
    finally:
        if n.proc.poll() is None:
            n.kill()
