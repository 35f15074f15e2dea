"""Following a producer: sync its blocks, re-execute each, and follow its rollbacks.

A follower (a node without the producer key, with ``p2p.persistent_peers`` or ``--follow``)
connects to the producer's peer port, says ``hello``, subscribes from its own head and then
imports every block it is sent with :func:`state.transition.import_block`: producer
signature, linkage, era and every root are checked, the block re-executed, nothing written
unless all roots match. A block whose roots this node cannot reproduce is a **divergence**:
the follower halts (check ``divergence``, by ``node``, durable), reports the height, which
root differs and both values, and imports nothing more until a fork certificate rolls it
back below that height. A peer that breaks the protocol or goes away is reconnected to with
backoff; it never stops the node.

Rollbacks propagate by certificate: when the producer says the follower's head is not on
its chain (``fork``), the follower checks each signed fork certificate against the genesis
operators and threshold and its own chain (the certificate's block must be its block at that
height), then rolls back with its own undo records (archiving the abandoned blocks, as the
producer did) and subscribes again. A certificate below threshold or for another chain is
refused, and the follower halts saying why.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import trio

from chain.admin import AdminRefused, SignedForkCertificate
from chain.block import Block
from chain.errors import ChainError, InvalidBlock
from node.chain_head import wall_ms
from node.config import ConfigError, parse_peer, parse_rpc_url
from node.follower_state import FollowerState
from node.node import Node
from node.p2p.peer_server import own_hello
from node.p2p.wire import (
    BlockMsg,
    ErrorMsg,
    ForkMsg,
    FramedStream,
    Hello,
    ProtocolError,
    StatusMsg,
    Subscribe,
    check_hello,
)
from state import schema
from state.invariants import InvariantViolation
from state.recovery import rollback
from state.store_errors import StoreError
from state.transition import import_block

log = logging.getLogger("appchain.follow")

DIVERGENCE = "divergence"
FORK_REFUSED = "fork_certificate"
LIVENESS_S = 10.0
"""A producer sends ``status`` every second; silence this long means the link is dead."""
HEALTHY_S = 2.0
"""A session up at least this long was a good one: the reconnect backoff starts again."""


def diverged(node: Node) -> bool:
    h = node.halted
    return h is not None and h.check in (DIVERGENCE, FORK_REFUSED)


def _halt(node: Node, reason: str, check: str, evidence: dict[str, Any], height: int,
          by: str = "node") -> None:
    """Halt once: a refused certificate met again on every reconnect is not a new halt."""
    h = node.halted
    if h is None or (h.check, h.reason) != (check, reason):
        node.chain.halt(reason, check, evidence, height, by=by)


def _divergence(node: Node, raw: bytes, e: InvalidBlock) -> None:
    """Halt on a block whose roots this node cannot reproduce, saying where and how."""
    block = Block.decode_block(raw)
    h = block.header
    evidence: dict[str, Any] = {
                "height": str(h.height), "root": e.reason, "error": str(e),
                "block_hash": block.hash.hex(), "producer_state_root": h.state_root.hex(),
                "producer_results_root": h.results_root.hex(),
                "our_head_state_root": node.head.state_root.hex()}
    if isinstance(e, InvariantViolation):
        # Our own store fails a check before any root is computed: the guard names the
        # first differing keys (e.g. stored_state: the stored value against the tree's).
        evidence.update(check=e.check, **e.evidence)
    _halt(node, f"block {h.height} from the producer does not re-execute here: {e}",
                    DIVERGENCE, evidence, h.height, by="node")


Refusal = tuple[str, dict[str, str]]
"""Why a certificate is refused, and the halt's evidence."""


def _refusal(node: Node, raw: bytes) -> SignedForkCertificate | Refusal:
    """Decode a fork certificate and check it against this chain's id and its genesis
    operators and threshold: the certificate, or why it is refused."""
    try:
        signed = SignedForkCertificate.decode(raw)
    except ChainError as e:
        return f"a fork certificate from the producer does not decode: {e}", {"error": str(e)}
    c = signed.certificate
    if c.chain_id != node.params.chain_id:
        return f"fork certificate of era {c.era} is for chain {c.chain_id!r}", {"era": str(c.era)}
    try:
        signed.verify(node.params.operators, node.params.operator_threshold)
    except AdminRefused as e:
        return (f"fork certificate of era {c.era} refused: {e.message}",
                {"era": str(c.era), "why": e.reason})
    return signed


