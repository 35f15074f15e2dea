"""Transactions: a signed envelope (chain id, sender, nonce, type, payload, signature).

The envelope carries the chain id in the clear so that a node can tell "meant for another
chain" apart from "forged" and say so; the signature also covers it (via the domain tag and
chain id in :func:`chain.crypto.signing_bytes`), so it cannot be edited.

The sender *is* the ed25519 public key (32 bytes): no key-to-address hashing, so a verifier
needs nothing but the transaction to check its signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import msgpack

from chain.admin import AdminEnvelope
from chain.codec import (
    CHAIN_ID_MAX,
    U64,
    Bytes32,
    ChainId,
    Length,
    Struct,
    Value,
    encode,
    unpack_canonical,
)
from chain.crypto import TAG_TX, PrivateKey, sha256, signing_bytes, verify
from chain.errors import DecodeError, InvalidTransaction

MAX_TX_BYTES = 64 * 1024

Address = Bytes32
TypeName = Annotated[str, Length(1, 32)]


class Payload(Struct):
    """Base of every transaction payload; ``TYPE`` is the envelope's ``type`` string."""

    __slots__ = ()
    TYPE: ClassVar[str] = ""

    def check(self, sender: bytes) -> None:
        """Stateless validity beyond field types; raise ``InvalidTransaction``."""


@dataclass(frozen=True, slots=True)
class Transfer(Payload):
    """Move settlement-asset units from the sender to ``to``."""

    TYPE: ClassVar[str] = "transfer"
    to: Address
    """Recipient address (public key)."""
    amount: U64
    """Amount in base units (see docs/PROTOCOL.md for the scale); must be positive."""

    def check(self, sender: bytes) -> None:
        if self.amount == 0:
            raise InvalidTransaction("transfer amount must be positive", reason="zero_amount")


@dataclass(frozen=True, slots=True)
class Deposit(Payload):
    """Credit ``to`` with new units; only the genesis faucet key may send it.

    Stands in for a bridge: the one way settlement units enter the chain.
    """

    TYPE: ClassVar[str] = "deposit"
    to: Address
    """Credited address."""
    amount: U64
    """Amount in base units; must be positive."""

    def check(self, sender: bytes) -> None:
        if self.amount == 0:
            raise InvalidTransaction("deposit amount must be positive", reason="zero_amount")


@dataclass(frozen=True, slots=True)
class Withdraw(Payload):
    """Take ``amount`` units of the sender's collateral off the chain.

    Stands in for a bridge's exit: the one way settlement units leave the chain. Refused if
    the balance is short or the account would be left below its initial margin.
    """

    TYPE: ClassVar[str] = "withdraw"
    amount: U64
    """Amount in base units; must be positive."""

    def check(self, sender: bytes) -> None:
        if self.amount == 0:
            raise InvalidTransaction("withdraw amount must be positive", reason="zero_amount")


MarketSymbol = Annotated[str, Length(1, 32)]


@dataclass(frozen=True, slots=True)
class OraclePrice(Payload):
    """An oracle's price observation for one market; only genesis oracle keys may send it."""

    TYPE: ClassVar[str] = "oracle_price"
    market: MarketSymbol
    """Market symbol, e.g. ``BTC-USD-PERP``."""
    price: U64
    """Price in micro-USDC per whole base unit; must be positive."""
    time: U64
    """When the oracle observed the price (ms since the epoch); must be later than the
    market's last accepted observation, not after the block time, and no older than the
    market's ``oracle_max_age_ms``."""

    def check(self, sender: bytes) -> None:
        if self.price == 0:
            raise InvalidTransaction("oracle price must be positive", reason="zero_price")


ORDER_SIDES = ("buy", "sell")
ORDER_KINDS = ("limit", "market", "take_profit", "stop_loss")
ORDER_TIFS = ("gtc", "post_only", "ioc")
TRIGGER_KINDS = ("take_profit", "stop_loss")


