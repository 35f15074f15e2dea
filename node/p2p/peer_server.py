"""Serving blocks to followers: the producer's side of the peer protocol (docs/PROTOCOL.md §13).

Each follower connection: ``hello`` both ways (chain id, genesis hash, version must match),
then the follower's ``subscribe``; from then on the server sends every block after the
follower's head in height order (range sync in batches of at most :data:`BATCH_BLOCKS` per
wake-up), then each new block as it commits, and a ``status`` at least every second (the
head and the halt, so a follower can show the producer's halt and its own lag). A follower
whose head is not on this chain (it holds a block this chain abandoned in a rollback) gets
the fork certificates instead and is expected to roll back and subscribe again. A peer that
breaks the protocol, is slow to greet or names another chain is sent an ``error`` frame and
dropped with one log line; nothing a peer sends can stop the node.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import trio

from chain.block import Block
from node.api.http_server import open_listeners
from node.head_watch import HeadWatch
from node.node import Node
from node.p2p.state_sync import clear_served, serve_snapshot
from node.p2p.wire import (
    VERSION,
    BlockMsg,
    ErrorMsg,
    ForkMsg,
    FramedStream,
    Hello,
    ProtocolError,
    SnapshotRequest,
    StatusMsg,
    Subscribe,
    check_hello,
)
from state import schema
from state.meta import fork_certificate, fork_certificates

log = logging.getLogger("appchain.p2p")

BATCH_BLOCKS = 256
"""Blocks sent per wake-up during range sync before the server checks for news."""

STATUS_INTERVAL_S = 1.0


def own_hello(node: Node) -> Hello:
    h = node.head
    return Hello(VERSION, node.params.chain_id, node.genesis.hash,
                 "producer" if node.signer is not None else "follower", h.era, h.height,
                 h.hash, node.rpc_url)


def status_msg(node: Node) -> StatusMsg:
    h, halt = node.head, node.halted
    return StatusMsg(h.height, h.era, halt is not None, halt.reason if halt else "",
                     halt.by if halt else "", halt.since_ms if halt else 0)


def _block_hash_at(node: Node, height: int) -> bytes | None:
    raw = node.store.db.get(schema.block_key(height))
    return None if raw is None else Block.decode_block(raw).hash


def _era_certificate(node: Node, height: int, raw: bytes) -> bytes:
    """The fork certificate to send with the first block of an era (else b"")."""
    era = Block.decode_block(raw).header.era
    prev = node.store.db.get(schema.block_key(height - 1)) if height > 1 else None
    if era == 0 or (prev is not None and Block.decode_block(prev).header.era == era):
        return b""
    return fork_certificate(node.store, era) or b""


async def _serve_follower(node: Node, watch: HeadWatch, fs: FramedStream, sub: Subscribe
                          ) -> None:
    if sub.height == 0:
        ours: bytes | None = sub.head_hash  # genesis: the hello already matched its hash
    else:
        ours = _block_hash_at(node, sub.height) if sub.height <= node.head.height else None
    if ours != sub.head_hash:
        # Not on this chain (or ahead of it): tell it where the chain continues.
        certs = [c.encode() for c in fork_certificates(node.store)
                 if c.certificate.era > sub.era]
        await fs.send(ForkMsg(certs))
        return
    sent = sub.height
    last_status = -1.0
    while True:
        head = node.head
        if head.height < sent:  # a rollback on this node: the follower must follow it
            certs = [c.encode() for c in fork_certificates(node.store)
                     if c.certificate.era > sub.era]
            await fs.send(ForkMsg(certs))
            return
        n = 0
        while sent < head.height and n < BATCH_BLOCKS:
            raw = node.store.db.get(schema.block_key(sent + 1))
            if raw is None:  # (pruned or racing a rollback: re-check the head)
                break
            await fs.send(BlockMsg(sent + 1, raw, _era_certificate(node, sent + 1, raw)))
            sent += 1
            n += 1
        now = trio.current_time()
        if now - last_status >= STATUS_INTERVAL_S:
            await fs.send(status_msg(node))
            last_status = now
        if n < BATCH_BLOCKS:
            await watch.wait(STATUS_INTERVAL_S)


@dataclass(frozen=True)
class _Limits:
    slots: trio.CapacityLimiter
    """One per connected peer, at most ``p2p.max_peers``."""
    snapshot: trio.Lock
    """One snapshot served at a time (each is a full write of the state)."""


async def _handle(node: Node, watch: HeadWatch, stream: trio.SocketStream,
                  limits: _Limits) -> None:
    try:
        peer = stream.socket.getpeername()
        where = f"{peer[0]}:{peer[1]}"
    except OSError:
        where = "?"
    fs = FramedStream(stream)
    try:
        async with stream:
            slots = limits.slots
            try:
                slots.acquire_nowait()
            except trio.WouldBlock:
                await fs.send(ErrorMsg("too_many_peers", "this node is at p2p.max_peers"))
                log.warning("peer %s refused: at p2p.max_peers (%d)", where,
                            node.cfg.p2p.max_peers)
                return
            try:
                with trio.fail_after(node.cfg.p2p.handshake_timeout_ms / 1000):
                    hello = await fs.receive()
                    if not isinstance(hello, Hello):
                        raise ProtocolError("the first frame must be hello")
                    check_hello(hello, node.params.chain_id, node.genesis.hash)
                    await fs.send(own_hello(node))
                    sub = await fs.receive()
                    if not isinstance(sub, Subscribe | SnapshotRequest):
                        raise ProtocolError("expected subscribe or snapshot_request after hello")
                if isinstance(sub, SnapshotRequest):
                    log.info("peer %s asks for a snapshot (state sync)", where)
                    await serve_snapshot(node, fs, limits.snapshot)
                    return
                log.info("peer %s (%s at height %d) subscribed", where, hello.role, sub.height)
                await _serve_follower(node, watch, fs, sub)
            except ProtocolError as e:
                log.warning("peer %s dropped: %s", where, e)
                with trio.move_on_after(1):
                    await fs.send(ErrorMsg(e.reason, str(e)))
            except trio.TooSlowError:
                log.warning("peer %s dropped: no hello/subscribe within %d ms", where,
                            node.cfg.p2p.handshake_timeout_ms)
            finally:
                slots.release()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
        log.info("peer %s gone: %s", where, e or type(e).__name__)


async def serve_p2p(node: Node, host: str, port: int, watch: HeadWatch, *,
                    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Listen for peers until cancelled; reports ``host:port`` once bound."""
    listeners = await open_listeners(host, port)
    sock = listeners[0].socket
    bound: Any = sock.getsockname()
    limits = _Limits(trio.CapacityLimiter(node.cfg.p2p.max_peers), trio.Lock())
    clear_served(node.home.data_dir)

    async def handler(stream: trio.SocketStream) -> None:
        await _handle(node, watch, stream, limits)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handler, listeners)
        task_status.started(f"{bound[0]}:{bound[1]}")
