"""The project's exception roots, with data-carrying leaves.

Two kinds of trouble, two roots under :class:`AppchainError`:

* :class:`ChainError`, a **rejection**: the input is wrong (a transaction, a block, a
  command, a file someone hands us); the node is fine and says why it refused;
* :class:`Failure`: the node's **own** storage or state is broken (a stored value that does
  not decode, a store rewritten outside the blocks, a disk error); nobody's input is to
  blame, so a failure must never be reported as the offending transaction, and a producer
  halts on one instead of dropping a transaction.

Each class carries a stable machine-readable ``reason`` so that RPC servers and reports can
map it to a code without parsing messages.
"""

from __future__ import annotations


class AppchainError(Exception):
    """Root of every exception this project raises on purpose."""

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        """The readable message (subclasses may set a shorter one than ``str(e)``)."""
        m = self.__dict__.get("_message")
        if m is not None:
            return str(m)
        return str(self.args[0]) if self.args else self.reason

    @message.setter
    def message(self, value: str) -> None:
        self._message = value


class ChainError(AppchainError):
    """Root of every rejection by chain, state or genesis code."""

    reason = "chain_error"


class Failure(AppchainError):
    """The node's own storage or state is broken (not a rejection of anyone's input)."""

    reason = "failure"


class DecodeError(ChainError):
    """Bytes that are not the canonical encoding of a well-formed value.

    ``reason`` is one of: ``oversize``, ``malformed``, ``trailing_bytes``, ``non_canonical``,
    ``bad_type``, ``unknown_field``, ``missing_field``, ``out_of_range``, ``unknown_type``.
    """

    reason = "malformed"


class InvalidSignature(ChainError):
    """A signature that does not verify under the claimed key and domain."""

    reason = "bad_signature"


class InvalidTransaction(ChainError):
    """A transaction that is well-formed but not acceptable (wrong chain, bad nonce, ...)."""

    reason = "invalid_transaction"


class NonceMismatch(InvalidTransaction):
    """The transaction's nonce is not the sender's next nonce."""

    reason = "nonce_mismatch"

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"nonce mismatch: expected {expected}, got {got}")
        self.expected = expected
        self.got = got


class InvalidBlock(ChainError):
    """A block that must not be committed: bad linkage, signature, roots or contents.

    ``tx_index`` names the offending transaction when one transaction is to blame.
    """

    reason = "invalid_block"

    def __init__(self, message: str, *, reason: str | None = None,
                 tx_index: int | None = None) -> None:
        super().__init__(message, reason=reason)
        self.tx_index = tx_index


class InvalidGenesis(ChainError):
    """A genesis file that fails validation; the message names the offending field."""

    reason = "invalid_genesis"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"genesis field {field!r}: {problem}")
        self.field = field
        self.problem = problem
