"""What a follower knows of its producer and its link to it (shown in ``status``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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

    def to_obj(self, height: int) -> dict[str, Any]:
        return {"peer": self.peer, "connected": self.connected,
                "peer_height": str(self.peer_height), "peer_era": str(self.peer_era),
                "lag_blocks": str(max(0, self.peer_height - height)),
                "producer_halt": self.producer_halt, "last_error": self.last_error,
                "blocks_imported": str(self.blocks_imported), "rollbacks": str(self.rollbacks)}
