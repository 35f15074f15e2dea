"""Node metadata in the store, as typed records: the one interface to the ``m`` keyspace
(docs/PROTOCOL.md Appendix B) and to the recovery records beside it.

Each record is a frozen value with its canonical map form: the halt and the scheduled halt,
the recovery operation in progress (a rollback or a replay), admin nonces, fork certificates
and the eras they open, the careful-reopening marker, replay fates and the replayed marker,
and where an abandoned transaction was. Everything outside ``state/`` reads and writes node
metadata through these functions, never through ``store.db``. Block validity reads eras and
fork certificates here, so the state transition never imports the recovery wing that writes
them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Any

from chain.admin import SignedForkCertificate
from chain.codec import decode, encode
from state import schema
from state.store import Head, Store
from state.store_errors import OperationRefused


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


# -- halts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HaltRecord:
    """Why and since when production is halted (``m`` + ``halt``), until an operator clears
    it; a restart does not resume on its own."""

    reason: str
    check: str
    """``operator``, ``maintenance``, ``recovery``, ``verification``, a guard's check name, or
    ``failure`` (the node's own storage or state is broken)."""
    evidence: dict[str, Any]
    at_height: int
    since_ms: int
    by: str

    def to_obj(self) -> dict[str, Any]:
        return {"reason": self.reason, "check": self.check, "evidence": self.evidence,
                "at_height": str(self.at_height), "since_ms": str(self.since_ms),
                "by": self.by}

    @classmethod
    def from_obj(cls, d: dict[str, Any]) -> HaltRecord:
        return cls(str(d["reason"]), str(d["check"]), dict(d.get("evidence", {})),
                   int(d["at_height"]), int(d["since_ms"]), str(d.get("by", "")))


@dataclass(frozen=True)
class ScheduledHalt:
    """A halt the operators scheduled at a height (``m`` + ``halt_at``)."""

    at_height: int
    reason: str
    by: str
    scheduled_ms: int

    def to_obj(self) -> dict[str, Any]:
        return {"at_height": str(self.at_height), "reason": self.reason, "by": self.by,
                "scheduled_ms": str(self.scheduled_ms)}

    @classmethod
    def from_obj(cls, d: dict[str, Any]) -> ScheduledHalt:
        return cls(int(d["at_height"]), str(d["reason"]), str(d["by"]),
                   int(d["scheduled_ms"]))


def halt(store: Store) -> HaltRecord | None:
    raw = store.db.get(schema.META_HALT)
    return None if raw is None else HaltRecord.from_obj(dict(decode(raw)))


def set_halt(store: Store, record: HaltRecord | None) -> None:
    """Record (or with None, clear) a halt, and clear any scheduled halt; durable before it
    returns."""
    with store.db.write_batch(transaction=True, sync=True) as wb:
        if record is None:
            wb.delete(schema.META_HALT)
        else:
            wb.put(schema.META_HALT, encode(record.to_obj()))
        wb.delete(schema.META_HALT_AT)


def scheduled_halt(store: Store) -> ScheduledHalt | None:
    raw = store.db.get(schema.META_HALT_AT)
    return None if raw is None else ScheduledHalt.from_obj(dict(decode(raw)))


def schedule_halt(store: Store, record: ScheduledHalt) -> None:
    store.db.put(schema.META_HALT_AT, encode(record.to_obj()), sync=True)


# -- recovery operations ---------------------------------------------------------------------


@dataclass(frozen=True)
class RollbackOperation:
    """A rollback in progress (``m`` + ``op``, kind ``rollback``): recorded before its first
    step, removed by its last, so a crash resumes exactly this one."""

    from_height: int
    to_height: int
    era: int
    """Era of the head that is abandoned."""
    new_era: int
    reason: str
    certificate: bytes
    """The signed fork certificate of ``new_era`` (stored by the last step)."""
    by: tuple[str, ...]
    started_ms: int
    restore_file: str | None = None

    kind = "rollback"

    def to_obj(self) -> dict[str, Any]:
        return {"kind": "rollback", "from_height": self.from_height,
                "to_height": self.to_height, "era": self.era, "new_era": self.new_era,
                "reason": self.reason, "certificate": self.certificate, "by": list(self.by),
                "started_ms": self.started_ms, "restore_file": self.restore_file}


@dataclass(frozen=True)
class ReplayOperation:
    """A replay in progress (``m`` + ``op``, kind ``replay``), advanced in the batch of every
    replayed block (docs/PROTOCOL.md §12.11)."""

    era: int
    next: int
    """Index of the next archived block to replay (from 0)."""
    exclusions: dict[str, list[str]]
    """The operators' exclusions in their JSON form (``tx``, ``sender``, ``type``)."""
    by: tuple[str, ...]
    started_ms: int
    start_height: int
    """Height of the first replayed block."""
    blocked: dict[str, list[str]] = field(default_factory=dict)
    """sender hex -> [``excluded`` or ``dropped``, hash hex]: senders whose nonces no longer
    follow (their later transactions are dropped)."""

    kind = "replay"

    def advanced(self, blocked: dict[str, list[str]]) -> ReplayOperation:
        return replace(self, next=self.next + 1, blocked=blocked)

    def to_obj(self) -> dict[str, Any]:
        return {"kind": "replay", "era": self.era, "next": self.next,
                "exclusions": self.exclusions, "by": list(self.by),
                "started_ms": self.started_ms, "start_height": self.start_height,
                "blocked": self.blocked}

    def encode(self) -> bytes:
        return encode(self.to_obj())


Operation = RollbackOperation | ReplayOperation


def operation(store: Store) -> Operation | None:
    """The recovery operation in progress (recorded, not finished), or None."""
    raw = store.db.get(schema.META_OP)
    if raw is None:
        return None
    d = dict(decode(raw))
    if d.get("kind") == "rollback":
        return RollbackOperation(int(d["from_height"]), int(d["to_height"]),
                                 int(d.get("era", 0)), int(d["new_era"]), str(d["reason"]),
                                 bytes(d["certificate"]), tuple(d.get("by", [])),
                                 int(d["started_ms"]), d.get("restore_file"))
    return ReplayOperation(int(d["era"]), int(d["next"]), dict(d["exclusions"]),
                           tuple(d.get("by", [])), int(d["started_ms"]),
                           int(d["start_height"]), dict(d.get("blocked", {})))


def record_operation(store: Store, op: Operation) -> None:
    """Record the operation durably before its first step (refused if one is recorded)."""
    if operation(store) is not None:
        raise OperationRefused("another recovery operation is in progress")
    store.db.put(schema.META_OP, encode(op.to_obj()), sync=True)


# -- admin nonces, reopening, abandoned transactions -----------------------------------------

_NONCE = struct.Struct(">Q")


def admin_nonce_seen(store: Store, nonce: int) -> bool:
    return store.db.get(schema.META_ADMIN_NONCE + _NONCE.pack(nonce)) is not None


def record_admin_nonce(store: Store, nonce: int, issued_at: int) -> None:
    """Mark an admin command's nonce used (synced: a replayed envelope is refused even
    after a crash)."""
    store.db.put(schema.META_ADMIN_NONCE + _NONCE.pack(nonce), _NONCE.pack(issued_at),
                 sync=True)


def reopen_pending(store: Store) -> bool:
    """After a rollback, until ``resume``: markets must reopen carefully."""
    return store.db.get(schema.META_REOPEN) is not None


def clear_reopen(store: Store) -> None:
    store.db.delete(schema.META_REOPEN, sync=True)


def fate(store: Store, tx_hash: bytes) -> Fate | None:
    raw = store.db.get(schema.META_FATE + tx_hash)
    return None if raw is None else Fate.decode(raw)


def fork_certificate(store: Store, era: int) -> bytes | None:
    """The canonical bytes of the fork certificate that started ``era``, or None."""
    return store.db.get(schema.fork_key(era))  # type: ignore[no-any-return]


def abandoned_location(store: Store, tx_hash: bytes) -> tuple[int, int, int] | None:
    """(era, height, index) of the last abandoned block that held the transaction."""
    raw = store.db.get(schema.TX_FATE + tx_hash)
    if raw is None:
        return None
    h, i = schema.tx_location_from(raw[8:])
    return schema.height_from(raw[:8]), h, i


# -- writes that ride in a block's batch (Store.commit_block ``extra_meta``) ------------------

MetaWrite = tuple[bytes, bytes | None]
"""A metadata key and its new value (None: delete), committed with a block."""


def fate_write(f: Fate) -> MetaWrite:
    return (schema.META_FATE + f.hash, f.encode())


def operation_write(op: Operation | None) -> MetaWrite:
    """The operation record advanced, or removed (None) by the operation's last block."""
    return (schema.META_OP, None if op is None else encode(op.to_obj()))


def replayed_write(era: int, height: int) -> MetaWrite:
    """``era`` is replayed; its last abandoned block was replayed at ``height``."""
    return (schema.META_REPLAYED + str(era).encode(), str(height).encode())
