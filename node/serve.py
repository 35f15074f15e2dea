"""Running a node process: open the home, serve RPC, produce blocks, stop cleanly on signals."""

from __future__ import annotations

import logging
import signal
from functools import partial

import trio

from node.api.http_server import ListenError, descriptor_budget
from node.api.server import serve_rpc
from node.config import Home, parse_laddr
from node.fsutil import write_atomic
from node.memory import Trimmer, limit_arenas
from node.node import Node, open_node
from node.node_error import unwrap_group
from node.ops.endpoint import serve_admin

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


async def run_node(node: Node, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
                   ) -> None:
    """Serve and produce until cancelled. Reports the RPC URL once it is listening.

    The URL is also written to ``data/rpc_address`` (and the operator endpoint's to
    ``data/admin_address``, written first) so scripts that asked for port 0 can find them.
    """
    host, port = parse_laddr(node.cfg.rpc.laddr, "rpc.laddr")
    ahost, aport = parse_laddr(node.cfg.admin.laddr, "admin.laddr")
    rpc_cap, admin_cap = connection_caps(node)
    limit_arenas(node.cfg.memory.malloc_arena_max)  # before the worker threads start
    async with trio.open_nursery() as nursery:
        trimmer = Trimmer(node.cfg.memory.malloc_trim_interval_ms / 1000)
        if trimmer.enabled:
            nursery.start_soon(_trim_loop, node, trimmer)
        admin_url = await nursery.start(partial(serve_admin, node, ahost, aport,
                                                max_connections=admin_cap))
        write_atomic(node.home.data_dir / "admin_address", (admin_url + "\n").encode())
        log.info("admin endpoint listening on %s", admin_url)
        url = await nursery.start(partial(serve_rpc, node, host, port,
                                          max_connections=rpc_cap))
        write_atomic(node.home.data_dir / "rpc_address", (url + "\n").encode())
        log.info("rpc listening on %s", url)
        if node.signer is not None:
            nursery.start_soon(node.producer.producer_loop)
        else:
            log.info("no producer key: serving reads only")
        task_status.started(url)


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


async def _serve_until_signal(node: Node) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(run_node, node)
            print(f"appchain node {node.cfg.moniker}: chain {node.params.chain_id}, "
                  f"head {node.head.height}, rpc {url}", flush=True)
            async for signum in signals:
                log.info("received %s: finishing the current block and stopping",
                         signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def start(home: Home) -> None:
    """Entry point of ``appchain start``: blocks until SIGINT/SIGTERM."""
    node = open_node(home)
    try:
        trio.run(_serve_until_signal, node)
    except BaseExceptionGroup as eg:
        raise unwrap_group(eg, ListenError) from None
    finally:
        node.close()
    print(f"stopped at height {node.head.height}", flush=True)

