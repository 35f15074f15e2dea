"""The state wing's errors: failures of the node's own storage, and refusals of what the
store's state does not allow (the roots are in chain/errors.py)."""

from __future__ import annotations

from chain.errors import ChainError, Failure


class StoreError(Failure):
    """The store is missing, of another layout, or inconsistent: the node's own storage is
    broken (a failure, chain/errors.py)."""

    reason = "store_error"


class CorruptValue(StoreError):
    """A stored value that does not decode as what its key holds. Raised from the block
    overlay, so a block that meets one fails as the node's failure, never as the fault of
    the transaction that happened to read it."""

    reason = "corrupt_value"


class OperationRefused(ChainError):
    """The store's state does not allow what was asked (a recovery already in progress, a
    height no longer held, a snapshot label taken, ...): a refusal, the node is fine."""

    reason = "refused"


class StoreDamaged(CorruptValue):
    """LevelDB found its own files damaged (a checksum mismatch in a table block or in the
    write-ahead log, a broken file): what it would have returned cannot be trusted, so it
    is never returned (state/kv_level.py). Recover by restoring the store."""

    reason = "store_damaged"
