"""What a follower knows of its producer and its links to it (shown in ``status``)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from node.client.rpc_client import AsyncRPCClient

LATENCY_WINDOW = 10_000


@dataclass
class FollowerState:
    """What ``status`` shows of the follower (``follower`` section), and the RPC client
    through which it forwards transactions to the producer."""

    peer: str
    connected: bool = False
    peer_height: int = 0
    peer_era: int = 0
    producer_halt: dict[str, Any] | None = None
    last_error: str = ""
    blocks_imported: int = 0
    rollbacks: int = 0
    producer_rpc: str = ""
    """Where ``broadcast_tx_*`` is forwarded: ``p2p.producer_rpc``, else learnt from the
    producer's ``hello``; empty until known."""
    txs_forwarded: int = 0
    forward_failures: int = 0
    """Forwards that got no answer from the producer (unreachable, timed out)."""
    latencies_ms: deque[int] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    """Per block imported live (the producer's newest when it came, not during catch-up):
    our commit time minus the block's header time (the producer's clock when it started
    the block), for the last blocks; meaningful only with synchronised clocks."""
    _client: AsyncRPCClient | None = field(default=None, repr=False)
    _stale: list[AsyncRPCClient] = field(default_factory=list, repr=False)

    def producer_client(self, timeout_s: float) -> AsyncRPCClient:
        """One pooled client per producer URL (a new URL after a reconnect replaces it)."""
        c = self._client
        if c is None or c.url != self.producer_rpc.rstrip("/") + "/":
            if c is not None:
                self._stale.append(c)
            c = self._client = AsyncRPCClient(self.producer_rpc, timeout=timeout_s)
        return c

    async def aclose(self) -> None:
        for c in [*self._stale, *([self._client] if self._client else [])]:
            await c.aclose()
        self._stale.clear()
        self._client = None

    def latency(self) -> dict[str, str] | None:
        if not self.latencies_ms:
            return None
        xs = sorted(self.latencies_ms)
        return {"p50": str(xs[len(xs) // 2]), "p99": str(xs[min(len(xs) - 1,
                                                                len(xs) * 99 // 100)]),
                "blocks": str(len(xs))}

    def to_obj(self, height: int) -> dict[str, Any]:
        return {"peer": self.peer, "connected": self.connected,
                "peer_height": str(self.peer_height), "peer_era": str(self.peer_era),
                "lag_blocks": str(max(0, self.peer_height - height)),
                "producer_halt": self.producer_halt, "last_error": self.last_error,
                "blocks_imported": str(self.blocks_imported), "rollbacks": str(self.rollbacks),
                "producer_rpc": self.producer_rpc or None,
                "txs_forwarded": str(self.txs_forwarded),
                "forward_failures": str(self.forward_failures),
                "latency_ms": self.latency()}
