"""Operator authentication: signed admin envelopes and fork certificates (wire formats).

An operator command is an :class:`AdminCommand` (chain id, command name, arguments, issue
time, a random nonce) signed by operator keys named in genesis; the node accepts it only with
valid signatures from at least ``operator_threshold`` distinct operators, inside a validity
window around its clock, with a nonce it has not seen. Signatures cover
``signing_bytes(TAG_ADMIN, chain_id, command)`` (chain/crypto.py), so an admin signature can
never be replayed as a transaction, a header or on another chain.

A :class:`ForkCertificate` is what lets other nodes and light clients follow a rollback: the
operators sign (under ``TAG_FORK``) which era begins, which heights were abandoned and the
block (hash and state root) the new era continues from.

Refusals carry a stable ``reason`` (:data:`REFUSALS`): scripts branch on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from chain.codec import U8, U64, Bytes32, Bytes64, ChainId, Length, Str1024, Struct
from chain.crypto import TAG_ADMIN, TAG_FORK, PrivateKey, is_valid_signature, signing_bytes
from chain.errors import ChainError

MAX_ARG_BYTES = 120_000
MAX_SIGNATURES = 64

REFUSALS = {
    "malformed": "the envelope does not decode",
    "wrong_chain": "the command names another chain",
    "unsigned": "the envelope carries no signature",
    "unknown_key": "a signature is from a key that is not a genesis operator",
    "bad_signature": "a signature does not verify",
    "under_threshold": "fewer distinct operator signatures than the genesis threshold",
    "expired": "issued too long ago",
    "not_yet_valid": "issued in the future (beyond the allowed clock skew)",
    "replayed": "this nonce was already used",
    "unknown_command": "no such command",
    "bad_args": "the arguments are missing or invalid",
    "refused": "the node cannot do this now (the message says why)",
    "rate_limited": "too many unauthenticated envelopes from this peer (one signature checked)",
}


class AdminRefused(ChainError):
    """An admin envelope or command the node will not act on."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REFUSALS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        super().__init__(message, reason=reason)


ArgKey = Annotated[str, Length(1, 80)]
ArgValue = Annotated[str, Length(0, MAX_ARG_BYTES)]


@dataclass(frozen=True, slots=True)
class AdminArg(Struct):
    key: ArgKey
    value: ArgValue
    """Text; large enough for a hex-encoded signed fork certificate or operator
    transaction (the envelope as a whole is bounded by the endpoint's body limit)."""


@dataclass(frozen=True, slots=True)
class AdminCommand(Struct):
    """What the operators sign. ``args`` are sorted by key, keys unique (checked)."""

    chain_id: ChainId
    command: Annotated[str, Length(1, 64)]
    args: Annotated[tuple[AdminArg, ...], Length(0, 64)]
    issued_at: U64
    """Wall-clock milliseconds when the command was made."""
    nonce: U64
    """Random; the node refuses a nonce it has seen (replay protection)."""

    def arg_dict(self) -> dict[str, str]:
        return {a.key: a.value for a in self.args}

    def signed_bytes(self) -> bytes:
        return signing_bytes(TAG_ADMIN, self.chain_id, self.to_obj())


@dataclass(frozen=True, slots=True)
class OperatorSignature(Struct):
    key: Bytes32
    sig: Bytes64


Signatures = Annotated[tuple[OperatorSignature, ...], Length(0, MAX_SIGNATURES)]


@dataclass(frozen=True, slots=True)
class AdminEnvelope(Struct):
    command: AdminCommand
    signatures: Signatures


def make_command(chain_id: str, command: str, args: dict[str, str], issued_at: int,
                 nonce: int) -> AdminCommand:
    return AdminCommand(chain_id, command,
                        tuple(AdminArg(k, v) for k, v in sorted(args.items())), issued_at, nonce)


def sign_command(cmd: AdminCommand, keys: Sequence[PrivateKey]) -> AdminEnvelope:
    msg = cmd.signed_bytes()
    return AdminEnvelope(cmd, tuple(OperatorSignature(k.public_key, k.sign(msg)) for k in keys))


