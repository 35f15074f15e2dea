"""The state commitment carried in every header's ``state_root``.

Interim scheme (until the authenticated Merkle tree lands): a chained digest of each block's
sorted net write set, ``root_h = SHA-256(tag || root_{h-1} || SHA-256(canonical(changes)))``.
It costs O(changes) per block and is deterministic, so two nodes that diverge by a single
byte of state produce different roots from that block on. It cannot prove individual keys;
that is what the Merkle tree is for.
"""

from __future__ import annotations

from collections.abc import Sequence

from chain.codec import encode
from chain.crypto import sha256

DIGEST_TAG = b"appchain/state-digest/v1\x00"
EMPTY_ROOT = b"\x00" * 32


def chained_root(prev_root: bytes, changes: Sequence[tuple[bytes, bytes | None]]) -> bytes:
    """Next state root from the previous one and a block's sorted ``(key, value|None)`` list."""
    return sha256(DIGEST_TAG + prev_root + sha256(encode([[k, v] for k, v in changes])))
