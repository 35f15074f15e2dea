"""``appchain devnet``: one command from nothing to a running, loaded local chain.

Creates (or reuses) ``ROOT/genesis`` (genesis.json and every key) and ``ROOT/node0`` (the
producer's home), starts the producer as a child process with its RPC on 127.0.0.1, drives the
load generator against it, and shows height, tx/s and mempool size. With ``--blocks N`` it
stops the node cleanly (SIGTERM, waits for the exit) once the head reaches N.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import trio
from rich.console import Console

from chain.crypto import PrivateKey
from genesis.format import load_genesis
from node.client.rpc_client import AsyncRPCClient, NodeUnreachable
from node.config import Home
from node.dev.loadgen import (
    LeveragedTraders,
    MarketMaker,
    OracleFeed,
    TransferLoad,
    market_payloads,
)
from node.keyfile import read_key
from node.node_error import unwrap_group

START_TIMEOUT_S = 30.0


STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class DevnetOptions:
    root: Path
    tps: int = 200
    blocks: int | None = None
    accounts: int = 20
    block_interval_ms: int = 500
    port: int = 26657
    admin_port: int | None = None
    """None: 0 when ``port`` is 0 (the OS picks both), else ``port`` + 2 (26659 by default)."""
    leveraged: int = 3
    funding_interval_ms: int = 60_000
    oracle_period_ms: int = 1000
    oracle_sharp_every: int = 50


def admin_port(opts: DevnetOptions) -> int:
    """The operator endpoint's port: its own, so two devnets never share one."""
    if opts.admin_port is not None:
        return opts.admin_port
    return 0 if opts.port == 0 else opts.port + 2


def _appchain(*args: str) -> list[str]:
    return [sys.executable, "-m", "node.cli", *args]


def prepare(opts: DevnetOptions, console: Console) -> Path:
    """Create genesis, keys and the producer home unless they already exist."""
    gdir = opts.root / "genesis"
    home = opts.root / "node0"
    if not (gdir / "genesis.json").exists():
        subprocess.run(_appchain("genesis", "new", "--out", str(gdir), "--chain-id",
                                 "appchain-devnet", "--accounts", str(opts.accounts),
                                 "--funding-interval-ms", str(opts.funding_interval_ms)),
                       check=True, stdout=subprocess.DEVNULL)
        console.print(f"created genesis and keys in {gdir}")
    rpc_laddr = f"tcp://127.0.0.1:{opts.port}"
    admin_laddr = f"tcp://127.0.0.1:{admin_port(opts)}"
    p2p_laddr = f"tcp://127.0.0.1:{0 if opts.port == 0 else opts.port - 1}"
    if not (home / "config" / "config.toml").exists():
        subprocess.run(_appchain(
            "init", "--home", str(home), "--genesis", str(gdir / "genesis.json"),
            "--producer-key", str(gdir / "keys" / "producer.json"), "--moniker", "node0",
            "--rpc-laddr", rpc_laddr, "--admin-laddr", admin_laddr, "--p2p-laddr", p2p_laddr,
            "--block-interval-ms", str(opts.block_interval_ms)),
            check=True, stdout=subprocess.DEVNULL)
        console.print(f"initialised producer home {home}")
    else:
        # A reused devnet listens where this run asks (--port, --admin-port).
        h = Home(home)
        cfg = h.load_config()
        if (cfg.rpc.laddr, cfg.admin.laddr, cfg.p2p.laddr) != (rpc_laddr, admin_laddr,
                                                               p2p_laddr):
            h.write_config(replace(cfg, rpc=replace(cfg.rpc, laddr=rpc_laddr),
                                   admin=replace(cfg.admin, laddr=admin_laddr),
                                   p2p=replace(cfg.p2p, laddr=p2p_laddr)))
    return home


