"""What a follower knows of its producer and its link to it (shown in ``status``)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

LATENCY_WINDOW = 10_000


@dataclass
class FollowerState:
    """What ``status`` shows of the follower (``follower`` section)."""

    peer: str
    connected: bool = False
    peer_height: int = 0
    peer_era: int = 0
    producer_halt: dict[str, Any] | None = None
    last_error: str = ""
    blocks_imported: int = 0
    rollbacks: int = 0
    latencies_ms: deque[int] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    """Per block imported live (the producer's newest when it came, not during catch-up):
    our commit time minus the block's header time (the producer's clock when it started
    the block), for the last blocks; meaningful only with synchronised clocks."""

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
                "latency_ms": self.latency()}
