"""What an operator command runs over: the node, its store, and the operators who signed
the command. Commands are plain functions ``(ctx, args, operators) -> result`` over this
context (node/ops/control.py, snapshots.py, recovery.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.node import Node
from state.store import Store


@dataclass(frozen=True)
class OpsContext:
    """The node an operator command acts on."""

    node: Node

    @property
    def store(self) -> Store:
        return self.node.store

    @staticmethod
    def by(operators: list[bytes]) -> str:
        """How halt records and pins name the operators who signed a command."""
        return "operators:" + ",".join(o.hex() for o in operators)

    def snapshot_path(self, label: str) -> Path:
        """Where the node keeps the snapshot file of pin ``label``."""
        return Path(self.node.home.data_dir) / "snapshots" / f"{label}.snap"


Command = Callable[[OpsContext, dict[str, str], list[bytes]], Awaitable[dict[str, Any]]]
"""An operator command: its arguments as given, and the operator keys that signed it."""
