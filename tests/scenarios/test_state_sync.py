"""State sync on real processes and real TCP: a fresh follower started with ``--state-sync``
takes a peer's state under the devnet's own load (orders, TP/SL, leveraged traders,
liquidations, funding), checks it against the producer-signed header, then follows; it
agrees with the producer on every block after its start height and on the whole state, can
serve its state to a third node, and survives a restart. A peer that sends a state which
does not recompute to the signed root, or whose root is not the one the producer signed, is
refused before anything is written."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from chain.codec import encode
from genesis.format import load_genesis
from node.dev.local import NodeProcess, make_genesis, make_home, running_node
from node.p2p.wire import (
    SNAPSHOT_CHUNK,
    VERSION,
    Hello,
    Message,
    SnapshotBegin,
    SnapshotChunk,
    SnapshotEnd,
    SnapshotRequest,
    decode,
)
from node.p2p.wire import encode as frame
from state.recovery.snapshot_file import MAGIC, SnapshotReader, export
from state.store import Store
from tests.helpers import REPO
from tests.scenarios.test_follower import chain_of, height, status, wait_for

BLOCKS = 90


def test_a_fresh_follower_state_syncs_under_load_and_agrees_on_every_root(tmp_path: Path
                                                                          ) -> None:
    root = tmp_path / "devnet"
    devnet = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "devnet", "--home", str(root), "--blocks",
         str(BLOCKS), "--block-interval-ms", "100", "--port", "0", "--tps", "150",
         "--accounts", "12", "--funding-interval-ms", "2000", "--oracle-period-ms", "200",
         "--oracle-sharp-every", "8"], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    p2p_file = root / "node0" / "data" / "p2p_address"
    rpc_file = root / "node0" / "data" / "rpc_address"
    wait_for(rpc_file.exists, "the devnet's producer to listen")
    peer, purl = p2p_file.read_text().strip(), rpc_file.read_text().strip()
    g = load_genesis(root / "genesis" / "genesis.json")
    h1, h2 = (make_home(tmp_path / f"f{i}", g, None) for i in (1, 2))
    f1 = f2 = None
    try:
        wait_for(lambda: height(purl) >= 30, "the devnet to reach height 30")
        f1 = NodeProcess(h1, follow=peer, state_sync=True)
        synced_at = int(_imported_height(f1))
        assert synced_at >= 30
        # It did not replay the chain: the earliest block it can serve is the next one.
        assert status(f1.url)["sync_info"]["earliest_block_height"] == str(synced_at + 1)
        wait_for(lambda: height(f1.url) >= synced_at + 5, "follower 1 to follow on")
        # A state-synced follower serves its own state to the next one.
        f2 = NodeProcess(h2, follow=f1.p2p, state_sync=True)
        synced2 = int(_imported_height(f2))
        assert synced2 >= synced_at
        # SIGKILL, restart (on the same peer port, which follower 2 follows): a state-synced
        # home starts like any other
        cfg = h1.load_config()
        h1.write_config(replace(cfg, p2p=replace(cfg.p2p, laddr=f"tcp://{f1.p2p}")))
        f1.kill()
        f1 = NodeProcess(h1, follow=peer, state_sync=True)
        assert "state sync skipped: the store already holds height" in f1.log()
        assert f1.log().count("state sync: imported height") == 1
        out, _ = devnet.communicate(timeout=300)
        assert devnet.returncode == 0, out.decode(errors="replace")[-3000:]
        # The devnet stopped its producer at BLOCKS; both followers reach it.
        for f in (f1, f2):
            wait_for(lambda f=f: height(f.url) >= BLOCKS, "a follower at the devnet's head")
        for f in (f1, f2):
            assert f.terminate() == 0
    finally:
        for f in (f1, f2):
            if f is not None:
                f.terminate()
        if devnet.poll() is None:
            devnet.kill()
    pblocks, pstate = chain_of(root / "node0" / "data" / "store")
    for home, start in ((h1, synced_at), (h2, synced2)):
        with Store(home.store_dir) as s:
            head = s.head()
            assert head is not None and head.height == len(pblocks)
            assert s.block_bytes(start) is None  # nothing below the synced height
            for hh in range(start + 1, head.height + 1):
                assert s.block_bytes(hh) == pblocks[hh - 1], f"block {hh} differs"
            assert list(s.iter_state()) == pstate
        assert not list((home.data_dir / "state_sync").glob("*"))  # the download is gone


def _imported_height(n: NodeProcess) -> str:
    """The height the follower's log says it imported (it is serving once rpc is up)."""
    for line in n.log().splitlines():
        if "state sync: imported height" in line:
            return line.split("imported height ")[1].split()[0]
    raise AssertionError(f"no state sync in the log:\n{n.log()}")


