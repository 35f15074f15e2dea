"""Transactions: a signed envelope (chain id, sender, nonce, type, payload, signature).

The envelope carries the chain id in the clear so that a node can tell "meant for another
chain" apart from "forged" and say so; the signature also covers it (via the domain tag and
chain id in :func:`chain.crypto.signing_bytes`), so it cannot be edited.

The sender *is* the ed25519 public key (32 bytes): no key-to-address hashing, so a verifier
needs nothing but the transaction to check its signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from chain.codec import U64, Bytes32, Struct, Text, Value, decode, encode
from chain.crypto import TAG_TX, PrivateKey, sha256, signing_bytes, verify
from chain.errors import DecodeError, InvalidTransaction

MAX_TX_BYTES = 64 * 1024
CHAIN_ID_MAX = 50

Address = Bytes32


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


PAYLOAD_TYPES: dict[str, type[Payload]] = {}


def register_payload(cls: type[Payload]) -> type[Payload]:
    """Make a payload type decodable by its ``TYPE`` name."""
    if not cls.TYPE or cls.TYPE in PAYLOAD_TYPES:
        raise ValueError(f"bad or duplicate payload type {cls.TYPE!r}")
    PAYLOAD_TYPES[cls.TYPE] = cls
    return cls


register_payload(Transfer)
register_payload(Deposit)


@dataclass(frozen=True, slots=True)
class UnsignedTx(Struct):
    """The signed part of a transaction (everything but the signature)."""

    chain_id: Text(CHAIN_ID_MAX)
    sender: Address
    nonce: U64
    type: Text(32)
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
        return signing_bytes(TAG_TX, self.chain_id, _unsigned_obj(
            self.chain_id, self.sender, self.nonce, self.payload))

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


_ENVELOPE_FIELDS = frozenset({"chain_id", "nonce", "payload", "sender", "sig", "type"})


def make_tx(key: PrivateKey, chain_id: str, nonce: int, payload: Payload) -> Transaction:
    """Sign ``payload`` as ``key`` and return the transaction with its canonical bytes."""
    payload.check(key.public_key)
    sender = key.public_key
    body = _unsigned_obj(chain_id, sender, nonce, payload)
    sig = key.sign(signing_bytes(TAG_TX, chain_id, body))
    obj = dict(body)
    obj["sig"] = sig
    raw = encode(obj)
    return Transaction(chain_id, sender, nonce, payload, sig, raw)


def decode_tx(data: bytes) -> Transaction:
    """Strictly decode a transaction envelope and its typed payload (no signature check)."""
    obj = decode(data, MAX_TX_BYTES)
    if type(obj) is not dict:
        raise DecodeError("transaction must be a map", reason="bad_type")
    if obj.keys() != _ENVELOPE_FIELDS:
        extra = sorted(set(obj) - _ENVELOPE_FIELDS)
        if extra:
            raise DecodeError(f"transaction has unknown field(s) {extra}", reason="unknown_field")
        missing = sorted(_ENVELOPE_FIELDS - set(obj))
        raise DecodeError(f"transaction is missing field(s) {missing}", reason="missing_field")
    sig = obj["sig"]
    if type(sig) is not bytes or len(sig) != 64:
        raise DecodeError("field 'sig' must be 64 bytes", reason="bad_type")
    unsigned = UnsignedTx.from_obj({k: v for k, v in obj.items() if k != "sig"}, "transaction")
    cls = PAYLOAD_TYPES.get(unsigned.type)
    if cls is None:
        raise DecodeError(f"unknown transaction type {unsigned.type!r}", reason="unknown_type")
    payload = cls.from_obj(unsigned.payload, context=f"{unsigned.type} payload")
    return Transaction(unsigned.chain_id, unsigned.sender, unsigned.nonce, payload, sig, data)
