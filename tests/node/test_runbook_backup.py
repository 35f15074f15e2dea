"""The maintenance runbook's store backup and restore (docs/OPERATIONS.md section 11), run
exactly as documented: the shell blocks are read from the doc and run with ``sh``, for two
windows on one node, and the restored store must be the one of the window being restored
(its head), with the audit entries written after the copy back in it."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from chain.admin import AdminRefused, make_command, sign_command
from genesis.builder import DevnetKeys
from node.config import Home
from node.dev.local import make_genesis, make_home
from node.node import Node, open_node
from node.ops.service import AdminService
from state.recovery.audit import JOURNAL_FILE
from state.schema import STATE
from state.store import Head, Store
from tests.helpers import REPO

DOC = REPO / "docs" / "OPERATIONS.md"


def doc_block(name: str) -> str:
    """The ``sh`` block after the ``<!-- runbook:NAME ... -->`` marker, dedented."""
    text = DOC.read_text()
    m = re.search(r"<!-- runbook:" + re.escape(name) + r"\b[^>]*-->\n([ \t]*)```sh\n(.*?)\n"
                  r"[ \t]*```", text, re.S)
    assert m is not None, f"no runbook:{name} block in {DOC}"
    return textwrap.dedent(m.group(1) + m.group(2).replace("\n" + m.group(1), "\n"))


BACKUP = doc_block("maintenance-backup")
RESTORE = doc_block("maintenance-restore")


def sh(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def backup(cwd: Path, height: int, **env: str) -> Path:
    out = sh(BACKUP, cwd, H=str(height), **env)
    assert out.returncode == 0, out.stderr
    m = re.fullmatch(r"store copied to (\S+)\n", out.stdout)
    assert m is not None, out.stdout
    return cwd / m.group(1)


def head_of(store_dir: Path) -> Head:
    with Store(store_dir, create=False) as store:
        head = store.head()
    assert head is not None
    return head


def run_admin(node: Node, keys: DevnetKeys, command: str, **args: str) -> Any:
    async def go() -> Any:
        cmd = make_command(node.params.chain_id, command, args, time.time_ns() // 1_000_000,
                           secrets.randbits(64))
        env = sign_command(cmd, list(keys.operators))
        return await AdminService(node).execute(env.encode())

    return trio.run(go)


def produce(node: Node, n: int) -> None:
    async def go() -> None:
        for _ in range(n):
            await node.produce_block()

    trio.run(go)


def one_window(home: Home, keys: DevnetKeys, cwd: Path, blocks_before: int,
               caplog: pytest.LogCaptureFixture) -> tuple[Path, Head]:
    """Produce, begin a window, copy the store as documented, break the store, see `end`
    refuse, restore as documented, end the window. Returns the copy and the pinned head."""
    node = open_node(home)
    try:
        produce(node, blocks_before)
        begun = run_admin(node, keys, "maintenance_begin", reason="disk move")
        pinned = node.head
    finally:
        node.close()
    height = int(begun["snapshot"]["height"])
    assert height == pinned.height
    copy = backup(cwd, height)
    assert head_of(copy) == pinned

    with Store(home.store_dir) as store:  # the faulty work: a write outside the blocks
        store.db.put(STATE + b"mks/BTC-USD-PERP", b"\x00corrupt", sync=True)
    node = open_node(home)
    try:
        with pytest.raises(AdminRefused, match="the state changed during maintenance"):
            run_admin(node, keys, "maintenance_end")
        refused_seq = node.audit.last_seq()
    finally:
        node.close()

    kept = {p: p.read_bytes() for p in (home.signer_state_file, home.data_dir / JOURNAL_FILE)}
    out = sh(RESTORE, cwd, B=str(copy.relative_to(cwd)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("store restored from")
    assert head_of(home.store_dir) == pinned
    assert {p: p.read_bytes() for p in kept} == kept  # journal and signer record untouched

    caplog.clear()
    node = open_node(home)  # the journal gives the restored store its lost entries back
    try:
        assert "copied back into the store" in caplog.text
        seqs = [(int(e["seq"]), e["command"], e["outcome"]) for e in node.audit.entries()]
        assert seqs[-1] == (refused_seq, "maintenance_end", "refused")
        assert [s for s, _, _ in seqs] == list(range(1, refused_seq + 1))
        ended = run_admin(node, keys, "maintenance_end")
        assert ended["summary"].startswith("maintenance ended, resumed")
        assert int(ended["audit_seq"]) == refused_seq + 1
    finally:
        node.close()
    return copy, pinned


def test_backup_and_restore_lines_of_the_runbook_work_for_two_windows(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    g, keys = make_genesis(accounts=2)
    home = make_home(tmp_path / "node0", g, keys.producer, block_interval_ms=3_600_000)
    caplog.set_level("WARNING", "appchain.audit")
    copy1, head1 = one_window(home, keys, tmp_path, 3, caplog)
    listing1 = sorted(p.name for p in copy1.iterdir())
    copy2, head2 = one_window(home, keys, tmp_path, 2, caplog)
    assert copy2 != copy1 and head2.height == head1.height + 2 and head2.hash != head1.hash
    # The second window's copy is its own: the first one is as it was, nothing nested in it.
    assert sorted(p.name for p in copy1.iterdir()) == listing1
    assert not (copy1 / "store").exists() and not (copy2 / "store").exists()
    assert head_of(copy1) == head1 and head_of(home.store_dir) == head2


def test_the_backup_refuses_an_existing_name_and_the_restore_an_unset_copy(
        tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=2)
    home = make_home(tmp_path / "node0", g, keys.producer, block_interval_ms=3_600_000)
    node = open_node(home)
    try:
        produce(node, 2)
    finally:
        node.close()
    fake = tmp_path / "bin"  # a clock stuck on one second: two backups get one name
    fake.mkdir()
    (fake / "date").write_text("#!/bin/sh\necho 20260101T000000Z\n")
    (fake / "date").chmod(0o755)
    path = f"{fake}{os.pathsep}{os.environ['PATH']}"
    first = backup(tmp_path, 2, PATH=path)
    listing = sorted(p.name for p in first.iterdir())
    again = sh(BACKUP, tmp_path, H="2", PATH=path)
    assert again.returncode != 0 and "exists" in again.stderr.lower()
    assert sorted(p.name for p in first.iterdir()) == listing  # nothing copied into it
    no_h = sh(BACKUP, tmp_path, H="")
    assert no_h.returncode != 0 and "set H to the pin height" in no_h.stderr
    for bad in ("", "nowhere", str(tmp_path / "node0" / "config")):
        out = sh(RESTORE, tmp_path, B=bad)
        assert out.returncode != 0 and out.stdout == ""
        assert head_of(home.store_dir).height == 2  # the store was not removed