def _apply_fork(node: Node, certs: list[bytes]) -> bool:
    """Roll back to where the producer's chain continues; False (and halted) if refused."""
    store = node.store
    head = node.head
    for raw in certs:
        signed = _refusal(node, raw)
        if isinstance(signed, tuple):
            why, evidence = signed
            _halt(node, why, FORK_REFUSED, evidence, head.height, by="node")
            return False
        c = signed.certificate
        if c.era > head.era and (c.to_height, c.to_block_hash) == (head.height, head.hash):
            # The new era continues from our head: nothing to roll back (the blocks it
            # abandons are ones we never imported, e.g. refused on a divergence).
            _continue_from_head(node, raw, c.era)
            return True
        if c.era <= head.era or c.to_height >= head.height:
            continue
        ours = store.db.get(schema.block_key(c.to_height))
        if ours is None or Block.decode_block(ours).hash != c.to_block_hash:
            continue  # continues from a block we do not hold: a later certificate may fit
        plan = replace(rollback.plan_rollback(store, c.to_height, details=False),
                       new_era=c.era)
        record = rollback.begin(store, plan, raw, f"fork certificate era {c.era}: {c.reason}",
                                [s.key for s in signed.signatures], wall_ms())
        new_head = rollback.run(store, record, max_blocks=node.cfg.recovery.rollback_chunk_blocks)
        node.chain.rolled_back(new_head)
        if diverged(node):
            halt = node.halted
            assert halt is not None
            if halt.at_height > c.to_height:  # the divergence is on the abandoned fork
                node.chain.resume()
        log.warning("followed the producer's rollback: %d -> %d, era %d (%s)", head.height,
                    c.to_height, c.era, c.reason)
        return True
    _halt(node, "the producer says our head is not on its chain, and no fork "
                    "certificate it sent continues from a block we hold",
                    FORK_REFUSED, {"head": str(head.height), "certificates": str(len(certs))},
                    head.height, by="node")
    return False


def _continue_from_head(node: Node, raw: bytes, era: int) -> None:
    """Store a checked certificate of a new era that continues from our head, and lift a
    divergence halt above it (the block we could not reproduce is on the abandoned fork)."""
    key = schema.fork_key(era)
    if node.store.db.get(key) is None:
        node.store.commit_writes([(key, raw)])
    node.chain.rolled_back(node.head)  # (the head stays; the next block opens the era)
    halt = node.halted
    if diverged(node) and halt is not None and halt.at_height > node.head.height:
        node.chain.resume()
    log.warning("era %d continues from our head %d: following it", era, node.head.height)


def _store_certificate(node: Node, raw: bytes, block_raw: bytes) -> None:
    """A new era's certificate sent with its first block: stored only once it is checked
    (signatures, chain, and that it continues from our head into the block's era), since a
    stored certificate decides the era the next block must carry."""
    signed = _refusal(node, raw)
    if isinstance(signed, tuple):
        raise ProtocolError(signed[0], reason="bad_certificate")
    c, head = signed.certificate, node.head
    era = Block.decode_block(block_raw).header.era
    if (c.era, c.to_height, c.to_block_hash) != (era, head.height, head.hash):
        raise ProtocolError(f"the certificate of era {c.era} sent with block {head.height + 1} "
                            f"does not continue from our head into that block's era",
                            reason="bad_certificate")
    key = schema.fork_key(c.era)
    if node.store.db.get(key) is None:
        node.store.commit_writes([(key, raw)])


