"""Positions: what a fill does to a position (pure integer arithmetic, exact cost basis) and
how positions are read and stored.

Why a cost basis instead of an entry price: an entry price would have to be rounded at every
fill, so PnL would drift and money could appear or vanish. The cost is a sum of the exact
integer amounts that changed hands, so for every fill between two accounts at one price,
``sum(collateral) - sum(cost)`` over all accounts is conserved exactly (fees aside, which
move to the fee collector), and a flat position always has cost exactly 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from state.exchange.funding import Settlement, settle
from state.overlay import Overlay
from state.records import POSITION, Position, position_key
from state.scales import PPM, SIZE_SCALE, div_ceil, div_trunc, sign


def trade_notional(quantity: int, price: int) -> int:
    """Micro-USDC exchanged for ``abs(quantity)`` at ``price``: ``abs(q) * price // 10^8``.

    Floors. Both sides of a fill use this same value, so the rounding direction cannot create
    or destroy money; flooring means a buyer never pays more than the exact price.
    """
    if price <= 0:
        raise ValueError(f"price must be positive, got {price}")
    return abs(quantity) * price // SIZE_SCALE


def fee_for(notional: int, fee_ppm: int) -> int:
    """Fee in micro-USDC on ``notional``: ``notional * fee_ppm / 10^6`` rounded UP."""
    if fee_ppm < 0:
        raise ValueError(f"fee must be >= 0 ppm, got {fee_ppm}")
    return div_ceil(notional * fee_ppm, PPM)


@dataclass(frozen=True, slots=True)
class FillOutcome:
    """What a fill does to one side: the new position and the collateral change.

    ``collateral_delta == realized_pnl_delta - fee``. Per account,
    ``collateral_delta - (new.cost - old.cost) == -sign(delta) * notional - fee``.
    """

    new_position: Position
    realized_pnl_delta: int
    """PnL realized by the closed part (0 when only increasing)."""
    collateral_delta: int
    """Add to the account's collateral."""
    notional: int
    """``trade_notional(delta, price)``: the same number for both sides of the fill."""
    fee: int
    """Fee paid (already subtracted in ``collateral_delta``)."""


def apply_fill(pos: Position, side_size_delta: int, price: int, fee_ppm: int = 0) -> FillOutcome:
    """Apply a fill of signed ``side_size_delta`` (buy > 0, sell < 0) at ``price``.

    Funding is not touched: settle it first (:func:`settle_funding`) so ``funding_index`` is
    current, which also makes it right for a position opened from flat.

    * Increasing (or opening): ``cost += sign(delta) * q`` where ``q = trade_notional``.
    * Reducing by ``closed``: ``portion = cost * closed / abs(size)`` rounded toward zero
      leaves the cost; ``realized = sign(size) * q_close - portion`` with
      ``q_close = trade_notional(closed, price)``. Closing everything removes exactly ``cost``.
    * Flipping: close all of it (``q_close`` as above), then open the rest for
      ``q - q_close``, so the two parts add up to exactly the fill's ``q``: the counterparty,
      who may not flip, uses the same total.
    """
    if side_size_delta == 0:
        raise ValueError("fill size must be non-zero")
    q = trade_notional(side_size_delta, price)
    fee = fee_for(q, fee_ppm)
    size, cost = pos.size, pos.cost
    d = sign(side_size_delta)
    if size == 0 or sign(size) == d:
        new_size, new_cost, realized = size + side_size_delta, cost + d * q, 0
    else:
        closed = min(abs(side_size_delta), abs(size))
        portion = div_trunc(cost * closed, abs(size))
        q_close = trade_notional(closed, price)
        realized = sign(size) * q_close - portion
        new_size, new_cost = size + side_size_delta, cost - portion
        if abs(side_size_delta) > abs(size):  # flipped: new_cost is 0 here (portion == cost)
            new_cost = d * (q - q_close)
    new = Position(new_size, new_cost, pos.funding_index, pos.realized_pnl + realized)
    return FillOutcome(new, realized, realized - fee, q, fee)


NO_SETTLEMENT = Settlement(0, 0)


def settle_funding(pos: Position, index_now: int) -> tuple[Position, Settlement]:
    """Settle ``pos``'s funding up to ``index_now``: the position re-stamped, and the payment.

    The caller adds ``collateral_delta`` to collateral and ``dust_scaled`` to the dust counter.
    A position already at ``index_now`` is returned as it is, with nothing to pay.
    """
    if pos.funding_index == index_now:
        return pos, NO_SETTLEMENT  # what settle() gives for an unchanged index
    return (Position(pos.size, pos.cost, index_now, pos.realized_pnl),
            settle(pos.size, pos.funding_index, index_now))


def get_position(view: Overlay, owner: bytes, market: str) -> Position | None:
    return view.get_obj(position_key(owner, market), Position)


def account_positions(view: Overlay, owner: bytes) -> Iterator[tuple[str, Position]]:
    prefix = POSITION + owner + b"/"
    for k in view.live_keys(prefix):
        pos = view.get_obj(k, Position)
        if pos is not None:
            yield k[len(prefix):].decode(), pos


def write_position(view: Overlay, owner: bytes, market: str, new: Position) -> None:
    """Store a position; a flat one with no realized PnL to keep is deleted."""
    if new.size == 0 and new.realized_pnl == 0:
        view.delete(position_key(owner, market))
    else:
        view.put_obj(position_key(owner, market), new)


def store_position(view: Overlay, owner: bytes, market: str, old: Position,
                   new: Position) -> tuple[int, int]:
    """Store a position; returns the change it makes to the market's (long, short) open
    interest."""
    write_position(view, owner, market, new)
    return (max(new.size, 0) - max(old.size, 0), max(-new.size, 0) - max(-old.size, 0))
