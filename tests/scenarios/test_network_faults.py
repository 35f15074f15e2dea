"""Network faults between a producer and its followers, under load, in the style of
CometBFT's e2e perturbations: a reset link, a blackholed link (longer than the follower's
10 s liveness timeout), a follower frozen by SIGSTOP for 10 s, a slow and lossy link, the
producer SIGKILLed mid-load and restarted on the same home and peer port, and (where the
kernel has ``sch_netem``) a follower in its own network namespace behind ``tc netem``.

After each perturbation, the check: every node reaches the producer's height within a
bounded time, every signed header up to there is the same on every node (so the same
blocks and state roots), and every transaction a client was told is committed
(``broadcast_tx_commit`` answered with a height) is in that block on every node. Once the
processes have stopped, every store holds the same block bytes and the same whole state.

The load is the devnet's own (``appchain devnet``: a market maker, traders whose orders
often fail, take-profit/stop-loss, ~15x leveraged traders, liquidations, funding), as in
test_follower.py. Beside it, a committer thread sends ``broadcast_tx_commit`` transfers
from an account the devnet does not use (its key file is moved out of the devnet's key
folder before the devnet starts), one at a time, through the producer and through the
followers that are not being perturbed at that moment (so forwarding is under test too):
its answered transactions are the "accepted" ones that must never be lost. Followers are
our own ``appchain start --follow`` processes, each behind a tests/harness/tcp_proxy.py
proxy that injects the faults.

For the producer kill, the devnet runs with a fixed ``--port P`` (so its producer's peer
port is ``P - 1`` on every run): we SIGKILL its producer child; the devnet sees it die and
exits 1, its load going with it (no transaction is sent to a dead producer anyway); a second
``appchain devnet`` on the same folder and port then restarts the producer on the same home
and peer port with the same load (it reuses the genesis and the home, and its load
generator reads every nonce from the chain again). That is the simplest way to keep the
realistic load on both sides of the kill: the devnet cannot attach to a producer it did not
start, and driving the load generator classes ourselves would be a second, less faithful,
copy of the devnet.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from chain.crypto import PrivateKey
from chain.tx import Transfer, make_tx
from genesis.format import load_genesis
from node.client.rpc_client import NodeUnreachable, RPCCallError, RPCClient
from node.config import Home
from node.dev.local import NodeProcess, make_genesis, make_home
from node.keyfile import read_key
from node.wire_json import b64
from state.store import Store
from tests.harness.tcp_proxy import TcpProxy
from tests.helpers import REPO

BLOCK_MS = 200
DEVNET_LOAD = ["--tps", "100", "--block-interval-ms", str(BLOCK_MS), "--funding-interval-ms",
               "2000", "--oracle-period-ms", "200", "--oracle-sharp-every", "8"]
ACCOUNTS = 12
"""Accounts the devnet trades with; the genesis has two more, for the committer."""

CATCH_UP_S = 60.0
"""Bound for every node to reach the producer's height after a perturbation (it takes a few
seconds; the bound is for a loaded 2-core machine)."""

LIVENESS_S = 10.0
"""The follower's liveness timeout (node/p2p/follower.py LIVENESS_S, docs/PROTOCOL.md §13.2
step 6): 10 s without a frame means the link is dead."""


# -- small helpers ----------------------------------------------------------------------


def wait_for(pred: Callable[[], bool], what: str, timeout: float = CATCH_UP_S,
             every: float = 0.1) -> float:
    """Poll ``pred`` until true; the seconds it took. Fails the test at ``timeout``."""
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(every)
    return time.monotonic() - t0


def status(url: str) -> dict[str, Any]:
    with RPCClient(url, timeout=10) as c:
        return c.call("status")  # type: ignore[no-any-return]


def height(url: str) -> int:
    return int(status(url)["sync_info"]["latest_block_height"])


def connected(url: str) -> bool:
    return bool(status(url)["follower"]["connected"])


def reached(url: str, h: int) -> Callable[[], bool]:
    """A follower connected to its producer and at height ``h`` or above."""
    return lambda: connected(url) and height(url) >= h


def exactly_at(url: str, h: int) -> Callable[[], bool]:
    return lambda: height(url) == h


def disconnected(url: str) -> Callable[[], bool]:
    return lambda: not connected(url)


def batch(url: str, calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """JSON-RPC batches of at most 100 (the server's limit); each answer's whole object."""
    out: list[dict[str, Any]] = []
    with httpx.Client(timeout=30) as http:
        for i in range(0, len(calls), 100):
            chunk = calls[i:i + 100]
            body = [{"jsonrpc": "2.0", "id": j, "method": m, "params": p}
                    for j, (m, p) in enumerate(chunk)]
            answers = http.post(url, json=body).json()
            assert isinstance(answers, list) and len(answers) == len(chunk), answers
            out.extend(sorted(answers, key=lambda a: a["id"]))
    return out


def chain_of(store_dir: Path) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """Every block's bytes (by height) and the whole state at the head."""
    with Store(store_dir, create=False) as s:
        head = s.head()
        assert head is not None
        blocks = [s.block_bytes(h) or b"" for h in range(1, head.height + 1)]
        return blocks, list(s.iter_state())


def same_chain(a: Path, b: Path) -> int:
    ba, sa = chain_of(a)
    bb, sb = chain_of(b)
    assert len(ba) == len(bb), (a, len(ba), b, len(bb))
    for h, (x, y) in enumerate(zip(ba, bb, strict=True), start=1):
        assert x == y, f"block {h} differs between {a} and {b}"
    assert sa == sb, f"the state at the head differs between {a} and {b}"
    return len(ba)


def cli(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def assert_no_traceback(*logs: Path) -> None:
    for log in logs:
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, f"{log}:\n{text[-4000:]}"


# -- the devnet, the committer, the checks ------------------------------------------------


def make_devnet_genesis(root: Path) -> tuple[Path, list[PrivateKey]]:
    """The devnet's genesis, made first with two more accounts than the devnet gets: their
    key files are moved aside (the devnet trades with every ``account-*.json`` it finds)."""
    gdir = root / "genesis"
    r = cli("genesis", "new", "--out", gdir, "--chain-id", "appchain-devnet", "--accounts",
            str(ACCOUNTS + 2), "--funding-interval-ms", "2000")
    assert r.returncode == 0, r.stdout + r.stderr
    spare = root / "spare-keys"
    spare.mkdir()
    keys = []
    for i in (ACCOUNTS, ACCOUNTS + 1):
        f = gdir / "keys" / f"account-{i}.json"
        shutil.move(f, spare / f.name)
        keys.append(read_key(spare / f.name))
    return gdir / "genesis.json", keys


class Devnet:
    """``appchain devnet`` as a background process, its output in a file (a pipe nobody
    reads would fill up and stall it)."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = root
        self.home = root / "node0"
        self.out_path = root / f"devnet-{len(list(root.glob('devnet-*.out'))) + 1}.out"
        self.producer_pid = 0
        for f in ("rpc_address", "p2p_address"):  # a previous run's would mislead
            (self.home / "data" / f).unlink(missing_ok=True)
        self._out: IO[bytes] = open(self.out_path, "wb")  # noqa: SIM115 - lives with the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "devnet", "--home", str(root), "--port",
             str(port), "--accounts", str(ACCOUNTS), *DEVNET_LOAD], cwd=REPO,
            stdout=self._out, stderr=subprocess.STDOUT, env=dict(os.environ,
                                                                 PYTHONUNBUFFERED="1"))
        try:
            wait_for(lambda: self.proc.poll() is not None or
                     re.search(r"node pid (\d+)", self.output()) is not None,
                     "the devnet's producer to answer", timeout=60)
            assert self.proc.poll() is None, f"the devnet exited ({self.proc.returncode})"
        except AssertionError as e:
            self.stop()
            raise AssertionError(f"{e}:\n{self.output()[-3000:]}") from None
        m = re.search(r"node pid (\d+)", self.output())
        assert m is not None
        self.producer_pid = int(m.group(1))
        self.url = (self.home / "data" / "rpc_address").read_text().strip()
        self.peer = (self.home / "data" / "p2p_address").read_text().strip()

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM (the devnet stops its producer cleanly) and the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._out.close()
        self._kill_orphan()
        return self.proc.returncode

    def _kill_orphan(self) -> None:
        """A producer left behind by a devnet that did not stop it (it was SIGKILLed)."""
        try:
            cmd = Path(f"/proc/{self.producer_pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return  # not known, or gone
        if b"start" in cmd and str(self.home).encode() in cmd:
            os.kill(self.producer_pid, signal.SIGKILL)

    def admin(self, *args: str) -> dict[str, Any]:
        key = self.root / "genesis" / "keys" / "operator-0.json"
        r = cli("admin", "--home", self.home, "--key", key, *args)
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout)  # type: ignore[no-any-return]


class Committer:
    """One client, outside the devnet's load: ``broadcast_tx_commit`` transfers, one at a
    time, round robin over ``targets`` (the test changes them to leave out a node it is
    perturbing); ``committed`` holds every transaction answered with a height."""

    def __init__(self, chain_id: str, keys: list[PrivateKey], targets: list[str]) -> None:
        self.chain_id = chain_id
        self.sender, self.to = keys[0], keys[1].public_key
        self.targets = list(targets)
        self.committed: dict[str, int] = {}
        """Transaction hash (hex) -> the height the answer named."""
        self.failures: Counter[str] = Counter()
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="committer", daemon=True)

    def start(self) -> Committer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the committer did not stop"
        if self.error is not None:
            raise AssertionError("the committer failed") from self.error

    def _run(self) -> None:
        try:
            self._commit_until_stopped()
        except Exception as e:  # noqa: BLE001 - raised in the test's thread by stop()
            self.error = e

    def _commit_until_stopped(self) -> None:
        nonce: int | None = None
        for i in itertools.count():
            if self._stop.is_set():
                return
            targets = self.targets
            url = targets[i % len(targets)]
            try:
                with RPCClient(url, timeout=20) as c:
                    if nonce is None:
                        acct = c.call("account", address=self.sender.public_key.hex())
                        nonce = int(acct["next_nonce"])
                    tx = make_tx(self.sender, self.chain_id, nonce, Transfer(self.to, 1))
                    res = c.call("broadcast_tx_commit", tx=b64(tx.raw))
                assert res["hash"] == tx.hash.hex(), res
                self.committed[res["hash"]] = int(res["height"])
                nonce += 1
            except (RPCCallError, NodeUnreachable) as e:
                # Unknown or refused (a node down, a nonce a lagging follower did not know):
                # not counted as accepted; ask for the nonce again.
                self.failures[str(getattr(e, "code", type(e).__name__))] += 1
                nonce = None
                self._stop.wait(0.2)


class Network:
    """The producer's RPC URL and the followers; :meth:`converge` is the check after each
    perturbation. Headers already compared are not fetched again."""

    def __init__(self, producer_url: str, followers: list[NodeProcess],
                 committer: Committer) -> None:
        self.producer_url = producer_url
        self.followers = followers
        self.committer = committer
        self.checked = 0
        self.txs_checked = 0

    @property
    def urls(self) -> list[str]:
        return [self.producer_url, *(f.url for f in self.followers)]

    def converge(self, what: str, timeout: float = CATCH_UP_S) -> float:
        """Every follower connected and at (at least) the producer's height of now, every
        header up to it identical on every node, every committed transaction of the
        committer (so far, up to that height) there on every node. Seconds it took."""
        t0 = time.monotonic()
        top = height(self.producer_url)
        for i, f in enumerate(self.followers, start=1):
            try:
                wait_for(reached(f.url, top), f"{what}: follower {i} to reach height {top}",
                         timeout=max(1.0, timeout - (time.monotonic() - t0)))
            except AssertionError as e:
                raise AssertionError(f"{e}; its log ends:\n{f.log()[-3000:]}") from None
        took = time.monotonic() - t0
        heights = range(self.checked + 1, top + 1)
        headers = [batch(u, [("header", {"height": str(h)}) for h in heights])
                   for u in self.urls]
        for h, answers in zip(heights, zip(*headers, strict=True), strict=True):
            for u, a in zip(self.urls, answers, strict=True):
                assert "result" in a, (what, u, h, a)
            first = answers[0]["result"]
            for u, a in zip(self.urls[1:], answers[1:], strict=True):
                assert a["result"] == first, f"{what}: header {h} differs on {u}"
        self.checked = top
        committed = {tx: h for tx, h in list(self.committer.committed.items()) if h <= top}
        for u in self.urls:
            answers = batch(u, [("tx", {"hash": tx}) for tx in committed])
            for (tx, h), a in zip(committed.items(), answers, strict=True):
                assert "result" in a, f"{what}: committed tx {tx} (height {h}) not on {u}: {a}"
                assert int(a["result"]["height"]) == h, (what, u, tx, h, a)
        self.txs_checked = len(committed)
        for u in self.urls:
            assert status(u)["halted"] is None, (what, u, status(u)["halted"])
        return took

    def halt_and_compare(self, devnet: Devnet) -> int:
        """Halt the producer (a head that stays put, as test_follower.py does), wait for every
        follower to hold exactly that head, and converge; the height."""
        devnet.admin("halt", "--reason", "compare")
        wait_for(lambda: status(self.producer_url)["halted"] is not None, "the halt")
        top = height(self.producer_url)
        for i, f in enumerate(self.followers, start=1):
            wait_for(exactly_at(f.url, top),
                     f"follower {i} to hold the halted head {top}")
        self.checked = min(self.checked, top)
        heights = range(self.checked + 1, top + 1)
        headers = [batch(u, [("header", {"height": str(h)}) for h in heights])
                   for u in self.urls]
        for answers in zip(*headers, strict=True):
            assert all(a == answers[0] for a in answers[1:])
        return top


def stop_node(n: NodeProcess) -> None:
    """For the cleanup: SIGTERM, SIGKILL if it does not stop (never left running)."""
    try:
        n.terminate()
    except subprocess.TimeoutExpired:
        n.kill()


def start_followers(stack: ExitStack, tmp: Path, genesis_file: Path, peers: list[str]
                    ) -> list[NodeProcess]:
    """Follower ``i`` (homes ``tmp/f1``..) following ``peers[i - 1]``, started together
    (each takes a second or two to start); each is stopped when ``stack`` closes."""
    g = load_genesis(genesis_file)
    homes = [make_home(tmp / f"f{i}", g, None) for i in range(1, len(peers) + 1)]
    with ThreadPoolExecutor(len(peers)) as pool:
        started = [pool.submit(NodeProcess, h, follow=p) for h, p in zip(homes, peers,
                                                                          strict=True)]
    out = []
    for fut in started:
        if fut.exception() is None:
            stack.callback(stop_node, fut.result())
            out.append(fut.result())
    for fut in started:
        if (e := fut.exception()) is not None:
            raise e
    return out


# -- the proxy itself -------------------------------------------------------------------


@contextmanager
def echo_server() -> Iterator[str]:
    srv = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        srv.settimeout(0.1)
        while not done.is_set():
            try:
                c, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=echo, args=(c,), daemon=True).start()

    def echo(c: socket.socket) -> None:
        with c:
            while data := _recv(c):
                c.sendall(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{srv.getsockname()[1]}"
    finally:
        done.set()
        t.join(5)
        srv.close()


def _recv(c: socket.socket) -> bytes:
    try:
        return c.recv(65536)
    except OSError:
        return b""


def test_the_proxy_resets_blackholes_delays_and_restores() -> None:
    """The harness itself: each fault does what the scenarios below rely on."""
    with echo_server() as up, TcpProxy(up) as p:
        a = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        a.sendall(b"ping")
        assert a.recv(16) == b"ping"
        # reset: the open connection gets an RST, a new one is reset at once
        p.cut("reset")
        with pytest.raises(ConnectionResetError):
            a.recv(16)
        b = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        with pytest.raises(ConnectionResetError):
            b.recv(16)
        p.restore()
        a = socket.create_connection(("127.0.0.1", p.port), timeout=0.5)
        a.sendall(b"1")
        assert a.recv(16) == b"1"
        # blackhole: silence both ways on open and new connections, nothing refused...
        p.cut("blackhole")
        a.sendall(b"2")
        with pytest.raises(TimeoutError):
            a.recv(16)
        c = socket.create_connection(("127.0.0.1", p.port), timeout=0.5)
        c.sendall(b"3")
        with pytest.raises(TimeoutError):
            c.recv(16)
        d = socket.create_connection(("127.0.0.1", p.port), timeout=0.5)
        d.close()  # a close is not passed on either ...
        time.sleep(0.3)  # (long enough for the proxy to pass it on, if it did)
        assert p.open_connections == 3
        # ... and what was in flight arrives once it heals, as TCP's retransmissions do
        p.restore()
        assert a.recv(16) == b"2" and c.recv(16) == b"3"
        wait_for(lambda: p.open_connections == 2, "the close to be passed on", timeout=5)
        a.settimeout(5)
        # a delay line (each way), and a "lost" chunk stalling the stream
        p.set_faults(delay_ms=100)
        t0 = time.monotonic()
        a.sendall(b"4")
        assert a.recv(16) == b"4"
        assert 0.2 <= time.monotonic() - t0 < 2
        p.set_faults(delay_ms=0, stall_prob=1.0, stall_ms=300)
        t0 = time.monotonic()
        a.sendall(b"5")
        assert a.recv(16) == b"5"
        assert 0.6 <= time.monotonic() - t0 < 3
        assert p.stats.resets == 2 and p.stats.accepted == 5
        for s in (a, b, c):
            s.close()


# -- the scenarios ----------------------------------------------------------------------


@pytest.mark.slow
def test_followers_survive_a_reset_a_blackhole_a_lossy_link_and_a_10s_sigstop(
        tmp_path: Path) -> None:
    """(a) follower 1's link reset for 5 s, (b) follower 2's link blackholed for 12.5 s (more
    than the 10 s liveness timeout: only that timeout can tell), (c) follower 3, whose link
    is slow and lossy throughout (50 ms each way, 5% of chunks stalled 200 ms, as a lost
    segment stalls TCP), frozen by SIGSTOP for 10 s; the devnet's load goes on throughout.
    Each time the others keep up, and then everyone converges."""
    root = tmp_path / "devnet"
    genesis_file, spare = make_devnet_genesis(root)
    with ExitStack() as stack:
        devnet = Devnet(root)
        stack.callback(devnet.stop)
        proxies = [stack.enter_context(TcpProxy(devnet.peer)),
                   stack.enter_context(TcpProxy(devnet.peer)),
                   stack.enter_context(TcpProxy(devnet.peer, delay_ms=50, stall_prob=0.05,
                                                stall_ms=200, seed=5))]
        f1, f2, f3 = fs = start_followers(stack, tmp_path, genesis_file,
                                          [p.address for p in proxies])
        chain_id = load_genesis(genesis_file).chain_id
        committer = Committer(chain_id, spare, [devnet.url, *(f.url for f in fs)]).start()
        stack.callback(committer.stop)
        net = Network(devnet.url, fs, committer)
        wait_for(lambda: height(devnet.url) >= 10, "the devnet to make 10 blocks")
        net.converge("start")
        everyone = [devnet.url, f1.url, f2.url, f3.url]

        # (a) reset: follower 1 sees the link fail at once and cannot reconnect for 5 s.
        committer.targets = [u for u in everyone if u != f1.url]
        resets = proxies[0].stats.resets
        proxies[0].cut("reset")
        t0 = time.monotonic()
        wait_for(lambda: not connected(f1.url), "follower 1 to see the reset", timeout=5)
        h1 = height(f1.url)
        time.sleep(max(0.0, 5 - (time.monotonic() - t0)))  # (the perturbation: 5 s cut)
        assert height(f1.url) == h1  # nothing came through the cut link
        assert proxies[0].stats.resets > resets + 1  # it tried again (and was reset)
        assert height(devnet.url) >= h1 + 10  # the chain went on without it
        proxies[0].restore()
        print(f"(a) reset 5 s: caught up {net.converge('after the reset'):.1f}s after")

        # (b) blackhole: no error, no byte; only the liveness timeout tells follower 2.
        committer.targets = [u for u in everyone if u != f2.url]
        proxies[1].cut("blackhole")
        t0 = time.monotonic()
        at_cut = height(devnet.url)  # (read after the cut: no later block can reach f2)
        took = wait_for(lambda: not connected(f2.url), "follower 2 to give up on the dead link",
                        timeout=LIVENESS_S + 2.4)
        assert took >= LIVENESS_S - 2, f"gave up after {took:.1f}s: not by the liveness timeout"
        h2 = height(f2.url)
        assert h2 <= at_cut  # (at most what was already on its way)
        time.sleep(max(0.0, 12.5 - (time.monotonic() - t0)))  # (the perturbation: 12.5 s)
        assert height(f2.url) == h2 and not connected(f2.url)
        proxies[1].restore()
        print(f"(b) blackhole 12.5 s, dead link seen after {took:.1f}s: caught up "
              f"{net.converge('after the blackhole'):.1f}s after")

        # (c) SIGSTOP for 10 s the follower on the lossy link; the others keep up meanwhile.
        committer.targets = [u for u in everyone if u != f3.url]
        os.kill(f3.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            p0 = height(devnet.url)
            time.sleep(5)  # (the perturbation: 10 s frozen, in two halves)
            p5 = height(devnet.url)
            for f in (f1, f2):
                wait_for(reached(f.url, p5), "a follower to keep up", timeout=5)
            time.sleep(max(0.0, 10 - (time.monotonic() - t0)))
            assert height(devnet.url) >= p0 + 15, "the producer stalled with a follower frozen"
        finally:
            os.kill(f3.proc.pid, signal.SIGCONT)
        print(f"(c) SIGSTOP 10 s: caught up {net.converge('after SIGCONT'):.1f}s after")
        committer.targets = everyone

        # The end: the producer halted at a head that stays put; all hold it.
        wait_for(lambda: len(committer.committed) > net.txs_checked + 5, "more commits")
        committer.stop()
        net.converge("at the end")
        assert net.txs_checked >= 50, committer.failures  # the check checked something
        top = net.halt_and_compare(devnet)
        assert devnet.stop() == 0, devnet.output()[-3000:]
        for f in fs:
            assert f.terminate() == 0
    for f in fs:
        assert same_chain(root / "node0" / "data" / "store", f.home.store_dir) == top
    assert "liquidations" in devnet.output()
    assert_no_traceback(devnet.home / "node.log", *(f.log_path for f in fs))


def free_port_triple() -> int:
    """A port P with P - 1, P and P + 2 free (the devnet's peer, RPC and operator ports)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = int(s.getsockname()[1])
        socks = []
        try:
            for q in (p - 1, p, p + 2):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", q))
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free port triple")


@pytest.mark.slow
def test_the_producer_sigkilled_under_load_restarts_on_its_port_and_loses_nothing(
        tmp_path: Path) -> None:
    """(d) SIGKILL the producer mid-load, with two followers attached (one through a proxy,
    one straight to its peer port) and the committer sending through all three; restart it
    on the same home and peer port (a second devnet run, module docstring): both followers
    reconnect by themselves, nothing forks, and every transaction whose commit was answered
    before the kill is in its block on every node."""
    root = tmp_path / "devnet"
    genesis_file, spare = make_devnet_genesis(root)
    port = free_port_triple()
    with ExitStack() as stack:
        devnet = Devnet(root, port)
        stack.callback(devnet.stop)
        peer = devnet.peer
        assert peer == f"127.0.0.1:{port - 1}"
        proxy = stack.enter_context(TcpProxy(peer))
        f1, f2 = fs = start_followers(stack, tmp_path, genesis_file, [proxy.address, peer])
        chain_id = load_genesis(genesis_file).chain_id
        committer = Committer(chain_id, spare, [devnet.url, f1.url, f2.url]).start()
        stack.callback(committer.stop)
        net = Network(devnet.url, fs, committer)
        wait_for(lambda: height(devnet.url) >= 15 and len(committer.committed) >= 40,
                 "blocks and commits before the kill")
        net.converge("before the kill")
        wait_for(lambda: status(devnet.url)["mempool"]["size"] > 0, "load in the mempool")

        os.kill(devnet.producer_pid, signal.SIGKILL)  # mid-block, mid-load
        before = dict(committer.committed)  # every answer given before the kill
        t0 = time.monotonic()
        wait_for(lambda: devnet.proc.poll() is not None, "the devnet to see its producer die",
                 timeout=30)
        assert devnet.proc.returncode != 0, devnet.output()[-3000:]
        for f in fs:
            wait_for(disconnected(f.url), "a follower to see the producer gone",
                     timeout=10)
        dead = max(height(f.url) for f in fs)

        # The same folder and port: the producer on the same home and peer port, same load.
        devnet2 = Devnet(root, port)
        stack.callback(devnet2.stop)
        assert devnet2.peer == peer and devnet2.url == devnet.url
        restarted = time.monotonic() - t0
        took = net.converge("after the producer's restart")
        assert height(devnet.url) > dead  # it went on from where it was
        wait_for(lambda: len(committer.committed) > len(before) + 5, "commits after the restart")
        committer.stop()
        net.converge("at the end")
        top = net.halt_and_compare(devnet2)
        assert devnet2.stop() == 0, devnet2.output()[-3000:]
        for f in fs:
            assert f.terminate() == 0
        print(f"producer down and restarted in {restarted:.1f}s, followers caught up "
              f"{took:.1f}s later; {len(before)} commits before the kill")
    for f in fs:
        assert same_chain(root / "node0" / "data" / "store", f.home.store_dir) == top
    with Store(root / "node0" / "data" / "store", create=False) as s:
        for tx, h in before.items():
            loc = s.tx_location(bytes.fromhex(tx))
            assert loc is not None and loc[0] == h, (tx, h, loc)
    assert_no_traceback(*(f.log_path for f in fs))
    assert "Traceback" not in (devnet.output() + devnet2.output())


@pytest.mark.slow
def test_after_a_good_session_a_follower_reconnects_within_the_first_backoff(
        tmp_path: Path) -> None:
    """docs/OPERATIONS.md §15: a follower "reconnects by itself (0.2 s, doubling to 5 s) when
    the link breaks". A link that was down long enough for the backoff to reach 5 s, then
    healthy again, then broken for an instant: the follower should be back within about the
    first step, not wait the 5 s it reached during the earlier outage."""
    g, keys = make_genesis(accounts=2)
    p = make_home(tmp_path / "p", g, keys.producer, block_interval_ms=100)
    fh = make_home(tmp_path / "f", g, None)
    with ExitStack() as stack:
        producer = NodeProcess(p)
        stack.callback(stop_node, producer)
        proxy = stack.enter_context(TcpProxy(producer.p2p))
        f = NodeProcess(fh, follow=proxy.address)
        stack.callback(stop_node, f)
        wait_for(lambda: connected(f.url) and height(f.url) >= 3, "the follower to sync")
        proxy.cut("reset")
        # (the perturbation: a 4 s outage; the follower retries after 0.2, 0.4, 0.8, 1.6 s,
        # all reset, then after 3.2 s, 6.2 s in, which gets through: its backoff is at 5 s)
        time.sleep(4)
        proxy.restore()
        wait_for(lambda: connected(f.url), "the follower to reconnect", timeout=15)
        h = height(f.url)
        wait_for(lambda: height(f.url) >= h + 10, "the follower to follow again (1 s of blocks)")
        # A blip on a link that has been fine for a while.
        n = proxy.stats.accepted
        t0 = time.monotonic()
        proxy.cut("reset")
        proxy.restore()
        wait_for(lambda: proxy.stats.accepted > n, "the follower to reconnect", timeout=15)
        took = proxy.stats.accept_times[n] - t0
        wait_for(lambda: connected(f.url), "the follower to be connected again", timeout=15)
        assert took < 2.0, f"reconnected {took:.1f}s after a blip on a healthy link"
        assert f.terminate() == 0 and producer.terminate() == 0


# -- a follower in its own network namespace, behind tc netem ---------------------------

NETEM = ["netem", "delay", "50ms", "loss", "5%"]
"""What `tc qdisc add dev VETH root ...` puts on both ends of the follower's veth pair."""


class NetnsUnavailable(Exception):
    pass


def _ip(*args: str) -> None:
    cmd = list(args)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except FileNotFoundError as e:
        raise NetnsUnavailable(f"`{' '.join(cmd)}`: {e}") from None
    if r.returncode != 0:
        raise NetnsUnavailable(f"`{' '.join(cmd)}` failed ({r.returncode}): "
                               f"{(r.stderr or r.stdout).strip()}")


@contextmanager
def netns_link() -> Iterator[tuple[str, str, str]]:
    """A network namespace joined to ours by a veth pair with NETEM on both ends; yields
    (namespace, our address, its address). Raises NetnsUnavailable (saying which command
    failed and how) where the machine cannot."""
    if os.geteuid() != 0:
        raise NetnsUnavailable(f"not root (euid {os.geteuid()}): `ip netns add` needs root")
    tag = f"{os.getpid() % 100_000}"
    ns, ours, theirs = f"appchain-nf-{tag}", f"anf{tag}a", f"anf{tag}b"
    subnet = f"10.213.{os.getpid() % 250}"
    here, there = f"{subnet}.1", f"{subnet}.2"
    cleanup: list[list[str]] = []
    try:
        _ip("ip", "netns", "add", ns)
        cleanup.append(["ip", "netns", "del", ns])
        _ip("ip", "link", "add", ours, "type", "veth", "peer", "name", theirs)
        cleanup.append(["ip", "link", "del", ours])
        _ip("ip", "link", "set", theirs, "netns", ns)
        _ip("ip", "addr", "add", f"{here}/30", "dev", ours)
        _ip("ip", "link", "set", ours, "up")
        _ip("ip", "-n", ns, "addr", "add", f"{there}/30", "dev", theirs)
        _ip("ip", "-n", ns, "link", "set", theirs, "up")
        _ip("ip", "-n", ns, "link", "set", "lo", "up")
        _ip("tc", "qdisc", "add", "dev", ours, "root", *NETEM)
        _ip("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", theirs, "root", *NETEM)
        yield ns, here, there
    finally:
        for cmd in reversed(cleanup):
            subprocess.run(cmd, capture_output=True, timeout=10)


@pytest.mark.slow
def test_a_follower_in_its_own_network_namespace_behind_netem_follows(tmp_path: Path) -> None:
    """A follower in its own network namespace, joined by a veth pair with ``netem delay
    50ms loss 5%`` on both ends (real packet loss, real TCP retransmissions), follows the
    devnet under load: same chain at the end. Skipped where the machine has no network
    namespaces or no sch_netem (the reason names the command and its error); the proxy's
    delay and stall emulation covers a slow, lossy link either way (follower 3 above)."""
    with ExitStack() as stack:
        try:
            ns, here, there = stack.enter_context(netns_link())
        except NetnsUnavailable as e:
            pytest.skip(f"no netns with netem here (kernel {os.uname().release}): {e}")
        root = tmp_path / "devnet"
        genesis_file, _ = make_devnet_genesis(root)
        devnet = Devnet(root)
        stack.callback(devnet.stop)
        # The producer listens on 127.0.0.1 of our namespace: a plain forwarder on our end
        # of the veth reaches it (every byte of the follower's link crosses the veth).
        proxy = stack.enter_context(TcpProxy(devnet.peer, listen_host=here))
        home = make_home(tmp_path / "fns", load_genesis(genesis_file), None)
        cfg = home.load_config()
        home.write_config(replace(cfg, rpc=replace(cfg.rpc, laddr=f"tcp://{there}:0")))
        f = NetnsNode(home, ns, follow=proxy.address)
        stack.callback(f.terminate)
        wait_for(lambda: height(devnet.url) >= 40, "the devnet to make 40 blocks", timeout=90)
        wait_for(lambda: connected(f.url) and height(f.url) >= height(devnet.url) - 1,
                 "the follower behind netem to keep up")
        assert proxy.stats.bytes_down > 0
        top = _halt_and_wait(devnet, [f.url])
        assert devnet.stop() == 0, devnet.output()[-3000:]
        assert f.terminate() == 0
    assert same_chain(root / "node0" / "data" / "store", home.store_dir) == top
    assert_no_traceback(home.root / "node.log")


def _halt_and_wait(devnet: Devnet, urls: list[str]) -> int:
    devnet.admin("halt", "--reason", "compare")
    wait_for(lambda: status(devnet.url)["halted"] is not None, "the halt")
    top = height(devnet.url)
    for u in urls:
        wait_for(exactly_at(u, top), f"{u} to hold the halted head")
    return top


class NetnsNode:
    """`appchain start` inside a network namespace (``ip netns exec``, which execs the
    node: the child's pid is the node's)."""

    def __init__(self, home: Home, ns: str, *, follow: str) -> None:
        self.home = home
        self.log_path = home.root / "node.log"
        (home.data_dir / "rpc_address").unlink(missing_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives with the child
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "node.cli", "start", "--home",
             str(home.root), "--follow", follow], stdout=self._log, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=REPO)
        addr = home.data_dir / "rpc_address"
        wait_for(lambda: addr.exists() or self.proc.poll() is not None, "the node to start",
                 timeout=30)
        assert self.proc.poll() is None, self.log_path.read_text(errors="replace")
        self.url = addr.read_text().strip()

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()
        return self.proc.returncode
