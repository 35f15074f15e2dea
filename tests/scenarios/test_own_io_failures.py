"""The node's own I/O fails (no file descriptor left, a full disk): the producer halts with
the reason in ``status`` and the node keeps serving reads; ``admin resume`` goes on once the
cause is gone. Real node processes; the full disk is a small tmpfs (mounting needs root)."""

from __future__ import annotations

import resource
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from chain.tx import Transfer, make_tx
from node.client.admin_client import AdminClient
from node.client.rpc_client import RPCCallError, RPCClient
from node.dev.local import make_genesis, make_home, running_node
from node.wire_json import b64

T = TypeVar("T")
WAIT_S = 30.0


def poll(fn: Callable[[], T | None], what: str, timeout: float = WAIT_S) -> T:
    """``fn()`` once it is truthy (polled, bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def height(c: RPCClient) -> int:
    return int(c.call("status")["sync_info"]["latest_block_height"])


def admin_url(root: Path) -> str:
    return (root / "data" / "admin_address").read_text().strip()


def halted_status(c: RPCClient) -> dict[str, Any] | None:
    st: dict[str, Any] = c.call("status")
    return st if st["halted"] is not None else None


def test_no_file_descriptor_left_halts_the_producer_and_resume_goes_on(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=2)
    home = make_home(tmp_path / "n", g, keys.producer, block_interval_ms=50)
    alice = keys.accounts[0]
    with running_node(home) as n, RPCClient(n.url) as c:
        poll(lambda: height(c) >= 2, "two blocks")
        pid = n.proc.pid
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        # No new descriptor for the node (a new one must be numbered below the limit, and
        # 0-2 are taken): the next file it opens (the last-signed record of the next block)
        # fails with EMFILE. This client's connection is already open, so status keeps
        # answering over it.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, hard))
        try:
            st = poll(lambda: halted_status(c), "the halt")
            assert c.call("account", address=alice.public_key.hex())["balance"]
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        assert n.proc.poll() is None, n.log()
        assert st["halted"]["check"] == "storage_io"
        assert "Too many open files" in st["halted"]["reason"]
        stopped_at = height(c)
        with AdminClient(admin_url(home.root), keys.operators) as adm:
            adm.resume()
        poll(lambda: height(c) > stopped_at + 2, "blocks after the resume")
        assert c.call("status")["halted"] is None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 192 MiB tmpfs (unmounted afterwards); skipped where mounting is not allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = disk / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_halts_production_keeps_reads_and_resume_goes_on_after(
        small_disk: Path) -> None:
    g, keys = make_genesis(accounts=2)
    home = make_home(small_disk / "n", g, keys.producer, block_interval_ms=50)
    alice, bob = keys.accounts
    with running_node(home) as n, RPCClient(n.url) as c, \
            AdminClient(admin_url(home.root), keys.operators) as adm:
        poll(lambda: height(c) >= 2, "two blocks")
        tx = make_tx(alice, g.chain_id, 0, Transfer(bob.public_key, 5))
        c.call("broadcast_tx_commit", tx=b64(tx.raw))
        filler = fill(small_disk)
        try:
            st = poll(lambda: halted_status(c), "the halt")
            assert n.proc.poll() is None, n.log()
            assert st["halted"]["check"] == "storage_io"
            assert "No space left on device" in st["halted"]["reason"]
            # Reads go on: the head, the account the committed transfer changed.
            assert c.call("account", address=bob.public_key.hex())["balance"]
            stopped_at = height(c)
            # Still full: the resume is refused and the chain stays halted.
            with pytest.raises(RPCCallError, match="free space first"):
                adm.resume()
            assert c.call("status")["halted"] is not None
        finally:
            filler.unlink()
        adm.resume()
        poll(lambda: height(c) > stopped_at + 2, "blocks after the resume")
        assert c.call("status")["halted"] is None
        tx2 = make_tx(alice, g.chain_id, 1, Transfer(bob.public_key, 5))
        res = c.call("broadcast_tx_commit", tx=b64(tx2.raw))
        assert res["tx_result"]["code"] == 0
