"""``appchain devnet``: one command from nothing to a running, loaded local chain.

Creates (or reuses) ``ROOT/genesis`` (genesis.json and every key) and ``ROOT/node0`` (the
producer's home), starts the producer as a child process with its RPC on 127.0.0.1, drives the
load generator against it, and shows height, tx/s and mempool size. With ``--nodes N`` it also
runs ``ROOT/node1`` .. ``ROOT/node{N-1}``, followers of node0 (homes without the producer
key), and ``--load-node I`` sends the load through node I instead. With ``--blocks N`` it
stops every node cleanly (SIGTERM, waits for the exit) once the head reaches N and every
follower holds it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import trio
from rich.console import Console

from chain.crypto import PrivateKey
from genesis.format import load_genesis
from node.client.rpc_client import AsyncRPCClient, NodeUnreachable, RPCCallError
from node.config import AdminConfig, Home, NodeConfig, P2PConfig, RPCConfig
from node.dev.loadgen import (
    LeveragedTraders,
    MarketMaker,
    OracleFeed,
    TransferLoad,
    market_payloads,
)
from node.fsutil import write_atomic
from node.keyfile import read_key
from node.node_error import unwrap_group
from state.store import Store

START_TIMEOUT_S = 30.0


STOP_TIMEOUT_S = 30.0


CATCH_UP_TIMEOUT_S = 30.0
"""With --blocks: how long the followers get to reach the producer's head before the stop."""


MAX_NODES = 16


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Besides SIGINT (Ctrl-C): each stops the load, then every node, and the devnet exits 0."""


PORT_STRIDE = 10
"""With a fixed --port P, node i (i >= 1) listens on P + 10*i (RPC), P + 10*i - 1 (peer
protocol) and P + 10*i + 2 (operator endpoint): node0's P, P - 1, P + 2 shifted by 10*i."""


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
    nodes: int = 1
    """The producer (node0) and ``nodes`` - 1 followers of it."""
    load_node: int = 0
    """The node the load generator sends to (a follower forwards to the producer)."""


@dataclass(frozen=True)
class NodePorts:
    """Where one devnet node listens on 127.0.0.1 (0: the OS picks)."""

    rpc: int
    p2p: int
    admin: int


def admin_port(opts: DevnetOptions) -> int:
    """The operator endpoint's port: its own, so two devnets never share one."""
    if opts.admin_port is not None:
        return opts.admin_port
    return 0 if opts.port == 0 else opts.port + 2


def node_ports(opts: DevnetOptions, index: int) -> NodePorts:
    """Node ``index``'s ports: all 0 with ``--port 0`` (but an explicit ``--admin-port`` for
    node0), else the PORT_STRIDE scheme (node0 keeps --port, --port - 1 and the admin port
    of a single-node devnet)."""
    if opts.port == 0:
        return NodePorts(0, 0, admin_port(opts) if index == 0 else 0)
    if index == 0:
        return NodePorts(opts.port, opts.port - 1, admin_port(opts))
    rpc = opts.port + PORT_STRIDE * index
    return NodePorts(rpc, rpc - 1, rpc + 2)


def node_name(index: int) -> str:
    return f"node{index}"


def _appchain(*args: str) -> list[str]:
    return [sys.executable, "-m", "node.cli", *args]


