"""Follower nodes on real processes and real TCP: block sync under the devnet's own load,
survival of SIGKILL and SIGSTOP, a rollback that reaches the followers by certificate (also
one that was offline for the whole recovery), and a divergence that halts a follower.

The load is `appchain devnet` (orders that fail, take-profit/stop-loss, leveraged traders,
liquidations, funding); followers are `appchain start --follow HOST:PORT` processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import msgpack

from chain.tx import Transfer, make_tx
from genesis.format import load_genesis
from node.client.rpc_client import RPCClient
from node.config import Home
from node.dev.local import NodeProcess, make_genesis, make_home, running_node
from node.wire_json import b64
from state import schema
from state.records import Account
from state.schema import STATE, account_key
from state.store import Store
from tests.helpers import REPO

BLOCKS = 120
ROLLBACK_TO = 40


def cli(*args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def height(url: str) -> int:
    with RPCClient(url) as c:
        return int(c.call("status")["sync_info"]["latest_block_height"])


def status(url: str) -> dict[str, Any]:
    with RPCClient(url) as c:
        return c.call("status")  # type: ignore[no-any-return]


def wait_for(pred: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def chain_of(store_dir: Path) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """Every block's bytes (by height) and the whole state at the head."""
    with Store(store_dir) as s:
        head = s.head()
        assert head is not None
        blocks = [s.block_bytes(h) or b"" for h in range(1, head.height + 1)]
        return blocks, list(s.iter_state())


def same_chain(a: Path, b: Path) -> int:
    ba, sa = chain_of(a)
    bb, sb = chain_of(b)
    assert len(ba) == len(bb), (len(ba), len(bb))
    for h, (x, y) in enumerate(zip(ba, bb, strict=True), start=1):
        assert x == y, f"block {h} differs"
    assert sa == sb
    return len(ba)


def test_followers_follow_the_devnet_through_kills_stops_and_a_rollback(tmp_path: Path
                                                                       ) -> None:
    root = tmp_path / "devnet"
    devnet = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "devnet", "--home", str(root), "--blocks",
         str(BLOCKS), "--block-interval-ms", "100", "--port", "0", "--tps", "150",
         "--accounts", "12", "--funding-interval-ms", "2000", "--oracle-period-ms", "200",
         "--oracle-sharp-every", "8"], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    p2p_file = root / "node0" / "data" / "p2p_address"
    wait_for(p2p_file.exists, "the devnet's producer to listen")
    peer = p2p_file.read_text().strip()
    g = load_genesis(root / "genesis" / "genesis.json")
    homes = [make_home(tmp_path / f"f{i}", g, None) for i in (1, 2)]
    f1 = NodeProcess(homes[0], follow=peer)
    f2 = NodeProcess(homes[1], follow=peer)
    try:
        wait_for(lambda: height(f1.url) >= 30, "follower 1 to sync 30 blocks")
        f1.kill()  # SIGKILL mid-sync, restart: it goes on from its own head
        f1 = NodeProcess(homes[0], follow=peer)
        wait_for(lambda: height(f2.url) >= 50, "follower 2 to sync 50 blocks")
        os.kill(f2.proc.pid, signal.SIGSTOP)
        time.sleep(3)  # (the perturbation itself: a follower frozen for 3 s)
        os.kill(f2.proc.pid, signal.SIGCONT)
        out, _ = devnet.communicate(timeout=300)
        assert devnet.returncode == 0, out.decode(errors="replace")[-3000:]
        # The devnet stopped its producer: start it again where the followers look for it.
        h0 = Home(root / "node0")
        cfg = h0.load_config()
        h0.write_config(replace(cfg, p2p=replace(cfg.p2p, laddr=f"tcp://{peer}")))
        producer = NodeProcess(h0)
        try:
            # Both followers reach the producer's head; the frozen one reports its lag.
            # (each reconnects by itself, with backoff, to the restarted producer)
            for f in (f1, f2):
                wait_for(lambda f=f: status(f.url)["follower"]["connected"] and
                         height(f.url) >= height(producer.url) - 1 and
                         height(f.url) >= BLOCKS, "a follower to reconnect and catch up")
            st = status(f1.url)
            assert st["producer_info"]["producing"] is False and st["halted"] is None
            err = httpx.post(f1.url, json={  # forwarded to the restarted producer: its answer
                "jsonrpc": "2.0", "id": 1, "method": "broadcast_tx_sync",
                "params": {"tx": b64(b"\x00" * 8)}}, timeout=30).json()
            assert err["error"]["code"] == 1001, err
            # The incident, on the network: f2 is offline for the whole recovery.
            assert f2.terminate() == 0
            key = root / "genesis" / "keys" / "operator-0.json"
            home0 = root / "node0"

            def admin(*args: str) -> dict[str, Any]:
                r = cli("admin", "--home", home0, "--key", key, *args)
                assert r.returncode == 0, r.stdout + r.stderr
                return json.loads(r.stdout)  # type: ignore[no-any-return]

            admin("halt", "--reason", "incident")
            wait_for(lambda: status(f1.url)["follower"]["producer_halt"] is not None,
                     "follower 1 to show the producer's halt")
            admin("rollback", "--to-height", str(ROLLBACK_TO), "--reason", "incident")
            admin("cancel-orders", "--keep", "take-profit,stop-loss")
            admin("replay")
            admin("resume")
            wait_for(lambda: int(status(producer.url)["sync_info"]["era"]) == 1, "era 1")
            f2 = NodeProcess(homes[1], follow=peer)
            for f in (f1, f2):
                wait_for(lambda f=f: status(f.url)["sync_info"]["era"] == "1" and
                         height(f.url) >= height(producer.url) - 1, "a follower on era 1",
                         timeout=120)
            assert status(f1.url)["follower"]["rollbacks"] == "1"
            admin("halt", "--reason", "compare")  # a head that stays put, to compare at
            top = height(producer.url)
            for f in (f1, f2):
                wait_for(lambda f=f: height(f.url) == top, "a follower at the producer's head")
        finally:
            final = producer.terminate()
        assert final == 0
    finally:
        for f in (f1, f2):
            f.terminate()
        if devnet.poll() is None:
            devnet.kill()
    for h in homes:
        n = same_chain(root / "node0" / "data" / "store", h.store_dir)
        assert n >= BLOCKS
    # The abandoned blocks were archived on the follower that followed the rollback, as on
    # the producer (the offline one never held them: it left its era-0 tail by rollback too).
    with Store(root / "node0" / "data" / "store") as ps, Store(homes[0].store_dir) as fs:
        archived = [k for k, _ in fs.db.iterator(prefix=schema.ARCHIVE)]
        assert archived and archived == [k for k, _ in ps.db.iterator(prefix=schema.ARCHIVE)]


