"""Orders and the per-market order book: price-time priority, matching inside the state machine.

**Order identity.** An order is named by its owner and the nonce of the ``order``
transaction that placed it: ``(owner, id)`` with ``id = nonce``. The owner knows it before
signing, it is unique by construction (a nonce is consumed once), and it does not depend on
where a block put the transaction: after a rollback and replay, the replayed order has the
same id, so a ``cancel`` its owner signed on the abandoned fork still names it.

**Time priority** comes from the order's ``arrival``: ``height * 2^20 + index of its
transaction in the block`` on the chain that holds it. It orders the book and is never used
to name an order.

Storage (all under the state keyspace, so every write is in the block's batch, undo record
and state root):

* ``ord/`` + owner(32) + id(8)              -> :class:`Order` (resting or conditional)
* ``book/`` + symbol + ``/`` + side(1) + pricekey(8) + arrival(8) + owner(32) + id(8) -> b"":
  the book index. Side ``b`` (bids) uses ``pricekey = 2^64-1-price`` and side ``a`` (asks)
  ``price``, both big-endian, so iterating either side in key order visits the best price
  first and, at one price, the earliest arrival first. The trailing owner and id name the
  order (``ord/`` + the key's last 40 bytes).
* ``trig/`` + symbol + ``/`` + dir(1) + pricekey(8) + arrival(8) + owner(32) + id(8) -> b"":
  the trigger index of take-profit / stop-loss orders (they never sit on ``book/``).
  Direction ``u`` fires when the oracle price is >= the trigger (a sell take-profit, a buy
  stop-loss) and uses ``pricekey = trigger``; ``d`` fires when the oracle is <= the trigger (a
  buy take-profit, a sell stop-loss) and uses ``pricekey = 2^64-1-trigger``. Either way the
  triggered orders are a prefix of the key order (nearest trigger first, earliest first at
  one trigger).
* ``aord/`` + owner(32) + id(8)             -> b"" : an account's open orders (cancel-all),
  conditional ones included, in id (nonce) order.

Matching: a taker walks the opposite side from the best price while it crosses its limit
(for a market order: its worst acceptable price). Each fill trades at the maker's price. An
order never fills against its own account: the resting order is cancelled instead
(cancel-resting self-trade prevention).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from state.records import ORDER, Order, order_key
from state.state_view import StateView

BOOK = b"book/"


TRIGGER = b"trig/"


ACCOUNT_ORDERS = b"aord/"


U64_MAX = 2**64 - 1


ARRIVAL_TX_BITS = 20


REF_BYTES = 40
"""An index key's trailing owner(32) + id(8): the ``ord/`` key suffix of its order."""


_U64 = struct.Struct(">Q")


SIDES = ("buy", "sell")


KINDS = ("limit", "market", "take_profit", "stop_loss")


TRIGGER_KINDS = ("take_profit", "stop_loss")


DIRECTIONS = ("u", "d")


TIFS = ("gtc", "post_only", "ioc")


def arrival(height: int, tx_index: int) -> int:
    """The time priority of an order placed by transaction ``tx_index`` of block ``height``."""
    return (height << ARRIVAL_TX_BITS) | tx_index


def book_prefix(market: str, side: str) -> bytes:
    """Key prefix of the side of the book a resting ``side`` order sits on."""
    return BOOK + market.encode() + (b"/b" if side == "buy" else b"/a")


def book_key(o: Order) -> bytes:
    pricekey = U64_MAX - o.price if o.side == "buy" else o.price
    return book_prefix(o.market, o.side) + _U64.pack(pricekey) + _U64.pack(o.arrival) + \
        o.ref()


def price_from_book_key(key: bytes, side: str) -> int:
    pk = _U64.unpack(key[-16 - REF_BYTES:-8 - REF_BYTES])[0]
    return int(U64_MAX - pk if side == "buy" else pk)


def order_key_of_index(key: bytes) -> bytes:
    """The ``ord/`` key of the order a ``book/`` or ``trig/`` key points at."""
    return ORDER + key[-REF_BYTES:]


def trigger_direction(side: str, kind: str) -> str:
    """``u`` (fires when oracle >= trigger) or ``d`` (fires when oracle <= trigger)."""
    return "u" if (side == "sell") == (kind == "take_profit") else "d"


def trigger_prefix(market: str, direction: str) -> bytes:
    return TRIGGER + market.encode() + b"/" + direction.encode()


def trigger_key(o: Order) -> bytes:
    d = trigger_direction(o.side, o.kind)
    pricekey = o.trigger_price if d == "u" else U64_MAX - o.trigger_price
    return trigger_prefix(o.market, d) + _U64.pack(pricekey) + _U64.pack(o.arrival) + o.ref()


def trigger_from_key(key: bytes, direction: str) -> int:
    pk = _U64.unpack(key[-16 - REF_BYTES:-8 - REF_BYTES])[0]
    return int(pk if direction == "u" else U64_MAX - pk)


def is_triggered(direction: str, trigger: int, oracle: int) -> bool:
    """Integer comparison, inclusive: exactly at the trigger fires, one unit short does not."""
    return oracle >= trigger if direction == "u" else oracle <= trigger


def index_key(o: Order) -> bytes:
    """The order's ordered-index key: ``trig/`` for a take-profit / stop-loss, else ``book/``."""
    return trigger_key(o) if o.kind in TRIGGER_KINDS else book_key(o)


def account_order_key(owner: bytes, oid: int) -> bytes:
    return ACCOUNT_ORDERS + owner + _U64.pack(oid)


def get_order(view: StateView, owner: bytes, oid: int) -> Order | None:
    return view.get_obj(order_key(owner, oid), Order)


def rest(view: StateView, o: Order) -> None:
    """Put an order on the book, or a take-profit / stop-loss on the trigger index (or update
    its remaining size in place)."""
    view.put_obj(order_key(o.owner, o.id), o)
    view.put(index_key(o), b"")
    view.put(account_order_key(o.owner, o.id), b"")


def remove(view: StateView, o: Order) -> None:
    """Take an order off the book (or the trigger index) entirely: filled, triggered or
    cancelled."""
    view.delete(order_key(o.owner, o.id))
    view.delete(index_key(o))
    view.delete(account_order_key(o.owner, o.id))


def best_orders(view: StateView, market: str, side: str) -> Iterator[Order]:
    """Resting orders on ``side`` of ``market``, best price first, oldest first at a price.

    Reads the book afresh each step, so the caller may fill or remove the order it was given
    before asking for the next one.
    """
    get_obj = view.get_obj
    for key in view.walk_ordered(book_prefix(market, side)):  # one DB iterator per walk
        o = get_obj(ORDER + key[-REF_BYTES:], Order)
        if o is not None:
            yield o


def account_orders(view: StateView, owner: bytes) -> list[Order]:
    """Every open order of ``owner`` in id order."""
    out = []
    for k in view.iter_ordered(ACCOUNT_ORDERS + owner):
        o = get_order(view, owner, int(_U64.unpack(k[-8:])[0]))
        if o is not None:
            out.append(o)
    return out
