"""What a transaction handler may know besides the state: the chain's parameters, the block's
height and clock, the transaction's place in the block, and the block's running counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from state.params import ChainParams


@dataclass(slots=True)
class TxContext:
    """What a handler may know besides state: the chain's params, the block's height and
    clock, and the transaction's position in the block (set per transaction)."""

    params: ChainParams
    height: int
    time: int
    tx_index: int = 0
    deposited: int = 0
    """Settlement units that entered the chain in this block (successful deposits)."""
    withdrawn: int = 0
    """Settlement units that left the chain in this block (successful withdrawals)."""
    margin_touched: set[bytes] = field(default_factory=set)
    """Accounts holding positions whose collateral a successful transaction lowered without
    writing a position (withdraw, transfer out): the liquidation step refreshes their entry
    in the at-risk index (positions written by fills are found from the block's writes)."""
