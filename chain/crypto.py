"""Hashing and ed25519 signatures with domain separation.

Every signature covers ``tag || 0x00 || canonical(chain_id, message)``: the tag names what is
being signed (a transaction, a header, an admin command...) so a signature made for one
purpose can never be replayed as another, and the chain id makes a signature made for one
chain worthless on every other chain.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.signing

from chain.codec import Value, encode
from chain.errors import InvalidSignature

TAG_TX = b"appchain/tx/v1"
TAG_HEADER = b"appchain/header/v1"
TAG_ADMIN = b"appchain/admin/v1"
TAG_FORK = b"appchain/fork-certificate/v1"

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32


def sha256(data: bytes) -> bytes:
    """SHA-256 digest (32 bytes)."""
    return hashlib.sha256(data).digest()


def signing_bytes(tag: bytes, chain_id: str, message: Value) -> bytes:
    """The exact bytes an ed25519 signature covers (see module docstring)."""
    return tag + b"\x00" + encode({"chain_id": chain_id, "msg": message})


def verify(public_key: bytes, signature: bytes, signed: bytes) -> None:
    """Raise ``InvalidSignature`` unless ``signature`` over ``signed`` verifies.

    libsodium rejects non-canonical S values and small-order keys, so a valid signature has
    exactly one encoding (hashes over signed bytes are therefore not malleable).
    """
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        raise InvalidSignature("malformed key or signature")
    try:
        nacl.bindings.crypto_sign_open(signature + signed, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError) as e:
        raise InvalidSignature("signature does not verify") from e


def is_valid_signature(public_key: bytes, signature: bytes, signed: bytes) -> bool:
    """Boolean form of :func:`verify`, for hot loops that count failures."""
    try:
        verify(public_key, signature, signed)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class PrivateKey:
    """An ed25519 key pair held in memory; ``seed`` is the 32-byte secret."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_SIZE:
            raise ValueError("an ed25519 seed is 32 bytes")
        sk = nacl.signing.SigningKey(self.seed)
        object.__setattr__(self, "_sk", sk)
        object.__setattr__(self, "_pk", bytes(sk.verify_key))

    def __repr__(self) -> str:  # never print the secret
        return f"PrivateKey(public_key={self.public_key.hex()})"

    @classmethod
    def generate(cls) -> PrivateKey:
        """A fresh random key (the only nondeterministic call in ``chain/``)."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def public_key(self) -> bytes:
        return self._pk  # type: ignore[attr-defined,no-any-return]

    def sign(self, signed: bytes) -> bytes:
        """Detached 64-byte signature over ``signed``."""
        return self._sk.sign(signed).signature  # type: ignore[attr-defined,no-any-return]
