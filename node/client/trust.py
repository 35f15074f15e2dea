"""What a light client trusts and how it extends that trust: the genesis (producer and operator
keys, the genesis state root), then signed headers one height at a time, and a new era only
through a fork certificate with the operators' threshold (docs/PROTOCOL.md §11).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Protocol

from chain.admin import AdminRefused, SignedForkCertificate
from chain.block import SignedHeader
from chain.errors import ChainError
from genesis.format import Genesis
from genesis.state import genesis_state_root
from node.client.rpc_client import RPCCallError
from node.wire_json import signed_header_json

CHECKS = ("response", "header_mismatch", "chain_id", "era", "producer", "signature", "height",
          "linkage", "time", "proof", "value")
"""Every ``LightClientError.check``, in the order a header or an answer is checked."""


ERA_CHANGE_WITHOUT_CERTIFICATE = "era_change_without_certificate"


class LightClientError(ChainError):
    """The light client refused what the node said. ``check`` names the failed check (one of
    :data:`CHECKS`); ``reason`` refines it where useful (e.g. a proof's reason, or
    ``era_change_without_certificate``) and defaults to ``check``."""

    def __init__(self, check: str, message: str, reason: str | None = None) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.message = message
        self.reason = reason or check


class AsyncRPC(Protocol):
    """What the light client needs from a JSON-RPC client (``node.client.AsyncRPCClient``)."""

    async def call(self, method: str, **params: Any) -> Any: ...

    async def call_batch(self, calls: list[tuple[str, dict[str, Any]]]
                         ) -> list[Any | RPCCallError]: ...


@dataclass(frozen=True)
class TrustedHeader:
    """A verified point of the chain: everything later checks are made against.

    The genesis anchor (height ``initial_height - 1``) has no signed header: its hash is the
    genesis hash and its state root is computed from the genesis file.
    """

    height: int
    hash: bytes
    state_root: bytes
    era: int
    time: int
    signed: SignedHeader | None = None


@dataclass(frozen=True)
class TrustRoot:
    """What the genesis file alone fixes."""

    chain_id: str
    genesis_hash: bytes
    initial_height: int
    genesis_time_ms: int
    producer: bytes
    state_root: bytes
    operators: tuple[bytes, ...] = ()
    operator_threshold: int = 1

    @classmethod
    def from_genesis(cls, g: Genesis) -> TrustRoot:
        return cls(g.chain_id, g.hash, g.initial_height, g.genesis_time_ms,
                   g.producer.pub_key, genesis_state_root(g),
                   tuple(o.pub_key for o in g.operators), g.operator_threshold)

    @property
    def genesis_height(self) -> int:
        return self.initial_height - 1

    def anchor(self) -> TrustedHeader:
        return TrustedHeader(self.genesis_height, self.genesis_hash, self.state_root, 0,
                             self.genesis_time_ms)


def decode_header_answer(ans: Any, what: str) -> SignedHeader:
    """The signed header of a ``header`` answer (or a ``signed_header`` field), after checking
    that its canonical bytes decode and say exactly what its JSON fields say."""
    if not isinstance(ans, dict) or not isinstance(ans.get("canonical"), str):
        raise LightClientError("response", f"{what}: not a signed header with canonical bytes")
    try:
        sh = SignedHeader.decode(base64.b64decode(ans["canonical"], validate=True))
    except (binascii.Error, ValueError, ChainError) as e:
        raise LightClientError("response", f"{what}: canonical bytes do not decode to a "
                               f"signed header ({e})") from e
    shown = signed_header_json(sh)
    if ans != shown:
        fields = sorted(k for k in set(ans) | set(shown) if ans.get(k) != shown.get(k))
        if "header" in fields and isinstance(ans.get("header"), dict):
            fields.remove("header")
            fields += sorted(f"header.{k}" for k in set(ans["header"]) | set(shown["header"])
                             if ans["header"].get(k) != shown["header"].get(k))
        raise LightClientError("header_mismatch", f"{what}: JSON fields differ from the "
                               f"canonical bytes: {', '.join(fields)}")
    return sh


@dataclass
class HeaderVerifier:
    """Checks one signed header against the trusted header before it.

    ``producers`` maps each era to the key that signs its blocks; era 0's is the genesis
    producer. An era change is the one place where a fork certificate will be needed.
    """

    trust: TrustRoot
    producers: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.producers.setdefault(0, self.trust.producer)

    def verify(self, prev: TrustedHeader, sh: SignedHeader,
               certificate: object | None = None) -> TrustedHeader:
        """Return ``sh`` as a trusted header, or raise ``LightClientError``."""
        h = sh.header
        where = f"header at height {h.height}"
        if h.chain_id != self.trust.chain_id:
            raise LightClientError("chain_id", f"{where} is for chain {h.chain_id!r}, the "
                                   f"genesis is for {self.trust.chain_id!r}")
        if h.era != prev.era:
            self.accept_era_change(prev, sh, certificate)
        producer = self.producers.get(h.era)
        if producer is None:
            raise LightClientError("era", f"{where}: no producer known for era {h.era}")
        if h.producer != producer:
            raise LightClientError("producer", f"{where} names producer {h.producer.hex()}, "
                                   f"era {h.era}'s producer is {producer.hex()}")
        try:
            sh.verify(producer)
        except ChainError as e:
            raise LightClientError("signature", f"{where}: the signature of era {h.era}'s "
                                   f"producer {producer.hex()} does not verify") from e
        self.check_successor(prev, sh)
        return TrustedHeader(h.height, h.hash, h.state_root, h.era, h.time, sh)

    def check_successor(self, prev: TrustedHeader, sh: SignedHeader) -> None:
        """Height, hash linkage and time: ``sh`` directly follows ``prev`` in one era."""
        h = sh.header
        if h.height != prev.height + 1:
            raise LightClientError("height", f"expected height {prev.height + 1}, the header "
                                   f"says {h.height}")
        if h.prev_hash != prev.hash:
            raise LightClientError("linkage", f"header at height {h.height} has prev_hash "
                                   f"{h.prev_hash.hex()}, the trusted header at height "
                                   f"{prev.height} has hash {prev.hash.hex()}")
        if h.time <= prev.time:
            raise LightClientError("time", f"header at height {h.height} has time {h.time}, "
                                   f"not after {prev.time} at height {prev.height}")

    def accept_era_change(self, prev: TrustedHeader, sh: SignedHeader,
                          certificate: object | None) -> None:
        """Accept ``sh`` opening a new era after ``prev``, or raise: the certificate must be
        signed by the genesis operators (threshold), name this chain and era, and continue
        from exactly ``prev``. The new era keeps the genesis producer."""
        h = sh.header
        where = f"header at height {h.height}"
        if h.era < prev.era:
            raise LightClientError("era", f"{where} is of era {h.era}, abandoned for era "
                                   f"{prev.era}", reason="abandoned_era")
        if not isinstance(certificate, SignedForkCertificate):
            raise LightClientError(
                "era", f"{where} moves from era {prev.era} to era {h.era} without a fork "
                "certificate", reason=ERA_CHANGE_WITHOUT_CERTIFICATE)
        check_certificate(self.trust, certificate)
        c = certificate.certificate
        if (c.era, c.to_height, c.to_block_hash) != (h.era, prev.height, prev.hash):
            raise LightClientError(
                "era", f"the fork certificate opens era {c.era} after height {c.to_height} "
                f"({c.to_block_hash.hex()}), not era {h.era} after the trusted header "
                f"{prev.height} ({prev.hash.hex()})", reason="certificate_mismatch")
        self.producers.setdefault(h.era, self.producers[prev.era])


def check_certificate(trust: TrustRoot, signed: SignedForkCertificate) -> None:
    """The certificate's chain and operator signatures, against the genesis."""
    if signed.certificate.chain_id != trust.chain_id:
        raise LightClientError("era", f"fork certificate for chain "
                               f"{signed.certificate.chain_id!r}", reason="certificate_mismatch")
    try:
        signed.verify(trust.operators, trust.operator_threshold)
    except AdminRefused as e:
        raise LightClientError("era", f"fork certificate of era {signed.certificate.era}: "
                               f"{e.message}", reason="certificate_signatures") from e


@dataclass(frozen=True)
class Verified:
    """A state read whose value (``None``: the key is absent) was proven under ``header``."""

    key: bytes
    value: bytes | None
    header: TrustedHeader

    @property
    def height(self) -> int:
        return self.header.height
