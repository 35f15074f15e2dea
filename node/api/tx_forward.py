"""A follower's ``broadcast_tx_*``: forwarded to the producer, answered with its answer.

A follower cannot include transactions, and a follower that queued them would lose them; it
sends each one to the producer's JSON-RPC (``status.follower.producer_rpc``: learnt from the
producer's ``hello`` or set by ``p2p.producer_rpc``) and answers with exactly what the
producer answered, its errors (codes, messages, ``data``) included. ``broadcast_tx_commit``
additionally waits (at most the follower's own commit timeout) until the follower has
imported the block the producer named, so a client that reads from the same follower next
finds its transaction there. The producer cannot be reached: 1017 ``producer_unreachable``,
saying whether the transaction was sent (then its outcome is unknown: look its hash up).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from chain.crypto import sha256
from node.api.rpc_params import RPCError
from node.client.rpc_client import NodeUnreachable, RPCCallError
from node.follower_state import FollowerState
from node.node import Node
from node.wire_json import b64

log = logging.getLogger("appchain.forward")

FOLLOWER = 1016
"""A follower that does not know its producer's RPC yet (never connected, or the producer
gave none and ``p2p.producer_rpc`` is not set): nothing was forwarded."""

PRODUCER_UNREACHABLE = 1017
"""The follower forwarded (or tried to) but got no answer from the producer."""

SYNC_TIMEOUT_S = 10.0
"""How long a forwarded ``broadcast_tx_sync`` (or batch) may take at the producer."""

COMMIT_MARGIN_S = 5.0
"""Added to the commit timeout: the producer answers 1020 at its own timeout, and that
answer (not ours) is what the client should get."""


def _state(node: Node) -> FollowerState:
    st = node.follower
    assert st is not None
    if not st.producer_rpc:
        raise RPCError(FOLLOWER, f"this node follows the producer at {st.peer} and does not "
                       "know its RPC address yet (not connected, or the producer sent none and "
                       "p2p.producer_rpc is not set): nothing was forwarded",
                       {"reason": "follower", "peer": st.peer})
    return st


def _unreachable(st: FollowerState, raws: list[bytes], e: NodeUnreachable) -> RPCError:
    st.forward_failures += 1
    sent = not isinstance(e.__cause__, httpx.ConnectError | httpx.ConnectTimeout)
    hashes = [sha256(r).hex() for r in raws]
    what = ("the transaction was sent but no answer came: it may or may not have been "
            "accepted; look its hash up with `tx`" if sent else "nothing was forwarded")
    log.warning("forwarding to the producer at %s failed: %s", st.producer_rpc, e)
    return RPCError(PRODUCER_UNREACHABLE, f"cannot reach the producer at {st.producer_rpc}: "
                    f"{what}", {"reason": "producer_unreachable", "producer_rpc": st.producer_rpc,
                                "sent": sent, "hash": hashes[0] if len(hashes) == 1 else hashes})


def _refused(e: RPCCallError) -> RPCError:
    return RPCError(e.code, e.message, e.data)


async def _forward(node: Node, method: str, raw: bytes, timeout_s: float) -> Any:
    """One transaction to the producer: its result, or its error as ours."""
    st = _state(node)
    try:
        result = await st.producer_client(SYNC_TIMEOUT_S).call(method, timeout_s=timeout_s,
                                                               tx=b64(raw))
    except RPCCallError as e:
        st.txs_forwarded += 1
        raise _refused(e) from None
    except NodeUnreachable as e:
        raise _unreachable(st, [raw], e) from None
    st.txs_forwarded += 1
    return result


async def forward_sync(node: Node, raw: bytes) -> Any:
    return await _forward(node, "broadcast_tx_sync", raw, SYNC_TIMEOUT_S)


async def forward_commit(node: Node, raw: bytes) -> Any:
    timeout = node.cfg.rpc.timeout_broadcast_tx_commit_ms / 1000
    result = await _forward(node, "broadcast_tx_commit", raw, timeout + COMMIT_MARGIN_S)
    height = _height_of(result)
    watch = node.head_watch
    if height is not None and watch is not None:
        # Read-your-writes on this node: answer once our copy of the block is here too.
        if not await watch.until(lambda: node.head.height >= height, timeout):
            log.info("forwarded tx committed at %d on the producer; this follower is at %d",
                     height, node.head.height)
    return result


async def forward_batch(node: Node, raws: list[bytes]) -> list[Any | RPCError]:
    """The ``broadcast_tx_sync`` entries of one batch, as one batch to the producer."""
    st = _state(node)
    client = st.producer_client(SYNC_TIMEOUT_S)
    try:
        answers = await client.call_batch([("broadcast_tx_sync", {"tx": b64(r)}) for r in raws])
    except NodeUnreachable as e:
        err = _unreachable(st, raws, e)
        return [err] * len(raws)
    st.txs_forwarded += len(raws)
    return [_refused(a) if isinstance(a, RPCCallError) else a for a in answers]


def _height_of(result: Any) -> int | None:
    h = result.get("height") if isinstance(result, dict) else None
    return int(h) if isinstance(h, str) and h.isdigit() else None
