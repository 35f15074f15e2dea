"""What a block does after its transactions: the end-of-block steps, in a fixed order.

Each step is a function ``(view, ctx) -> list[Event]`` run over the block's overlay after the
last transaction. Their events are the block's own results (not any transaction's): they are
stored after the transactions' results and committed by ``results_root`` as one extra leaf
(docs/PROTOCOL.md). The order is part of the protocol: funding first (it moves the index that
every later step settles against), then triggered take-profit/stop-loss orders, then
liquidations (they see the block's final prices, indices and positions).
"""

from __future__ import annotations

from collections.abc import Callable

from chain.block import Event
from state.context import TxContext
from state.exchange.funding_payments import process_funding
from state.exchange.liquidation import process_liquidations
from state.exchange.triggers import process_triggers
from state.overlay import Overlay

Step = Callable[[Overlay, TxContext], list[Event]]


def steps() -> list[Step]:
    """The end-of-block steps in protocol order (looked up at each call, so a test can
    replace one with a faulty version)."""
    return [process_funding, process_triggers, process_liquidations]


def end_block(view: Overlay, ctx: TxContext) -> list[Event]:
    """Run every end-of-block step; their events in order."""
    events: list[Event] = []
    for step in steps():
        events.extend(step(view, ctx))
    return events