def _laddr(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


def prepare(opts: DevnetOptions, console: Console) -> Path:
    """Create genesis, keys and the producer home unless they already exist."""
    gdir = opts.root / "genesis"
    home = opts.root / node_name(0)
    if not (gdir / "genesis.json").exists():
        subprocess.run(_appchain("genesis", "new", "--out", str(gdir), "--chain-id",
                                 "appchain-devnet", "--accounts", str(opts.accounts),
                                 "--funding-interval-ms", str(opts.funding_interval_ms)),
                       check=True, stdout=subprocess.DEVNULL)
        console.print(f"created genesis and keys in {gdir}")
    ports = node_ports(opts, 0)
    rpc_laddr, admin_laddr, p2p_laddr = _laddr(ports.rpc), _laddr(ports.admin), _laddr(ports.p2p)
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


def prepare_follower(opts: DevnetOptions, index: int, peer: str, console: Console) -> Path:
    """Create follower home ``index`` (no producer key) unless it exists, and point it at
    the producer's peer address of this run (``p2p.persistent_peers``) and its own ports:
    with --port 0 the producer's address is only known once it runs."""
    home = Home(opts.root / node_name(index))
    ports = node_ports(opts, index)
    rpc, admin, p2p = _laddr(ports.rpc), _laddr(ports.admin), _laddr(ports.p2p)
    if not home.config_file.exists():
        g = load_genesis(opts.root / "genesis" / "genesis.json")
        home.data_dir.mkdir(parents=True, exist_ok=True)
        home.write_config(NodeConfig(moniker=node_name(index), rpc=RPCConfig(laddr=rpc),
                                     admin=AdminConfig(laddr=admin),
                                     p2p=P2PConfig(laddr=p2p, persistent_peers=(peer,))))
        write_atomic(home.genesis_file, g.to_json().encode())
        console.print(f"initialised follower home {home.root}")
        return home.root
    cfg = home.load_config()
    if (cfg.rpc.laddr, cfg.admin.laddr, cfg.p2p.laddr, cfg.p2p.persistent_peers) != (
            rpc, admin, p2p, (peer,)):
        home.write_config(replace(cfg, rpc=replace(cfg.rpc, laddr=rpc),
                                  admin=replace(cfg.admin, laddr=admin),
                                  p2p=replace(cfg.p2p, laddr=p2p, persistent_peers=(peer,))))
    return home.root


def account_keys(root: Path) -> list[PrivateKey]:
    keys_dir = root / "genesis" / "keys"
    files = sorted(keys_dir.glob("account-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    return [read_key(p) for p in files]


class DevnetNode:
    """One child node (``appchain start``): node0 produces, the others follow it."""

    def __init__(self, index: int, home: Path) -> None:
        self.index = index
        self.home = home
        self.url = ""
        """Its RPC URL, once it answers."""
        (home / "data" / "rpc_address").unlink(missing_ok=True)  # a stale one would mislead
        self._log: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 - lives with the child
        # Its own process group: a Ctrl-C in the terminal reaches only the devnet, which
        # stops each node with one SIGTERM (a node signalled twice would not stop cleanly).
        self.proc = subprocess.Popen(_appchain("start", "--home", str(home)), stdout=self._log,
                                     stderr=subprocess.STDOUT, process_group=0,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))

    @property
    def name(self) -> str:
        return node_name(self.index)

    @property
    def log_path(self) -> Path:
        return self.home / "node.log"

    def address(self, what: str) -> str:
        """What the node wrote to ``data/<what>_address`` ("?" if nothing)."""
        f = self.home / "data" / f"{what}_address"
        return f.read_text().strip() if f.exists() else "?"

    def close_log(self) -> None:
        self._log.close()


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


def _reap(proc: subprocess.Popen[bytes]) -> int:
    """Wait (bounded) for a signalled child's clean exit, SIGKILL as a last resort."""
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode


def stop_all(nodes: list[DevnetNode], console: Console) -> list[int]:
    """SIGTERM every node still running at once (so the stops overlap), then wait for each."""
    t0 = time.monotonic()
    for n in nodes:
        if n.proc.poll() is None:
            n.proc.send_signal(signal.SIGTERM)
    codes = []
    for n in nodes:
        rc = _reap(n.proc)
        n.close_log()
        codes.append(rc)
        name = "node" if len(nodes) == 1 else n.name
        console.print(f"{name} stopped (status {rc}) in {time.monotonic() - t0:.1f}s; "
                      f"log in {n.log_path}")
    return codes


async def _drive(opts: DevnetOptions, nodes: list[DevnetNode], console: Console) -> int:
    """Drive the load until --blocks, SIGTERM or SIGHUP (then 0: the nodes are stopped by
    the caller)."""
    code = 0
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    console.print(f"{signal.Signals(signum).name}: stopping the devnet")
                    nursery.cancel_scope.cancel()
                    return

            async def drive() -> None:
                nonlocal code
                code = await _drive_load(opts, nodes, console)
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            nursery.start_soon(drive)
    return code


async def _start_followers(opts: DevnetOptions, nodes: list[DevnetNode],
                           console: Console) -> None:
    """Start node1.. once the producer listens (its peer address is then known); each is
    appended to ``nodes`` as soon as it runs, so that the caller stops it whatever happens."""
    peer = nodes[0].address("p2p")
    for i in range(1, opts.nodes):
        nodes.append(DevnetNode(i, prepare_follower(opts, i, peer, console)))
    for n in nodes[1:]:
        n.url = await wait_for_rpc(n.home, n.proc)
    for n in nodes:
        role = "producer" if n.index == 0 else "follower"
        console.print(f"{n.name} {role} rpc {n.url} p2p {n.address('p2p')} admin "
                      f"{n.address('admin')} pid {n.proc.pid} home {n.home}", highlight=False)


async def _drive_load(opts: DevnetOptions, nodes: list[DevnetNode], console: Console) -> int:
    producer = nodes[0]
    url = producer.url = await wait_for_rpc(producer.home, producer.proc)
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(AsyncRPCClient(url))
        st = await client.call("status")
        chain_id = st["node_info"]["network"]
        target = (f" through {node_name(opts.load_node)}" if opts.load_node else "")
        console.print(f"devnet {chain_id}: rpc {url}, admin {producer.address('admin')}, "
                      f"node pid {producer.proc.pid}, producer home {producer.home}, "
                      f"load {opts.tps} tx/s{target}" + (f", stopping at height {opts.blocks}"
                                                         if opts.blocks else ""))
        if opts.nodes > 1:
            await _start_followers(opts, nodes, console)
        console.print(f"try: appchain status --node {url}   |   curl -s {url}/metrics   "
                      f"|   keys in {opts.root / 'genesis' / 'keys'}", highlight=False)
        clients = [client] + [await stack.enter_async_context(AsyncRPCClient(n.url, timeout=5))
                              for n in nodes[1:]]
        load_client = clients[opts.load_node]
        load, tasks = build_load(opts, load_client, chain_id)

        async def run_load() -> None:
            # A follower reads nonces from its own store: let it catch up with the chain
            # first, or the load would start from nonces the chain already used.
            if opts.load_node:
                await _caught_up(load_client)
            async with trio.open_nursery() as load_nursery:
                for task in tasks:
                    load_nursery.start_soon(task)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_load)
            last = -1
            while True:
                await trio.sleep(0.25)
                if _report_dead(nodes, console):
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
                    others = ""
                    if len(clients) > 1:
                        hs = [height, *await _heights(clients[1:])]
                        others = "  nodes " + " ".join("-" if h is None else str(h)
                                                       for h in hs)
                    console.print(
                        f"height {height:>6}{others}  tx/s {tps:>8.1f}  mempool "
                        f"{st['mempool']['size']:>6}  sent {load.stats.sent:>8}  "
                        f"rejected {rej}  liquidations {liqs}", highlight=False)
                if opts.blocks is not None and height >= opts.blocks:
                    nursery.cancel_scope.cancel()
                    break
        if len(nodes) == 1:
            return 0
        return await _stop_together(opts, nodes, clients, console)
    return 0  # (not reached: an exit stack could swallow an exception, for mypy)


def build_load(opts: DevnetOptions, client: AsyncRPCClient, chain_id: str
               ) -> tuple[TransferLoad, list[Callable[[], Awaitable[None]]]]:
    """The load generator sending through ``client``: the traders (whose stats the progress
    line shows) and every task to run (traders, oracle feed, market maker, leveraged)."""
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
    tasks: list[Callable[[], Awaitable[None]]] = [load.run]
    if feed is not None:
        tasks.append(feed.run)
    if gamblers is not None and opts.tps > 0:
        tasks.append(gamblers.run)
    if maker is not None:
        tasks.append(maker.run)
    return load, tasks


def _report_dead(nodes: list[DevnetNode], console: Console) -> bool:
    """Say which child died (and where its log is); True if one did."""
    dead = [n for n in nodes if n.proc.poll() is not None]
    for n in dead:
        who = "node" if len(nodes) == 1 else n.name
        console.print(f"[red]{who} exited with status {n.proc.returncode}[/red] (log: "
                      f"{n.log_path})", highlight=False)
    return bool(dead)


async def _height(c: AsyncRPCClient) -> int | None:
    try:
        st = await c.call("status")
    except (NodeUnreachable, RPCCallError):
        return None
    return int(st["sync_info"]["latest_block_height"])


async def _heights(clients: list[AsyncRPCClient]) -> list[int | None]:
    """Every node's height, asked all at once (None: no answer)."""
    out: list[int | None] = [None] * len(clients)

    async def one(i: int) -> None:
        out[i] = await _height(clients[i])

    async with trio.open_nursery() as nursery:
        for i in range(len(clients)):
            nursery.start_soon(one, i)
    return out


async def _caught_up(c: AsyncRPCClient) -> None:
    """Until the follower at ``c`` holds its producer's head."""
    while True:
        try:
            st = await c.call("status")
            if not st["sync_info"]["catching_up"]:
                return
        except (NodeUnreachable, RPCCallError):
            pass
        await trio.sleep(0.1)


async def _stop_together(opts: DevnetOptions, nodes: list[DevnetNode],
                         clients: list[AsyncRPCClient], console: Console) -> int:
    """With --blocks and followers: leave every node on the same head.

    The producer keeps making (empty) blocks, and a block it commits while it stops never
    reaches a follower; so it is stopped just after a block that every follower holds, early
    in its interval (or, if no such moment comes within CATCH_UP_TIMEOUT_S, anyway), then the
    followers get a bounded wait for its final head. Returns 1 (saying which) if a follower
    does not reach it."""
    if await _at_one_fresh_head(opts, nodes, clients) is None:
        _report_dead(nodes, console)
        return 1
    nodes[0].proc.send_signal(signal.SIGTERM)  # (also when no such moment came: False)
    if await trio.to_thread.run_sync(_reap, nodes[0].proc) != 0:
        return 1  # (stop_all says with which status)
    with Store(nodes[0].home / "data" / "store", create=False) as s:
        head = s.head()
    final = head.height if head is not None else 0
    heights: list[int | None] = []
    with trio.move_on_after(5):  # only a block the producer already sent can still arrive
        while True:
            heights = await _heights(clients[1:])
            if all(h == final for h in heights):
                break
            await trio.sleep(0.02)
    behind = [(n, h) for n, h in zip(nodes[1:], heights, strict=True) if h != final]
    for n, h in behind:
        console.print(f"[red]{n.name} did not catch up[/red]: height "
                      f"{'-' if h is None else h} when the producer stopped at {final} (log: "
                      f"{n.log_path})", highlight=False)
    if behind:
        return 1
    forwarded = await _forwarded(clients[1:])
    console.print(f"all {len(nodes)} nodes at height {final}; "
                  + ", ".join(f"{n.name} forwarded {f} transactions"
                              for n, f in zip(nodes[1:], forwarded, strict=True)),
                  highlight=False)
    return 0


async def _at_one_fresh_head(opts: DevnetOptions, nodes: list[DevnetNode],
                             clients: list[AsyncRPCClient]) -> bool | None:
    """Until every follower holds the producer's head and that block is less than half an
    interval old (True), CATCH_UP_TIMEOUT_S passed (False), or a node died (None)."""
    window_ms = opts.block_interval_ms / 2
    with trio.move_on_after(CATCH_UP_TIMEOUT_S):
        while True:
            if any(n.proc.poll() is not None for n in nodes):
                return None
            try:
                st = await clients[0].call("status")
            except (NodeUnreachable, RPCCallError):
                st = None
            if st is not None:
                top = int(st["sync_info"]["latest_block_height"])
                heights = await _heights(clients[1:])
                age_ms = time.time() * 1000 - int(st["sync_info"]["latest_block_time"])
                if all(h == top for h in heights) and 0 <= age_ms <= window_ms:
                    return True
            await trio.sleep(0.01)
    return False


async def _forwarded(clients: list[AsyncRPCClient]) -> list[str]:
    """Each follower's ``txs_forwarded`` (how much of the load went through it)."""
    out = []
    for c in clients:
        try:
            st: dict[str, Any] = await c.call("status")
            out.append(str((st.get("follower") or {}).get("txs_forwarded", "?")))
        except (NodeUnreachable, RPCCallError):
            out.append("?")
    return out


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
    if not 1 <= opts.nodes <= MAX_NODES or not 0 <= opts.load_node < opts.nodes:
        raise ValueError(f"nodes must be 1..{MAX_NODES} and load_node 0..nodes-1")
    console = Console(soft_wrap=True)  # never break lines: scripts parse this output
    opts.root.mkdir(parents=True, exist_ok=True)
    home = prepare(opts, console)
    nodes: list[DevnetNode] = []
    # From here on a SIGTERM (or SIGHUP: the terminal closed) must stop the nodes too:
    # outside the load loop (which watches for it itself) it interrupts like Ctrl-C, and
    # `finally` stops the children.
    previous = {s: signal.signal(s, signal.default_int_handler) for s in STOP_SIGNALS}
    code = 1
    codes: list[int] = []
    try:
        try:
            nodes.append(DevnetNode(0, home))
            code = trio.run(_drive, opts, nodes, console)
        except BaseExceptionGroup as eg:  # a node would not start: its one Error: line
            if eg.subgroup(KeyboardInterrupt) is not None:
                raise
            raise unwrap_group(eg, NodeUnreachable) from None
    except* KeyboardInterrupt:  # Ctrl-C, also when trio delivers it inside a task group
        code = 0
    finally:
        for s in STOP_SIGNALS:  # the children are being stopped now
            signal.signal(s, signal.SIG_IGN)
        codes = stop_all(nodes, console)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code if all(rc == 0 for rc in codes) else (code or 1)
