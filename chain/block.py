"""Block headers, blocks, transaction results and their hashes.

A header commits to everything a light client may ask about: the transactions (``tx_root``),
their results (``results_root``) and the state after the block (``state_root``). The producer
signs the header; the block hash is SHA-256 of the header's canonical bytes, so a signed header
fixes the whole block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from chain.codec import (
    U16,
    U64,
    Bytes32,
    Bytes64,
    ChainId,
    Length,
    Str64,
    Str1024,
    Struct,
    pack_canonical,
    unpack_canonical,
)
from chain.crypto import TAG_HEADER, PrivateKey, sha256, signing_bytes, verify
from chain.errors import InvalidBlock, InvalidSignature
from chain.merkle import merkle_root
from chain.tx import MAX_TX_BYTES

ZERO_HASH = b"\x00" * 32
MAX_BLOCK_TXS = 100_000
MAX_BLOCK_BYTES = 64 * 1024 * 1024
MAX_RESULT_EVENTS = 1 << 20
"""Events in one result: the block's own result can carry an event for every triggered order
and every market, so the bound is generous (a decode limit, not a per-transaction budget)."""


@dataclass(frozen=True, slots=True)
class Header(Struct):
    """What the producer signs for each block."""

    chain_id: ChainId
    """Chain the block belongs to."""
    era: U64
    """Recovery era: 0 from genesis, +1 after each operator rollback (fork)."""
    height: U64
    """Block height; the first block has the genesis ``initial_height``."""
    prev_hash: Bytes32
    """Hash of the previous block's header (the genesis hash for the first block)."""
    time: U64
    """Block time in milliseconds since the Unix epoch; strictly increasing."""
    tx_root: Bytes32
    """RFC 6962 root over the transactions' canonical bytes, in block order."""
    results_root: Bytes32
    """RFC 6962 root over each transaction's ``ResultCommitment`` (code and events)."""
    state_root: Bytes32
    """Commitment to the full application state after this block."""
    producer: Bytes32
    """Public key of the producer that signed the header."""

    @property
    def hash(self) -> bytes:
        return sha256(self.encode())

    def signed_bytes(self) -> bytes:
        return signing_bytes(TAG_HEADER, self.chain_id, self.to_obj())


@dataclass(frozen=True, slots=True)
class SignedHeader(Struct):
    """A header with its producer signature: what light clients fetch and check."""

    header: Header
    sig: Bytes64

    def verify(self, producer: bytes) -> None:
        """Raise ``InvalidSignature`` unless ``producer`` signed this header."""
        if self.header.producer != producer:
            raise InvalidSignature("header names a different producer")
        verify(producer, self.sig, self.header.signed_bytes())


TxBytes = Annotated[bytes, Length(0, MAX_TX_BYTES)]
TxList = Annotated[tuple[TxBytes, ...], Length(0, MAX_BLOCK_TXS)]


@dataclass(frozen=True, slots=True)
class Block(Struct):
    """A signed header and the raw transaction bytes it commits to."""

    header: Header
    sig: Bytes64
    txs: TxList

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def signed_header(self) -> SignedHeader:
        return SignedHeader(self.header, self.sig)

    def check_tx_root(self) -> None:
        if merkle_root(self.txs) != self.header.tx_root:
            raise InvalidBlock("tx_root does not match the block's transactions")

    @classmethod
    def decode_block(cls, data: bytes) -> Block:
        return cls.decode(data, MAX_BLOCK_BYTES)

    @staticmethod
    def signed_header_of(data: bytes) -> SignedHeader:
        """The signed header of canonical block bytes, without building every transaction."""
        obj = unpack_canonical(data, MAX_BLOCK_BYTES)
        if type(obj) is not dict or "header" not in obj or "sig" not in obj:
            return Block.decode_block(data).signed_header  # raises the precise DecodeError
        return SignedHeader.from_obj({"header": obj["header"], "sig": obj["sig"]})


def sign_header(key: PrivateKey, header: Header) -> bytes:
    """The producer's signature over ``header``."""
    return key.sign(header.signed_bytes())


@dataclass(frozen=True, slots=True)
class Attr(Struct):
    """One key/value attribute of an event (values are text; integers in decimal)."""

    key: Str64
    value: Str1024


@dataclass(frozen=True, slots=True)
class Event(Struct):
    """Something the state machine did, recorded in a transaction's or block's result."""

    type: Str64
    attrs: Annotated[tuple[Attr, ...], Length(0, 64)]

    @classmethod
    def of(cls, type_: str, **attrs: object) -> Event:
        """Build an event; bytes become hex, everything else ``str()``."""
        return cls(
            type_,
            tuple(
                Attr(k, v.hex() if isinstance(v, bytes) else str(v))
                for k, v in sorted(attrs.items())
            ),
        )

    def as_dict(self) -> dict[str, str]:
        return {a.key: a.value for a in self.attrs}


@dataclass(frozen=True, slots=True)
class TxResult(Struct):
    """Outcome of one included transaction. ``code`` 0 is success; see docs/PROTOCOL.md."""

    code: U16
    log: Str1024
    events: Annotated[tuple[Event, ...], Length(0, MAX_RESULT_EVENTS)]


@dataclass(frozen=True, slots=True)
class ResultCommitment(Struct):
    """The part of a ``TxResult`` that consensus commits to: code and events, not the log.

    The log is for people; keeping it out of ``results_root`` means rewording a message is
    not a fork (as in CometBFT, whose results hash leaves the log out too).
    """

    code: U16
    events: Annotated[tuple[Event, ...], Length(0, MAX_RESULT_EVENTS)]


def results_root(results: Sequence[TxResult]) -> bytes:
    """``results_root`` for a block's results: RFC 6962 over each ``ResultCommitment``."""
    return encode_results(results)[1]


def encode_results(results: Sequence[TxResult]) -> tuple[list[bytes], bytes]:
    """Each result's canonical bytes, and ``results_root``: the events are rendered once
    for both (a result is a ``ResultCommitment`` plus its log)."""
    stored: list[bytes] = []
    leaves: list[bytes] = []
    for r in results:
        events = [e.to_obj() for e in r.events]
        # Keys written in canonical (sorted) order; values come from to_obj().
        leaves.append(pack_canonical({"code": r.code, "events": events}))
        stored.append(pack_canonical({"code": r.code, "events": events, "log": r.log}))
    return stored, merkle_root(leaves)
