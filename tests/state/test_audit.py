"""The audit log's journal outside the store: sequence numbers are never handed out twice,
even after the store is replaced by an older copy, and a torn journal line never stops a
node."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from state.recovery import audit
from state.recovery.audit import AuditEntry, AuditLog
from state.schema import META_AUDIT
from state.store import Store
from state.store_errors import StoreError


def entry(command: str, **extra: object) -> dict[str, object]:
    return {"time_ms": 1_795_561_531_503, "command": command, "args": {"reason": "é ünïcode"},
            "operators": ["ab" * 32], "claimed_keys": ["ab" * 32], "nonce": "42",
            "outcome": "ok", "summary": f"{command} done", **extra}


def journal_seqs(path: Path) -> list[int]:
    return [json.loads(line)["seq"] for line in path.read_bytes().splitlines() if line.strip()]


def commands(log: AuditLog) -> list[tuple[int, str]]:
    return [(int(e["seq"]), str(e["command"])) for e in log.entries()]


def test_journal_line_and_store_value_rebuild_each_other() -> None:
    e = AuditEntry(7, entry("halt", flag=True, big=2**64 - 1))
    back = AuditEntry.from_journal_line(e.journal_line())
    assert back == e and back.store_value() == e.store_value()
    assert e.journal_line().endswith(b"\n") and e.journal_line().count(b"\n") == 1
    for bad in [b'{"seq": 7, "command": "ha', b"[]", b'{"command": "x"}', b'{"seq": 0}',
                b'{"seq": true}', b'{"seq": 3, "x": 1.5}', b"\xff\xfe", b"[" * 100_000]:
        assert AuditEntry.from_journal_line(bad) is None, bad


def test_append_writes_the_journal_then_the_store(tmp_path: Path) -> None:
    with Store(tmp_path / "store") as store:
        log = AuditLog(store, tmp_path / "audit.jsonl")
        assert [log.append(entry(c)) for c in ("halt", "resume", "audit")] == [1, 2, 3]
        assert journal_seqs(tmp_path / "audit.jsonl") == [1, 2, 3]
        assert commands(log) == [(1, "halt"), (2, "resume"), (3, "audit")]
        assert audit.entries(store, after=1, limit=1) == [dict(entry("resume"), seq=2)]
        lines = (tmp_path / "audit.jsonl").read_bytes().splitlines()
        assert json.loads(lines[0]) == dict(entry("halt"), seq=1)


def test_a_restored_older_store_gets_the_lost_entries_back_and_seqs_are_not_reused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    journal = tmp_path / "data" / "audit.jsonl"
    store_dir = tmp_path / "data" / "store"
    with Store(store_dir) as store:
        log = AuditLog(store, journal)
        log.append(entry("maintenance_begin"))
    shutil.copytree(store_dir, tmp_path / "copy")  # the runbook's copy, store closed
    with Store(store_dir) as store:
        log = AuditLog(store, journal)
        log.append(entry("maintenance_end", outcome="refused"))  # written after the copy
        log.append(entry("audit"))
    shutil.rmtree(store_dir)
    shutil.copytree(tmp_path / "copy", store_dir)  # the work went wrong: put the copy back
    with Store(store_dir) as store:
        assert [int(e["seq"]) for e in audit.entries(store)] == [1]  # the copy's own log
        with caplog.at_level(logging.WARNING, "appchain.audit"):
            log = AuditLog(store, journal)
        assert "copied back into the store" in caplog.text and "seq 2..3" in caplog.text
        assert commands(log) == [(1, "maintenance_begin"), (2, "maintenance_end"),
                                 (3, "audit")]
        assert log.append(entry("maintenance_end")) == 4  # above the journal's last
        assert journal_seqs(journal) == [1, 2, 3, 4]
    with Store(store_dir) as store:  # nothing more to copy: a quiet open
        caplog.clear()
        with caplog.at_level(logging.WARNING, "appchain.audit"):
            assert commands(AuditLog(store, journal))[-1] == (4, "maintenance_end")
        assert caplog.text == ""


def test_a_torn_last_line_is_ignored_with_a_warning_and_never_swallows_the_next_entry(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    journal = tmp_path / "audit.jsonl"
    with Store(tmp_path / "store") as store:
        log = AuditLog(store, journal)
        log.append(entry("halt"))
        log.append(entry("resume"))
    torn = AuditEntry(3, entry("snapshot_create")).journal_line()[:40]  # crash mid-write
    with open(journal, "ab") as f:
        f.write(torn)
    with Store(tmp_path / "store") as store:
        with caplog.at_level(logging.WARNING, "appchain.audit"):
            log = AuditLog(store, journal)
        assert "ignored 1 unreadable line(s) (line 3)" in caplog.text
        assert journal.read_bytes().endswith(torn + b"\n")  # kept, on a line of its own
        assert log.append(entry("audit")) == 3  # the torn entry never reached the store
        assert commands(log) == [(1, "halt"), (2, "resume"), (3, "audit")]
    lines = journal.read_bytes().splitlines()
    assert lines[2] == torn and json.loads(lines[3])["seq"] == 3


def test_a_complete_last_line_without_its_newline_counts_and_is_terminated(
        tmp_path: Path) -> None:
    journal = tmp_path / "audit.jsonl"
    with Store(tmp_path / "store") as store:
        log = AuditLog(store, journal)
        log.append(entry("halt"))
    line = AuditEntry(2, entry("resume")).journal_line()
    with open(journal, "ab") as f:  # crash after the JSON, before the newline and the store
        f.write(line[:-1])
    with Store(tmp_path / "store") as store:
        log = AuditLog(store, journal)
        assert commands(log) == [(1, "halt"), (2, "resume")]
        assert log.append(entry("audit")) == 3
    assert journal_seqs(journal) == [1, 2, 3]


def test_entries_only_the_store_holds_are_added_to_the_journal(tmp_path: Path) -> None:
    """A store from before the journal existed (or a lost journal): its history is put in
    the journal at open, so a later restore of an older store loses nothing."""
    journal = tmp_path / "audit.jsonl"
    with Store(tmp_path / "store") as store:
        for seq in (1, 2):  # written by a node without a journal
            store.db.put(META_AUDIT + seq.to_bytes(8, "big"),
                         AuditEntry(seq, entry(f"old-{seq}")).store_value(), sync=True)
        log = AuditLog(store, journal)
        assert journal_seqs(journal) == [1, 2]
        assert log.append(entry("new")) == 3
        assert AuditEntry.from_journal_line(journal.read_bytes().splitlines()[0]) == \
            AuditEntry(1, entry("old-1"))


def test_an_entry_that_differs_between_store_and_journal_is_left_alone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    journal = tmp_path / "audit.jsonl"
    with Store(tmp_path / "store") as store:
        AuditLog(store, journal).append(entry("halt"))
        store.db.put(META_AUDIT + (1).to_bytes(8, "big"),
                     AuditEntry(1, entry("other")).store_value(), sync=True)
        with caplog.at_level(logging.WARNING, "appchain.audit"):
            log = AuditLog(store, journal)
        assert "differ between the store and the journal" in caplog.text
        assert commands(log) == [(1, "other")]
        assert log.append(entry("next")) == 2


def test_an_unwritable_journal_is_a_clear_store_error(tmp_path: Path) -> None:
    with Store(tmp_path / "store") as store:
        with pytest.raises(StoreError, match="cannot write the audit journal"):
            AuditLog(store, tmp_path / "missing-dir" / "audit.jsonl").append(entry("halt"))
        assert audit.entries(store) == []  # journal first: nothing in the store either