# -- a hostile peer ---------------------------------------------------------------------------


class Frames:
    """Blocking frames over a socket (the fake peer's side of the protocol)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(10)

    def _exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise OSError("closed")
            buf += chunk
        return buf

    def receive(self) -> Message:
        return decode(self._exactly(int.from_bytes(self._exactly(4), "big")))

    def send(self, msg: Message) -> None:
        self.sock.sendall(frame(msg))


@contextmanager
def fake_peer(hello: Hello, snapshot: bytes) -> Iterator[str]:
    """A peer that answers every ``snapshot_request`` with ``snapshot`` (any bytes)."""
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                fs = Frames(conn)
                try:
                    fs.receive()
                    fs.send(hello)
                    assert isinstance(fs.receive(), SnapshotRequest)
                    fs.send(SnapshotBegin(1, 0, len(snapshot), []))
                    for i in range(0, len(snapshot), SNAPSHOT_CHUNK):
                        fs.send(SnapshotChunk(snapshot[i:i + SNAPSHOT_CHUNK]))
                    fs.send(SnapshotEnd(hashlib.sha256(snapshot).digest()))
                except (OSError, AssertionError):
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        t.join(5)
        srv.close()


def _rewritten(path: Path, change_value: bool, change_root: bool) -> bytes:
    """A snapshot file with one state value changed (and, if asked, the header's root made
    to match the changed state), its count and digest made right again."""
    with SnapshotReader(path) as r:
        hdr, pairs = r.header, list(r.pairs())
    k, v = pairs[0]
    if change_value:
        pairs[0] = (k, v + b"\x00")
    if change_root:
        hdr = replace(hdr, state_root=bytes(32))
    body = b"".join(encode([k, v]) for k, v in pairs)
    trailer = encode({"count": len(pairs), "sha256": hashlib.sha256(body).digest()})
    return MAGIC + encode(hdr.to_obj()) + body + trailer


def test_a_state_that_is_not_the_signed_one_is_refused_and_nothing_is_written(
        tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=3)
    p = make_home(tmp_path / "p", g, keys.producer, block_interval_ms=50)
    with running_node(p) as pn:
        wait_for(lambda: height(pn.url) >= 3, "a few blocks")
        assert pn.terminate() == 0
    good = tmp_path / "good.snapshot"
    with Store(p.store_dir) as s:
        hdr = export(s, good, "t")
    hello = Hello(VERSION, g.chain_id, g.hash, "producer", 0, hdr.height, hdr.block_hash, "")
    cases = {
        "recomputes to root": _rewritten(good, change_value=True, change_root=False),
        "signed header is for another block or root": _rewritten(good, change_value=True,
                                                                 change_root=True),
        "not an appchain snapshot file": b"garbage" * 10,
    }
    for i, (why, data) in enumerate(cases.items()):
        f = make_home(tmp_path / f"f{i}", g, None)
        with fake_peer(hello, data) as addr:
            r = subprocess.run([sys.executable, "-m", "node.cli", "start", "--home",
                                str(f.root), "--follow", addr, "--state-sync"], cwd=REPO,
                               capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, r.stdout + r.stderr
        err = r.stderr.strip().splitlines()[-1]
        assert err.startswith("Error: the snapshot is refused") and why in err, err
        assert "Traceback" not in r.stderr
        with Store(f.store_dir) as s:
            assert s.head() is None  # nothing imported
    # The unchanged file is accepted (so the refusals above are the checks, not the peer).
    f = make_home(tmp_path / "ok", g, None)
    with fake_peer(hello, good.read_bytes()) as addr:
        fn = NodeProcess(f, follow=addr, state_sync=True)
        try:
            info = status(fn.url)["sync_info"]
            assert info["latest_block_height"] == str(hdr.height)
            assert info["latest_app_hash"] == hdr.state_root.hex()
        finally:
            fn.kill()


def test_state_sync_from_another_chain_is_refused_at_once(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=3)
    other, okeys = make_genesis(accounts=3, chain_id="other-chain")
    p = make_home(tmp_path / "p", other, okeys.producer, block_interval_ms=50)
    f = make_home(tmp_path / "f", g, None)
    with running_node(p) as pn:
        r = subprocess.run([sys.executable, "-m", "node.cli", "start", "--home", str(f.root),
                            "--follow", pn.p2p, "--state-sync"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "other-chain" in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