@dataclass(frozen=True, slots=True)
class PlaceOrder(Payload):
    """Place an order on a market's book; matching happens in the state machine."""

    TYPE: ClassVar[str] = "order"
    market: MarketSymbol
    side: Annotated[str, Length(3, 4)]
    """``buy`` or ``sell``."""
    kind: Annotated[str, Length(1, 16)]
    """``limit``, ``market``, or ``take_profit`` / ``stop_loss`` (reduce-only orders that wait
    for the oracle price to reach ``trigger_price``, then execute like a market order)."""
    tif: Annotated[str, Length(1, 16)]
    """Time in force: ``gtc`` (rest the remainder), ``post_only`` (refused if it would
    trade), ``ioc`` (cancel the remainder). Market orders must be ``ioc``."""
    price: U64
    """Limit price; for a market order (and a triggered take-profit / stop-loss) the worst
    price it may trade at (> 0)."""
    size: U64
    """Size in 10^-8 base units (> 0, a multiple of the market's step)."""
    reduce_only: bool
    """Only ever shrink the sender's position (the size is capped at the position)."""
    trigger_price: U64
    """For take-profit / stop-loss: the oracle price that triggers it; 0 otherwise."""

    def check(self, sender: bytes) -> None:
        if self.side not in ORDER_SIDES:
            raise InvalidTransaction(f"side must be one of {ORDER_SIDES}", reason="bad_side")
        if self.kind not in ORDER_KINDS:
            raise InvalidTransaction(f"kind must be one of {ORDER_KINDS}", reason="bad_kind")
        if self.tif not in ORDER_TIFS:
            raise InvalidTransaction(f"tif must be one of {ORDER_TIFS}", reason="bad_tif")
        if self.size == 0:
            raise InvalidTransaction("order size must be positive", reason="zero_size")
        if self.price == 0:
            raise InvalidTransaction("order price must be positive", reason="zero_price")
        if self.kind == "market" and self.tif != "ioc":
            raise InvalidTransaction("a market order must be ioc", reason="bad_tif")
        if (self.kind in TRIGGER_KINDS) != (self.trigger_price > 0):
            raise InvalidTransaction("trigger_price is for take-profit/stop-loss orders only",
                                     reason="bad_trigger")
        if self.kind in TRIGGER_KINDS and self.tif != "ioc":
            raise InvalidTransaction("a take-profit/stop-loss order must be ioc",
                                     reason="bad_tif")


@dataclass(frozen=True, slots=True)
class CancelOrder(Payload):
    """Cancel one of the sender's open orders."""

    TYPE: ClassVar[str] = "cancel"
    market: MarketSymbol
    order_id: U64


@dataclass(frozen=True, slots=True)
class CancelAll(Payload):
    """Cancel every open order of the sender (in one market, or everywhere if empty)."""

    TYPE: ClassVar[str] = "cancel_all"
    market: Annotated[str, Length(0, 32)]


OPERATOR_COMMANDS = ("cancel_orders", "market_mode", "compensate")
MAX_ENVELOPE_BYTES = 60_000


@dataclass(frozen=True, slots=True)
class OperatorCall(Payload):
    """An operator command the state machine executes (selective order cancellation, market
    modes, compensation payments). ``envelope`` is a canonical ``AdminEnvelope``
    (chain/admin.py) that at least the genesis threshold of operators signed; the
    transaction's own sender must be a genesis operator too
    (state/exchange/operator_commands.py)."""

    TYPE: ClassVar[str] = "operator"
    envelope: Annotated[bytes, Length(1, MAX_ENVELOPE_BYTES)]

    def check(self, sender: bytes) -> None:
        try:
            env = AdminEnvelope.decode(self.envelope)
        except DecodeError as e:
            raise InvalidTransaction(f"operator envelope does not decode: {e.message}",
                                     reason="bad_envelope") from e
        if env.command.command not in OPERATOR_COMMANDS:
            raise InvalidTransaction(f"command must be one of {OPERATOR_COMMANDS}",
                                     reason="bad_command")


PAYLOAD_TYPES: dict[str, type[Payload]] = {}


def register_payload(cls: type[Payload]) -> type[Payload]:
    """Make a payload type decodable by its ``TYPE`` name."""
    if not cls.TYPE or cls.TYPE in PAYLOAD_TYPES:
        raise ValueError(f"bad or duplicate payload type {cls.TYPE!r}")
    PAYLOAD_TYPES[cls.TYPE] = cls
    return cls


register_payload(Transfer)
register_payload(Deposit)
register_payload(OraclePrice)
register_payload(PlaceOrder)
register_payload(CancelOrder)
register_payload(CancelAll)
register_payload(Withdraw)
register_payload(OperatorCall)


@dataclass(frozen=True, slots=True)
class UnsignedTx(Struct):
    """The signed part of a transaction (everything but the signature)."""

    chain_id: ChainId
    sender: Address
    nonce: U64
    type: TypeName
    payload: dict[str, Any]


