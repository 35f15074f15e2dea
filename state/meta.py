"""Node metadata in the store, as typed records: fork certificates and eras, replay fates and
the replayed marker (docs/PROTOCOL.md Appendix B, ``m`` keys).

Block validity reads eras and fork certificates here, so the state transition never
imports the recovery wing that writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chain.admin import SignedForkCertificate
from chain.codec import decode, encode
from state import schema
from state.store import Head, Store


def fork_certificates(store: Store) -> list[SignedForkCertificate]:
    """Every stored fork certificate, by era."""
    return [SignedForkCertificate.decode(v) for _, v in store.db.iterator(
        prefix=schema.META_FORK)]


def next_era(store: Store, head: Head) -> int:
    """The era of the block after ``head``: ``head.era``, unless a fork certificate says a
    newer era continues from exactly this block (the first block after a rollback)."""
    era = head.era
    for signed in fork_certificates(store):
        c = signed.certificate
        if c.to_height == head.height and c.to_block_hash == head.hash and c.era > era:
            era = c.era
    return era


FATES = ("identical", "diverged", "dropped")


@dataclass(frozen=True)
class Fate:
    """What replay did with one abandoned transaction (a durable record: ``m`` + ``fate/`` +
    tx hash, written in the batch of the block that replayed it)."""

    hash: bytes
    era: int
    height: int
    """Height of the abandoned block that held it."""
    index: int
    fate: str
    """``identical``, ``diverged`` or ``dropped``."""
    reason: str = ""
    """Why it was dropped (:data:`REASONS`); empty otherwise."""
    why: str = ""
    """For ``diverged``: what differs, in a few words."""
    sender: str = ""
    type: str = ""
    new_height: int | None = None
    new_index: int | None = None
    code: int | None = None
    """Result code on the recovered chain (included transactions)."""
    original_code: int | None = None

    def to_obj(self) -> dict[str, Any]:
        return {"hash": self.hash.hex(), "era": self.era, "height": self.height,
                "index": self.index, "fate": self.fate, "reason": self.reason,
                "why": self.why, "sender": self.sender, "type": self.type,
                "new_height": self.new_height, "new_index": self.new_index,
                "code": self.code, "original_code": self.original_code}

    @classmethod
    def from_obj(cls, doc: dict[str, Any]) -> Fate:
        return cls(bytes.fromhex(doc["hash"]), int(doc["era"]), int(doc["height"]),
                   int(doc["index"]), str(doc["fate"]), str(doc.get("reason", "")),
                   str(doc.get("why", "")), str(doc.get("sender", "")),
                   str(doc.get("type", "")), doc.get("new_height"), doc.get("new_index"),
                   doc.get("code"), doc.get("original_code"))

    def encode(self) -> bytes:
        return encode(self.to_obj())

    @classmethod
    def decode(cls, raw: bytes) -> Fate:
        return cls.from_obj(dict(decode(raw)))


def replayed_height(store: Store, era: int) -> int | None:
    """Height of the block that replayed ``era``'s last abandoned block (None: not yet)."""
    v = store.db.get(schema.META_REPLAYED + str(era).encode())
    if v is None:
        return None
    try:
        return int(v)
    except ValueError:  # written by an older version ("1"): unknown
        return None
