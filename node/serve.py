"""Running a node process: open the home, serve RPC, produce blocks, stop cleanly on signals."""

from __future__ import annotations

import logging
import signal
import sys
from functools import partial

import trio

from genesis.format import load_genesis
from node.api.http_server import ListenError, descriptor_budget
from node.api.server import serve_rpc
from node.config import Home, parse_laddr
from node.follower_state import FollowerState
from node.fsutil import write_atomic
from node.head_watch import HeadWatch
from node.memory import Trimmer, limit_arenas
from node.node import Node, open_node
from node.node_error import NodeError, unwrap_group
from node.ops.endpoint import serve_admin
from node.p2p.follower import DIVERGENCE, follow
from node.p2p.peer_server import serve_p2p
from node.p2p.state_sync import StateSyncRefused, state_sync
from state.store import Store

log = logging.getLogger("appchain.run")


def connection_caps(node: Node) -> tuple[int, int]:
    """The effective (rpc, admin) connection caps: the configured ones, lowered so that all
    connections, the store's open files and the node's own files fit under RLIMIT_NOFILE
    (a producer that cannot open its last-signed record halts). Logged once."""
    store_files = node.cfg.storage.max_open_files
    soft, budget = descriptor_budget(store_files)
    want_rpc, want_admin = node.cfg.rpc.max_connections, node.cfg.admin.max_connections
    admin = max(1, min(want_admin, budget // 4))
    rpc = max(1, min(want_rpc, budget - admin))
    lowered = f" (lowered from the configured {want_rpc}/{want_admin})" if (
        (rpc, admin) != (want_rpc, want_admin)) else ""
    log.info("connection caps in effect: rpc %d, admin %d%s; RLIMIT_NOFILE %d, store up to "
             "%d open files, %d kept for the node's own", rpc, admin, lowered, soft,
             store_files, soft - store_files - budget)
    return rpc, admin


async def run_node(node: Node, *, follow_peer: str | None = None,
                   task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve and produce until cancelled. Reports the RPC URL once it is listening.

    The URL is also written to ``data/rpc_address`` (and the peer port's ``HOST:PORT`` to
    ``data/p2p_address`` and the operator endpoint's to ``data/admin_address``, written
    first) so scripts that asked for port 0 can find them. ``follow_peer``: follow this
    producer (else the first of ``p2p.persistent_peers``) when there is no producer key.
    """
    host, port = parse_laddr(node.cfg.rpc.laddr, "rpc.laddr")
    ahost, aport = parse_laddr(node.cfg.admin.laddr, "admin.laddr")
    phost, pport = parse_laddr(node.cfg.p2p.laddr, "p2p.laddr")
    rpc_cap, admin_cap = connection_caps(node)
    limit_arenas(node.cfg.memory.malloc_arena_max)  # before the worker threads start
    try:
        async with trio.open_nursery() as nursery:
            trimmer = Trimmer(node.cfg.memory.malloc_trim_interval_ms / 1000)
            if trimmer.enabled:
                nursery.start_soon(_trim_loop, node, trimmer)
            watch = node.head_watch = HeadWatch()
            node.chain.watchers.append(watch.poke)
            p2p_addr = await nursery.start(serve_p2p, node, phost, pport, watch)
            write_atomic(node.home.data_dir / "p2p_address", (p2p_addr + "\n").encode())
            log.info("p2p listening on %s", p2p_addr)
            admin_url = await nursery.start(partial(serve_admin, node, ahost, aport,
                                                    max_connections=admin_cap))
            write_atomic(node.home.data_dir / "admin_address", (admin_url + "\n").encode())
            log.info("admin endpoint listening on %s", admin_url)
            url = await nursery.start(partial(serve_rpc, node, host, port,
                                              max_connections=rpc_cap))
            node.rpc_url = url
            write_atomic(node.home.data_dir / "rpc_address", (url + "\n").encode())
            log.info("rpc listening on %s", url)
            peer = follow_peer or next(iter(node.cfg.p2p.persistent_peers), None)
            if node.signer is not None:
                nursery.start_soon(node.producer.producer_loop)
            elif peer is not None:
                node.follower = FollowerState(peer, producer_rpc=node.cfg.p2p.producer_rpc)
                nursery.start_soon(follow, node, peer, node.follower)
                if node.cfg.p2p.exit_on_divergence:
                    nursery.start_soon(_exit_on_divergence, node, watch)
            else:
                log.info("no producer key and no peer to follow: serving reads only")
            task_status.started(url)
    finally:
        if node.follower is not None:
            with trio.CancelScope(shield=True):
                await node.follower.aclose()


class Diverged(Exception):
    """A follower configured with ``p2p.exit_on_divergence`` halted on a divergence."""


async def _exit_on_divergence(node: Node, watch: HeadWatch) -> None:
    while node.halted is None or node.halted.check != DIVERGENCE:
        await watch.wait(1.0)
    raise Diverged(node.halted.reason)


def _activity(node: Node) -> tuple[float | None, int]:
    """Changes whenever a transaction is committed or the mempool changes size."""
    return (node.metrics.registry.get_sample_value("appchain_txs_committed_total"),
            len(node.mempool))


async def _trim_loop(node: Node, trimmer: Trimmer) -> None:
    """Return freed heap memory to the system every interval in which there was work."""
    seen = _activity(node)
    while True:
        await trio.sleep(trimmer.interval_s)
        now = _activity(node)
        if trimmer.due(now != seen):
            seen = now
            await trio.to_thread.run_sync(trimmer.run)


async def _serve_until_signal(node: Node, follow_peer: str | None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(run_node, node, follow_peer=follow_peer))
            print(f"appchain node {node.cfg.moniker}: chain {node.params.chain_id}, "
                  f"head {node.head.height}, rpc {url}", flush=True)
            async for signum in signals:
                log.info("received %s: finishing the current block and stopping",
                         signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


async def _sync_until_signal(home: Home, peer: str) -> bool:
    """State sync, unless SIGINT/SIGTERM comes first (then False)."""
    cfg = home.load_config()
    g = load_genesis(home.genesis_file)
    done = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            async def sync() -> None:
                nonlocal done
                await state_sync(peer, g, home.store_dir, home.data_dir,
                                 cfg.p2p.handshake_timeout_ms / 1000)
                done = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(sync)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    return done


def _state_sync_first(home: Home, follow: str | None) -> bool:
    """Fill an empty store from the peer's state (``--state-sync``); False if interrupted."""
    if home.producer_key_file.exists():
        raise NodeError(f"state sync is for followers: {home.producer_key_file} exists (the "
                        "producer's state is its own)", reason="bad_config")
    cfg = home.load_config()
    peer = follow or next(iter(cfg.p2p.persistent_peers), None)
    if peer is None:
        raise NodeError("state sync needs a peer: --follow HOST:PORT or p2p.persistent_peers",
                        reason="bad_config")
    with Store(home.store_dir) as store:
        head = store.head()
    if head is not None:
        log.info("state sync skipped: the store already holds height %d", head.height)
        return True
    print(f"state sync: fetching the state of {peer}", flush=True)
    try:
        return trio.run(_sync_until_signal, home, peer)
    except BaseExceptionGroup as eg:
        e = unwrap_group(eg, StateSyncRefused)
        if isinstance(e, StateSyncRefused):
            raise NodeError(str(e), reason=e.reason) from None
        raise


def start(home: Home, follow: str | None = None, state_sync: bool = False) -> None:
    """Entry point of ``appchain start``: blocks until SIGINT/SIGTERM. ``state_sync`` (or
    ``p2p.state_sync``): an empty store is first filled from the peer's state."""
    if (state_sync or home.load_config().p2p.state_sync) and not _state_sync_first(home,
                                                                                   follow):
        print("stopped during state sync (nothing imported)", flush=True)
        return
    node = open_node(home)
    if follow is not None and node.signer is not None:
        node.close()
        raise NodeError(f"--follow needs a home without the producer key "
                        f"({home.producer_key_file} exists)", reason="bad_config")
    try:
        trio.run(_serve_until_signal, node, follow)
    except BaseExceptionGroup as eg:
        if eg.subgroup(Diverged) is not None:
            print(f"Error: halted on a divergence: {node.halted.reason if node.halted else ''}",
                  file=sys.stderr, flush=True)
            node.close()
            sys.exit(3)
        raise unwrap_group(eg, ListenError) from None
    finally:
        node.close()
    print(f"stopped at height {node.head.height}", flush=True)