def account_keys(root: Path) -> list[PrivateKey]:
    keys_dir = root / "genesis" / "keys"
    files = sorted(keys_dir.glob("account-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    return [read_key(p) for p in files]


async def wait_for_rpc(home: Path, proc: subprocess.Popen[bytes]) -> str:
    """Poll (bounded) until the node wrote its RPC address and answers ``health``."""
    addr_file = home / "data" / "rpc_address"
    with trio.fail_after(START_TIMEOUT_S):  # a node that cannot start must not hang us
        while True:
            if proc.poll() is not None:
                raise NodeUnreachable(f"{_last_error(home / 'node.log')} (the node exited "
                                      f"with status {proc.returncode}; log: "
                                      f"{home / 'node.log'}; `--reset` starts a fresh devnet)")
            if addr_file.exists():
                url = addr_file.read_text().strip()
                try:
                    async with AsyncRPCClient(url, timeout=2) as c:
                        await c.call("health")
                    return url
                except NodeUnreachable:
                    pass
            await trio.sleep(0.05)


def _last_error(log: Path) -> str:
    """The node's last ``Error:`` line, which says why it would not start."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    errors = [ln for ln in lines if ln.startswith("Error:")]
    last = errors[-1].removeprefix("Error: ") if errors else (
        lines[-1] if lines else "no output")
    return last


def stop_process(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, wait (bounded) for a clean exit, SIGKILL as a last resort."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


async def _drive(opts: DevnetOptions, home: Path, proc: subprocess.Popen[bytes],
                 console: Console) -> int:
    """Drive the load until --blocks or SIGTERM (then 0: the node is stopped by the caller)."""
    code = 0
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    console.print("SIGTERM: stopping the devnet")
                    nursery.cancel_scope.cancel()
                    return

            async def drive() -> None:
                nonlocal code
                code = await _drive_load(opts, home, proc, console)
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            nursery.start_soon(drive)
    return code


async def _drive_load(opts: DevnetOptions, home: Path, proc: subprocess.Popen[bytes],
                      console: Console) -> int:
    url = await wait_for_rpc(home, proc)
    async with AsyncRPCClient(url) as client:
        st = await client.call("status")
        chain_id = st["node_info"]["network"]
        admin_file = home / "data" / "admin_address"
        admin_url = admin_file.read_text().strip() if admin_file.exists() else "?"
        console.print(f"devnet {chain_id}: rpc {url}, admin {admin_url}, node pid {proc.pid}, "
                      f"producer home {home}, "
                      f"load {opts.tps} tx/s" + (f", stopping at height {opts.blocks}"
                                                 if opts.blocks else ""))
        console.print(f"try: appchain status --node {url}   |   curl -s {url}/metrics   "
                      f"|   keys in {opts.root / 'genesis' / 'keys'}", highlight=False)
        feed = oracle_feed(opts.root, client, chain_id, opts.oracle_period_ms / 1000,
                           opts.oracle_sharp_every)
        keys = account_keys(opts.root)
        gamblers = leveraged_traders(opts, client, chain_id, keys, feed)
        if gamblers is not None:
            keys = keys[:len(keys) - len(gamblers.keys)]
        # The first account makes markets (a deep book for the leveraged traders).
        maker = None
        if feed is not None and opts.tps > 0 and len(keys) >= 3:
            maker = MarketMaker(client, chain_id, keys[0], feed)
            keys = keys[1:]
        # With markets, the load trades (quotes, takes, cancels); without, it transfers.
        load = TransferLoad(client, chain_id, keys, opts.tps,
                            payloads=market_payloads(feed) if feed is not None else None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load.run)
            if feed is not None:
                nursery.start_soon(feed.run)
            if gamblers is not None and opts.tps > 0:
                nursery.start_soon(gamblers.run)
            if maker is not None:
                nursery.start_soon(maker.run)
            last = -1
            while True:
                await trio.sleep(0.25)
                if proc.poll() is not None:
                    console.print(f"[red]node exited with status {proc.returncode}[/red]")
                    nursery.cancel_scope.cancel()
                    return 1
                try:
                    st = await client.call("status")
                    metrics = await client._http.get(url.rstrip("/") + "/metrics")
                except NodeUnreachable:
                    continue
                height = int(st["sync_info"]["latest_block_height"])
                tps = _metric(metrics.text, "appchain_tx_per_second")
                liqs = int(_metric(metrics.text, "appchain_liquidations_total"))
                if height != last:
                    last = height
                    rej = sum(load.stats.rejected.values())
                    console.print(
                        f"height {height:>6}  tx/s {tps:>8.1f}  mempool "
                        f"{st['mempool']['size']:>6}  sent {load.stats.sent:>8}  "
                        f"rejected {rej}  liquidations {liqs}", highlight=False)
                if opts.blocks is not None and height >= opts.blocks:
                    nursery.cancel_scope.cancel()
                    return 0
    return 0


def oracle_feed(root: Path, client: AsyncRPCClient, chain_id: str, period_s: float = 1.0,
                sharp_every: int = 50) -> OracleFeed | None:
    """An oracle random walk over the genesis markets, if there are markets and a key."""

    g = load_genesis(root / "genesis" / "genesis.json")
    key_file = root / "genesis" / "keys" / "oracle-0.json"
    if not g.markets or not key_file.exists():
        return None
    markets = [(m.market.symbol, m.oracle_price, m.market.tick_size, m.market.step_size)
               for m in g.markets]
    return OracleFeed(client, chain_id, read_key(key_file), markets, period_s,
                      sharp_every=sharp_every)


def leveraged_traders(opts: DevnetOptions, client: AsyncRPCClient, chain_id: str,
                      keys: list[PrivateKey], feed: OracleFeed | None) -> LeveragedTraders | None:
    """The last ``--leveraged`` accounts as high-leverage BTC traders (with markets only)."""
    if feed is None or opts.leveraged <= 0 or len(keys) < opts.leveraged + 2:
        return None
    faucet_file = opts.root / "genesis" / "keys" / "faucet.json"
    faucet = read_key(faucet_file) if faucet_file.exists() else None
    symbol = "BTC-USD-PERP" if "BTC-USD-PERP" in feed.prices else sorted(feed.prices)[0]
    return LeveragedTraders(client, chain_id, keys[-opts.leveraged:], faucet, symbol,
                            feed.steps[symbol], feed.ticks[symbol])


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def run_devnet(opts: DevnetOptions) -> int:
    """Run the devnet until --blocks is reached or Ctrl-C; returns the exit status."""
    console = Console(soft_wrap=True)  # never break lines: scripts parse this output
    opts.root.mkdir(parents=True, exist_ok=True)
    home = prepare(opts, console)
    addr_file = home / "data" / "rpc_address"
    addr_file.unlink(missing_ok=True)
    log = open(home / "node.log", "ab")  # noqa: SIM115 - lives as long as the child
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # From here on a SIGTERM must stop the node too: outside the load loop (which watches
    # for it itself) it interrupts like Ctrl-C, and `finally` stops the child.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    proc = subprocess.Popen(_appchain("start", "--home", str(home)), stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    code = 1
    try:
        try:
            code = trio.run(_drive, opts, home, proc, console)
        except BaseExceptionGroup as eg:  # the node would not start: its one Error: line
            if eg.subgroup(KeyboardInterrupt) is not None:
                raise
            raise unwrap_group(eg, NodeUnreachable) from None
    except* KeyboardInterrupt:  # Ctrl-C, also when trio delivers it inside a task group
        code = 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the child is being stopped now
        t0 = time.monotonic()
        rc = stop_process(proc)
        log.close()
        console.print(f"node stopped (status {rc}) in {time.monotonic() - t0:.1f}s; "
                      f"log in {home / 'node.log'}")
        signal.signal(signal.SIGTERM, previous)
    return code if rc == 0 else (code or 1)
