"""Reads the store cannot answer truthfully: a typed error, never a changed value.

Why a wrapper: any public method may meet a damaged store (LevelDB's checksum failed,
state/kv_level.py) or a state value that differs from the committed tree (changed outside
the blocks, state/checked_state.py). Both are the node's own failure, not the client's; the
answer is code :data:`STORE_FAILURE` with ``data.reason`` (``store_damaged``,
``stored_state``, ``corrupt_value``), and a ``stored_state`` value also halts the producer
(check ``stored_state``, the key in the evidence), so nothing is built on it either.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from node.api.rpc_params import STORE_FAILURE, RPCError
from node.node import Node
from state.checked_state import StoredValueMismatch
from state.store_errors import CorruptValue

log = logging.getLogger("appchain.rpc")

Handler = Callable[[Node, dict[str, Any]], Awaitable[Any]]


async def halt_on_stored_state(node: Node, e: StoredValueMismatch) -> None:
    """Halt production (once) naming the key whose stored value the tree does not hold."""
    async with node.producer.exclusive():  # an in-flight block finishes first
        if node.halted is None:
            node.chain.halt(f"a read met a stored value the state tree does not hold: "
                            f"{e.message}", "stored_state", e.evidence(), node.head.height,
                            by="node")


def guarded(handler: Handler) -> Handler:
    """``handler`` with the store's failures answered as typed errors (STORE_FAILURE)."""

    async def call(node: Node, params: dict[str, Any]) -> Any:
        try:
            return await handler(node, params)
        except StoredValueMismatch as e:
            await halt_on_stored_state(node, e)
            raise RPCError(STORE_FAILURE, e.message, {"reason": e.reason}) from e
        except CorruptValue as e:
            log.error("store failure answering %s: %s", handler.__name__, e.message)
            raise RPCError(STORE_FAILURE, e.message, {"reason": e.reason}) from e

    call.__name__ = handler.__name__
    return call