def producer_rpc_url(advertised: str, peer_host: str) -> str:
    """The producer's RPC URL as this follower can reach it: an unspecified listen host
    (``0.0.0.0``, ``::``) is replaced by the host we reached its peer port on; "" if it gave
    none or something that is not ``http://HOST:PORT``."""
    try:
        host, port = parse_rpc_url(advertised, "hello.rpc")
    except ConfigError:
        return ""
    if host in ("0.0.0.0", "::", ""):
        host = peer_host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _session(node: Node, fs: FramedStream, state: FollowerState, peer_host: str
                   ) -> bool:
    """One connection's life; True to reconnect at once (after a rollback)."""
    with trio.fail_after(node.cfg.p2p.handshake_timeout_ms / 1000):
        await fs.send(own_hello(node))
        hello = await fs.receive()
        if isinstance(hello, ErrorMsg):
            raise ProtocolError(f"refused by the peer: {hello.message}", reason=hello.reason)
        if not isinstance(hello, Hello):
            raise ProtocolError("the first frame must be hello")
        check_hello(hello, node.params.chain_id, node.genesis.hash)
        head = node.head
        await fs.send(Subscribe(head.height, head.hash, head.era))
    state.connected, state.last_error = True, ""
    state.peer_height, state.peer_era = hello.height, hello.era
    if not node.cfg.p2p.producer_rpc and hello.rpc:
        state.producer_rpc = producer_rpc_url(hello.rpc, peer_host) or state.producer_rpc
    log.info("following %s (%s at height %d) from height %d", state.peer, hello.role,
             hello.height, node.head.height)
    while True:
        with trio.fail_after(LIVENESS_S):
            msg = await fs.receive()
        if isinstance(msg, StatusMsg):
            state.peer_height, state.peer_era = msg.height, msg.era
            state.producer_halt = ({"reason": msg.halt_reason, "by": msg.halt_by,
                                    "since_ms": str(msg.halt_since_ms)} if msg.halted else None)
        elif isinstance(msg, BlockMsg):
            state.peer_height = max(state.peer_height, msg.height)
            if diverged(node) and not (msg.certificate and msg.height == node.head.height + 1):
                continue  # halted: keep listening for the certificate that lifts it
            if msg.height != node.head.height + 1:
                raise ProtocolError(f"block {msg.height} sent, expected {node.head.height + 1}")
            if msg.certificate:
                await trio.to_thread.run_sync(_store_certificate, node, msg.certificate,
                                              msg.block)
                halt = node.halted
                if diverged(node):
                    assert halt is not None
                    if halt.at_height <= node.head.height:
                        continue  # (the halt is not about the blocks this era abandons)
                    # A new era continues from our head, below the divergence: the block we
                    # could not reproduce was abandoned by a rollback we hold nothing of
                    # (we never imported it), so there is nothing to roll back.
                    node.chain.resume()
                    log.warning("era %d continues from our head %d, below the divergence at "
                                "%d: halt lifted", Block.decode_block(msg.block).header.era,
                                node.head.height, halt.at_height)
            try:
                new = await trio.to_thread.run_sync(import_block, node.store, msg.block)
            except InvalidBlock as e:
                if e.reason in ("state_root", "results_root", "tx_root", "invariant"):
                    _divergence(node, msg.block, e)
                    continue
                raise ProtocolError(f"block {msg.height} refused: {e}",
                                    reason="invalid_block") from e
            node.chain.advance(new)
            node.metrics.height.set(new.height)
            state.blocks_imported += 1
            if new.height >= state.peer_height:  # live, not catching up: a latency
                state.latencies_ms.append(max(0, wall_ms() - new.time))
        elif isinstance(msg, ForkMsg):
            applied = await trio.to_thread.run_sync(_apply_fork, node, msg.certificates)
            if applied:
                state.rollbacks += 1
            return applied
        elif isinstance(msg, ErrorMsg):
            raise ProtocolError(f"peer closed: {msg.message}", reason=msg.reason)
        else:
            raise ProtocolError(f"unexpected {type(msg).__name__}")


async def follow(node: Node, peer: str, state: FollowerState) -> None:
    """Follow ``peer`` until cancelled, reconnecting with backoff (0.2 s doubling to 5 s;
    back to 0.2 s after a good session: one that imported a block or stayed up
    :data:`HEALTHY_S`, so one blip on a good link costs 0.2 s, while a peer that breaks
    every session at once is retried slowly)."""
    host, port = parse_peer(peer)
    backoff = 0.2
    while True:
        again = False
        began, imported = trio.current_time(), state.blocks_imported
        try:
            with trio.fail_after(node.cfg.p2p.handshake_timeout_ms / 1000):
                stream = await trio.open_tcp_stream(host, port)
            async with stream:
                again = await _session(node, FramedStream(stream), state, host)
            backoff = 0.2
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                trio.TooSlowError, ChainError, StoreError) as e:
            # (ChainError: ProtocolError and whatever else a peer's bytes can make our
            # checks raise; StoreError: our own store refusing, e.g. a rollback without
            # undo records. Neither may stop the node: log, reconnect.)
            why = str(e) or ("no frame within the liveness or handshake timeout"
                             if isinstance(e, trio.TooSlowError) else type(e).__name__)
            if why != state.last_error:
                log.warning("peer %s: %s; reconnecting", peer, why)
            state.last_error = why
            if state.connected and (state.blocks_imported > imported
                                    or trio.current_time() - began >= HEALTHY_S):
                backoff = 0.2
        state.connected = False
        if not again:
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