def test_a_follower_whose_store_was_changed_halts_on_the_next_block_saying_where(
        tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=3)
    p = make_home(tmp_path / "p", g, keys.producer, block_interval_ms=50)
    f = make_home(tmp_path / "f", g, None)
    sender, to = keys.accounts[0], keys.accounts[1]
    with running_node(p) as pn:
        with running_node(f, follow=pn.p2p) as fn:
            wait_for(lambda: height(fn.url) >= 5, "the follower to sync")
            assert fn.terminate() == 0
        # A balance changed in the follower's raw store (bad disk, bad hands).
        with Store(f.store_dir) as s:
            k = STATE + account_key(sender.public_key)
            acct = Account.decode(s.db.get(k) or b"")
            s.db.put(k, Account(acct.balance + 1, acct.nonce).encode())
        with running_node(f, follow=pn.p2p) as fn, RPCClient(pn.url) as c:
            tx = make_tx(sender, g.chain_id, 0, Transfer(to.public_key, 10))
            res = c.call("broadcast_tx_commit", tx=b64(tx.raw))
            assert res["tx_result"]["code"] == 0, res
            at = int(res["height"])
            wait_for(lambda: status(fn.url)["halted"] is not None, "the follower to halt")
            halt = status(fn.url)["halted"]
            assert halt["check"] == "divergence" and halt["by"] == "node"
            assert halt["evidence"]["height"] == str(at)
            # The first differing key is named, with the stored value against the tree's.
            ev = halt["evidence"]
            assert ev["check"] == "stored_state", ev
            assert ev["keys"][0]["key"] == account_key(sender.public_key).hex()
            assert ev["keys"][0]["stored_value_hash"] != ev["keys"][0]["tree_value_hash"]
            assert height(fn.url) == at - 1  # nothing of the block was written
            time.sleep(0.5)
            assert height(fn.url) == at - 1  # and it stays halted while blocks go on
            assert height(pn.url) > at


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _read_frame(sock: socket.socket) -> dict[str, Any]:
    sock.settimeout(10)
    buf = b""
    while len(buf) < 4:
        chunk = sock.recv(4 - len(buf))
        assert chunk, "closed before a frame"
        buf += chunk
    (n,) = struct.unpack(">I", buf)
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        assert chunk
        body += chunk
    return msgpack.unpackb(body)  # type: ignore[no-any-return]


def test_hostile_peers_are_dropped_with_a_reason_and_the_producer_goes_on(tmp_path: Path
                                                                         ) -> None:
    g, keys = make_genesis(accounts=2)
    p = make_home(tmp_path / "p", g, keys.producer, block_interval_ms=50)
    with running_node(p) as pn:
        host, port = pn.p2p.rsplit(":", 1)
        hello = {"t": "hello", "version": 1, "chain_id": "other-chain",
                 "genesis_hash": bytes(32), "role": "follower", "era": 0, "height": 0,
                 "head_hash": bytes(32), "rpc": ""}
        cases = {
            "wrong_chain": _frame(msgpack.packb(hello)),
            "oversized": struct.pack(">I", 2**31),
            "bad_frame": _frame(b"\xc1 not msgpack"),
        }
        for want, data in cases.items():
            with socket.create_connection((host, int(port))) as s:
                s.sendall(data)
                err = _read_frame(s)
                assert err["t"] == "error" and err["reason"] == want, err
        # A peer that connects and says nothing is dropped at the handshake timeout; one
        # that sends half a frame too. Neither stops the producer.
        idle = socket.create_connection((host, int(port)))
        half = socket.create_connection((host, int(port)))
        half.sendall(struct.pack(">I", 1000) + b"abc")
        h0 = height(pn.url)
        wait_for(lambda: height(pn.url) >= h0 + 10, "the producer to go on")
        idle.close()
        half.close()
        log = pn.log()
        assert "dropped: peer is on chain 'other-chain'" in log
        assert "Traceback" not in log
        assert pn.terminate() == 0
