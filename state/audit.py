"""The operator audit log: every admin command the node received, accepted or refused.

Entries live in the store's metadata keyspace (``m`` + ``audit/`` + seq(8)), written synced,
so the log survives crashes and travels with the data directory. They are never rewritten;
a rollback does not touch them (the log is about the node, not the chain's state).
"""

from __future__ import annotations

import struct
from typing import Any

from chain.codec import decode, encode
from state import schema
from state.store import Store

_SEQ = struct.Struct(">Q")


def append(store: Store, entry: dict[str, Any]) -> int:
    """Add ``entry`` (JSON-like: str keys; str, int, bool, list values) with the next
    sequence number; returns it. Callers serialise appends (the admin service does)."""
    last = 0
    with store.db.iterator(prefix=schema.META_AUDIT, reverse=True, include_value=False) as it:
        for k in it:
            last = _SEQ.unpack(k[len(schema.META_AUDIT):])[0]
            break
    seq = last + 1
    store.db.put(schema.META_AUDIT + _SEQ.pack(seq), encode(dict(entry, seq=seq)), sync=True)
    return seq


def entries(store: Store, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
    """Entries with ``seq > after``, oldest first, at most ``limit``."""
    out: list[dict[str, Any]] = []
    for _, v in store.db.iterator(start=schema.META_AUDIT + _SEQ.pack(after + 1),
                                  stop=schema.META_AUDIT + b"\xff" * 8 + b"\xff"):
        out.append(dict(decode(v)))
        if len(out) >= limit:
            break
    return out