@dataclass(frozen=True)
class Transaction:
    """A decoded, well-formed transaction. Signature validity is checked separately.

    Kept outside :class:`Struct` because its payload is typed by the ``type`` field, which a
    field annotation cannot express.
    """

    chain_id: str
    sender: bytes
    nonce: int
    payload: Payload
    sig: bytes
    raw: bytes
    """The exact canonical bytes this transaction was decoded from (or encoded to)."""

    @property
    def type(self) -> str:
        return self.payload.TYPE

    @property
    def hash(self) -> bytes:
        """SHA-256 of the canonical bytes; the transaction's identity everywhere."""
        h = self.__dict__.get("_hash")
        if h is None:
            h = sha256(self.raw)
            object.__setattr__(self, "_hash", h)
        return h

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers (see :func:`chain.crypto.signing_bytes`).

        Derived from the canonical envelope by cutting out its ``sig`` entry: the envelope
        without ``sig`` *is* the canonical encoding of the signed body, so no re-encoding is
        needed. Falls back to encoding the body if the layout is not the expected one.
        """
        raw = self.raw
        entry = _SIG_KEY + self.sig
        end = len(raw) - len(_TYPE_KEY) - len(msgpack.packb(self.type))
        start = end - len(entry)
        if raw[0] == 0x86 and raw[start:end] == entry:
            body = b"\x85" + raw[1:start] + raw[end:]
        else:  # pragma: no cover - not reachable for canonically decoded envelopes
            body = encode(_unsigned_obj(self.chain_id, self.sender, self.nonce, self.payload))
        return b"".join((TAG_TX, b"\x00\x82", _CHAIN_ID_KEY, msgpack.packb(self.chain_id),
                         _MSG_KEY, body))

    def verify_signature(self) -> None:
        """Raise ``InvalidSignature`` unless the sender signed exactly this transaction."""
        verify(self.sender, self.sig, self.signed_bytes())


def _unsigned_obj(chain_id: str, sender: bytes, nonce: int, payload: Payload) -> Value:
    return {
        "chain_id": chain_id,
        "nonce": nonce,
        "payload": payload.to_obj(),
        "sender": sender,
        "type": payload.TYPE,
    }


_SIG_KEY = msgpack.packb("sig") + b"\xc4\x40"
_TYPE_KEY = msgpack.packb("type")
_CHAIN_ID_KEY = msgpack.packb("chain_id")
_MSG_KEY = msgpack.packb("msg")
_ENVELOPE_FIELDS = ("chain_id", "nonce", "payload", "sender", "sig", "type")

def make_tx(key: PrivateKey, chain_id: str, nonce: int, payload: Payload) -> Transaction:
    """Sign ``payload`` as ``key`` and return the transaction with its canonical bytes."""
    payload.check(key.public_key)
    if not 1 <= len(chain_id) <= CHAIN_ID_MAX:
        raise InvalidTransaction(f"chain id must be 1-{CHAIN_ID_MAX} characters",
                                 reason="bad_chain_id")
    sender = key.public_key
    body = _unsigned_obj(chain_id, sender, nonce, payload)
    sig = key.sign(signing_bytes(TAG_TX, chain_id, body))
    obj = dict(body)
    obj["sig"] = sig
    raw = encode(obj)
    return Transaction(chain_id, sender, nonce, payload, sig, raw)


def decode_tx(data: bytes) -> Transaction:
    """Strictly decode a transaction envelope and its typed payload (no signature check)."""
    obj = unpack_canonical(data, MAX_TX_BYTES)
    if type(obj) is not dict:
        raise DecodeError("transaction must be a map", reason="bad_type")
    if tuple(obj) != _ENVELOPE_FIELDS:
        if any(type(k) is not str for k in obj):
            raise DecodeError("transaction has a map key that is not a string", reason="bad_type")
        extra = sorted(set(obj) - set(_ENVELOPE_FIELDS))
        if extra:
            raise DecodeError(f"transaction has unknown field(s) {extra}", reason="unknown_field")
        missing = sorted(set(_ENVELOPE_FIELDS) - set(obj))
        if missing:
            raise DecodeError(f"transaction is missing field(s) {missing}",
                              reason="missing_field")
        raise DecodeError("transaction fields are not in canonical order",
                          reason="non_canonical")
    sig = obj["sig"]
    if type(sig) is not bytes:
        raise DecodeError("field 'sig' must be bytes", reason="bad_type")
    if len(sig) != 64:
        raise DecodeError("field 'sig' must be 64 bytes", reason="out_of_range")
    unsigned = UnsignedTx.from_obj({k: v for k, v in obj.items() if k != "sig"}, "transaction")
    cls = PAYLOAD_TYPES.get(unsigned.type)
    if cls is None:
        raise DecodeError(f"unknown transaction type {unsigned.type!r}", reason="unknown_type")
    payload = cls.from_obj(unsigned.payload, context=f"{unsigned.type} payload")
    return Transaction(unsigned.chain_id, unsigned.sender, unsigned.nonce, payload, sig, data)