def check_signatures(signed: bytes, signatures: Sequence[OperatorSignature],
                     operators: Sequence[bytes], threshold: int, what: str) -> list[bytes]:
    """The distinct operators whose signature over ``signed`` verifies; raises
    :class:`AdminRefused` (``unsigned``, ``unknown_key``, ``bad_signature``,
    ``under_threshold``) in that order of checks."""
    if not signatures:
        raise AdminRefused("unsigned", f"the {what} carries no signature")
    ops = set(operators)
    signers: list[bytes] = []
    for s in signatures:
        if s.key not in ops:
            raise AdminRefused("unknown_key", f"{s.key.hex()} is not a genesis operator key")
        if not is_valid_signature(s.key, s.sig, signed):
            raise AdminRefused("bad_signature", f"the signature of {s.key.hex()} does not "
                               f"verify over this {what}")
        if s.key not in signers:
            signers.append(s.key)
    if len(signers) < threshold:
        raise AdminRefused("under_threshold", f"{len(signers)} distinct operator signature(s), "
                           f"the genesis threshold is {threshold}")
    return signers


def check_command(env: AdminEnvelope, chain_id: str, operators: Sequence[bytes],
                  threshold: int, now_ms: int, max_age_ms: int, max_skew_ms: int
                  ) -> list[bytes]:
    """Stateless envelope checks (everything but the nonce); returns the signers."""
    cmd = env.command
    if cmd.chain_id != chain_id:
        raise AdminRefused("wrong_chain", f"command for chain {cmd.chain_id!r}, this node "
                           f"runs {chain_id!r}")
    keys = [a.key for a in cmd.args]
    if keys != sorted(set(keys)):
        raise AdminRefused("malformed", "arguments must be sorted by key, keys unique")
    signers = check_signatures(cmd.signed_bytes(), env.signatures, operators, threshold,
                               "command")
    if cmd.issued_at + max_age_ms < now_ms:
        raise AdminRefused("expired", f"issued at {cmd.issued_at}, more than {max_age_ms} ms "
                           f"before the node's clock ({now_ms})")
    if cmd.issued_at > now_ms + max_skew_ms:
        raise AdminRefused("not_yet_valid", f"issued at {cmd.issued_at}, more than "
                           f"{max_skew_ms} ms after the node's clock ({now_ms})")
    return signers


@dataclass(frozen=True, slots=True)
class ForkCertificate(Struct):
    """The operators' statement that era ``era`` continues from block ``to_height``."""

    chain_id: ChainId
    era: U64
    """The era that begins (the abandoned blocks were in ``era - 1`` or earlier)."""
    from_height: U64
    """Head height of the abandoned fork when it was rolled back."""
    to_height: U64
    """Height the chain was rolled back to: the new era's first block is ``to_height + 1``."""
    to_block_hash: Bytes32
    """Hash of the block at ``to_height``: the new era's first block links to it."""
    state_root: Bytes32
    """State root at ``to_height`` (of that block's header)."""
    reason: Str1024

    def signed_bytes(self) -> bytes:
        return signing_bytes(TAG_FORK, self.chain_id, self.to_obj())


@dataclass(frozen=True, slots=True)
class SignedForkCertificate(Struct):
    certificate: ForkCertificate
    signatures: Signatures
    threshold: U8
    """Informational copy of the genesis threshold it was made for (verifiers use their own)."""

    def verify(self, operators: Sequence[bytes], threshold: int) -> list[bytes]:
        return check_signatures(self.certificate.signed_bytes(), self.signatures, operators,
                                threshold, "fork certificate")


def sign_fork(cert: ForkCertificate, keys: Sequence[PrivateKey], threshold: int
              ) -> SignedForkCertificate:
    msg = cert.signed_bytes()
    return SignedForkCertificate(
        cert, tuple(OperatorSignature(k.public_key, k.sign(msg)) for k in keys), threshold)
