"""The operator audit log: every admin command the node received, accepted or refused.

Entries live in the store's metadata keyspace (``m`` + ``audit/`` + seq(8)), written synced;
the ``audit`` command reads them there. They are never rewritten; a rollback does not touch
them (the log is about the node, not the chain's state).

The store alone is not a durable enough record: the maintenance runbook (docs/OPERATIONS.md
section 11) replaces the store with a copy taken before the work when the work goes wrong,
which would drop every entry written since the copy, and hand their sequence numbers out
again to different entries. So each entry is first appended, fsynced, to a journal OUTSIDE
the store (``data/audit.jsonl``: one JSON object per line, the same map as the store's
entry), and only then written to the store. The next sequence number is one above the last
of both; when the node opens a store that lacks entries the journal holds (an older copy),
they are copied back, so ``admin audit`` shows them again. Entries only the store holds
(written before the journal existed) are added to the journal at open, so it stays the
complete record. A line cut short by a crash is ignored, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chain.codec import decode, encode
from chain.errors import ChainError
from state import schema
from state.store import Store
from state.store_errors import StoreError

log = logging.getLogger("appchain.audit")


JOURNAL_FILE = "audit.jsonl"
"""The journal's name in the node's data directory (beside ``store/``, never inside it)."""


_SEQ = struct.Struct(">Q")


_BATCH = 1000
"""Entries copied back into the store per write batch."""


@dataclass(frozen=True)
class AuditEntry:
    """One entry: its sequence number and fields (str keys; str, int, bool, list, map
    values). The same map is the store's value (canonical encoding) and the journal's line
    (JSON), so either can be rebuilt from the other byte for byte."""

    seq: int
    fields: Mapping[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return dict(self.fields, seq=self.seq)

    def store_value(self) -> bytes:
        return encode(self.record())

    def journal_line(self) -> bytes:
        return json.dumps(self.record(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True, allow_nan=False).encode("ascii") + b"\n"

    @classmethod
    def from_journal_line(cls, line: bytes) -> AuditEntry | None:
        """The entry of one journal line, or None if the line is not a whole entry (a
        write cut short by a crash, or a hand edit)."""
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            return None
        if type(obj) is not dict:
            return None
        seq = obj.get("seq")
        if type(seq) is not int or not 1 <= seq <= 2**64 - 1:
            return None
        entry = cls(seq, {k: v for k, v in obj.items() if k != "seq"})
        try:
            entry.store_value()  # floats, huge ints...: not an entry this node wrote
        except (ChainError, TypeError, ValueError):
            return None
        return entry


def _key(seq: int) -> bytes:
    return schema.META_AUDIT + _SEQ.pack(seq)


def _store_last(store: Store) -> int:
    with store.db.iterator(prefix=schema.META_AUDIT, reverse=True, include_value=False) as it:
        for k in it:
            return int(_SEQ.unpack(k[len(schema.META_AUDIT):])[0])
    return 0


def entries(store: Store, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
    """Entries in the store with ``seq > after``, oldest first, at most ``limit``."""
    out: list[dict[str, Any]] = []
    for _, v in store.db.iterator(start=_key(after + 1),
                                  stop=schema.META_AUDIT + b"\xff" * 8 + b"\xff"):
        out.append(dict(decode(v)))
        if len(out) >= limit:
            break
    return out


class AuditLog:
    """The audit log of one node: the store's entries plus the journal that outlives the
    store (module docstring). Opening it reconciles the two; appends are serialised."""

    def __init__(self, store: Store, journal_path: str | os.PathLike[str]) -> None:
        self.store = store
        self.journal_path = Path(journal_path)
        self._lock = threading.Lock()
        self._journal_last = 0
        self._reconcile()

    # -- reading ---------------------------------------------------------------------------

    def entries(self, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Entries with ``seq > after``, oldest first, at most ``limit`` (from the store,
        which holds every journal entry once the log is open)."""
        return entries(self.store, after, limit)

    def last_seq(self) -> int:
        """The highest sequence number handed out, in the store or the journal."""
        return max(_store_last(self.store), self._journal_last)

    def _journal(self) -> Iterator[tuple[int, AuditEntry | None]]:
        """``(line number, entry or None if unreadable)`` for every non-empty line."""
        try:
            f = open(self.journal_path, "rb")  # noqa: SIM115 (closed below, generator)
        except FileNotFoundError:
            return
        except OSError as e:
            raise StoreError(f"cannot read the audit journal {self.journal_path}: {e}") from e
        with f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield n, AuditEntry.from_journal_line(line)

    # -- opening ---------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Copy journal entries the store lacks into it; add store-only entries to the
        journal; make sure the next line starts on a line of its own."""
        seen: set[int] = set()
        unreadable: list[int] = []
        differ: list[int] = []
        copied: list[int] = []
        pending: list[AuditEntry] = []

        def flush() -> None:
            if pending:
                with self.store.db.write_batch(transaction=True, sync=True) as wb:
                    for e in pending:
                        wb.put(_key(e.seq), e.store_value())
                copied.extend(e.seq for e in pending)
                pending.clear()

        for n, entry in self._journal():
            if entry is None:
                unreadable.append(n)
                continue
            if entry.seq in seen:
                differ.append(entry.seq)  # a second line with one seq: the first one counts
                continue
            seen.add(entry.seq)
            stored = self.store.db.get(_key(entry.seq))
            if stored is None:
                pending.append(entry)
                if len(pending) >= _BATCH:
                    flush()
            elif stored != entry.store_value():
                differ.append(entry.seq)
        flush()
        self._journal_last = max(seen, default=0)
        if unreadable:
            shown = ", ".join(map(str, unreadable[:10])) + (", ..." if len(unreadable) > 10
                                                            else "")
            log.warning("audit journal %s: ignored %d unreadable line(s) (line %s); a line "
                        "cut short by a crash while it was written is expected at most once",
                        self.journal_path, len(unreadable), shown)
        if copied:
            log.warning("audit journal %s holds %d entr%s the store lacked (seq %d..%d; the "
                        "store was replaced by an older copy?): copied back into the store",
                        self.journal_path, len(copied), "y" if len(copied) == 1 else "ies",
                        min(copied), max(copied))
        if differ:
            log.warning("audit entries %s differ between the store and the journal %s "
                        "(or repeat in the journal): both left as they are",
                        sorted(set(differ))[:10], self.journal_path)
        self._backfill(seen)

    def _backfill(self, seen: set[int]) -> None:
        """Store entries the journal lacks (written before it existed) go into it, so a
        later restore of an older store cannot lose them."""
        lines: list[bytes] = []
        for k, v in self.store.db.iterator(prefix=schema.META_AUDIT):
            seq = int(_SEQ.unpack(k[len(schema.META_AUDIT):])[0])
            if seq not in seen:
                record = dict(decode(v))
                record.pop("seq", None)
                lines.append(AuditEntry(seq, record).journal_line())
                self._journal_last = max(self._journal_last, seq)
        if lines:
            self._write(b"".join(lines))
            log.info("audit journal %s: added %d entr%s only the store held",
                     self.journal_path, len(lines), "y" if len(lines) == 1 else "ies")
        elif self.journal_path.exists():
            self._write(b"")  # terminates a torn last line, if any

    # -- writing ---------------------------------------------------------------------------

    def append(self, fields: Mapping[str, Any]) -> int:
        """Add an entry with the next sequence number (above the store's and the journal's
        last) and return it: journal first (fsynced), then the store (synced)."""
        with self._lock:
            entry = AuditEntry(self.last_seq() + 1, {k: v for k, v in fields.items()
                                                     if k != "seq"})
            value, line = entry.store_value(), entry.journal_line()  # both, before writing
            self._write(line)
            self._journal_last = entry.seq
            self.store.db.put(_key(entry.seq), value, sync=True)
            return entry.seq

    def _write(self, data: bytes) -> None:
        """Append ``data`` to the journal and fsync it. A last line left without its newline
        (a write cut short) is ended first, so it can never swallow the next entry."""
        try:
            created = not self.journal_path.exists()
            fd = os.open(self.journal_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:  # the file's name must survive a crash too
                dfd = os.open(self.journal_path.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as e:
            raise StoreError(f"cannot write the audit journal {self.journal_path}: {e}") from e
