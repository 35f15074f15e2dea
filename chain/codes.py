"""Transaction result codes: stable numbers recorded in every block's results.

They are part of the wire format (``results_root`` commits to them): never renumber one.
"""

from __future__ import annotations

from enum import IntEnum


class ResultCode(IntEnum):
    """``TxResult.code``: 0 is success, anything else names why the transaction had no effect.

    A transaction that fails still consumes its nonce: it was included, and including it again
    must not be possible.
    """

    OK = 0
    INVALID_PAYLOAD = 1
    """The payload fails a stateless rule (for example a zero amount)."""
    UNAUTHORIZED = 2
    """The sender may not send this type (for example a deposit not from the faucet)."""
    INSUFFICIENT_FUNDS = 3
    """The sender's balance does not cover the amount."""
    OVERFLOW = 4
    """The result would exceed an integer bound (a balance above 2**64-1)."""
    UNKNOWN_MARKET = 5
    """No market with that symbol exists."""
    STALE_PRICE = 6
    """An oracle observation not later than the last accepted one, or older than the
    market's ``oracle_max_age_ms`` at block time."""
    FUTURE_PRICE = 7
    """An oracle observation time after the block time."""
    INVALID_PRICE = 8
    """An order price that is not a multiple of the market's tick size."""
    INVALID_SIZE = 9
    """An order size that is not a multiple of the market's step size."""
    POST_ONLY_WOULD_CROSS = 10
    """A post-only order that would have traded."""
    REDUCE_ONLY_WOULD_INCREASE = 11
    """A reduce-only order with no opposite position to reduce."""
    INSUFFICIENT_MARGIN = 12
    """The account's equity would fall below the initial margin its positions need."""
    ORDER_NOT_FOUND = 13
    """No open order with that id belongs to the sender in that market."""
    MARKET_CLOSED = 14
    """The market's mode refuses this action (paused, cancel-only, post-only)."""
