"""Connection and request limits of both HTTP servers (node/api/http_server.py), against real
node processes over real sockets: a flood of connections past the cap under a 1,024
descriptor limit, the header, body and idle timeouts, the body limit while streaming, client
disconnects, and a port already taken at start."""

from __future__ import annotations

import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from chain.tx import Transfer, make_tx
from node.api.http_server import BUSY, TIMEOUT
from node.client.rpc_client import RPCClient
from node.config import Home
from node.dev.local import NodeProcess, make_genesis, make_home, running_node
from node.wire_json import b64

T = TypeVar("T")
WAIT_S = 30.0
REPO = Path(__file__).resolve().parents[2]


def poll(fn: Callable[[], T | None], what: str, timeout: float = WAIT_S) -> T:
    """``fn()`` once it is truthy (polled, bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def configure(home: Home, **sections: dict[str, Any]) -> None:
    cfg = home.load_config()
    for name, values in sections.items():
        cfg = replace(cfg, **{name: replace(getattr(cfg, name), **values)})
    home.write_config(cfg)


def node_home(tmp_path: Path, **sections: dict[str, Any]) -> Home:
    g, keys = make_genesis(accounts=2)
    home = make_home(tmp_path / "n", g, keys.producer, block_interval_ms=100)
    configure(home, **sections)
    return home


def addr(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
    return host, int(port)


def admin_url(home: Home) -> str:
    return (home.data_dir / "admin_address").read_text().strip()


def connect(url: str) -> socket.socket:
    s = socket.create_connection(addr(url), timeout=WAIT_S)
    return s


def read_response(s: socket.socket, timeout: float = WAIT_S) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a content-length (status, headers, body)."""
    s.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full response head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    return status, headers, rest[:n]


def rpc_request(method: str, close: bool = False) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode()
    conn = "connection: close\r\n" if close else ""
    return (f"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{conn}"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


def call(s: socket.socket, method: str) -> dict[str, Any]:
    s.sendall(rpc_request(method))
    status, _, body = read_response(s)
    assert status == 200, body
    doc: dict[str, Any] = json.loads(body)
    return doc


def closed_by_peer(s: socket.socket, timeout: float) -> bool:
    """True once the server has closed ``s`` (EOF or reset), False if it is still open."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def readable(s: socket.socket, timeout: float) -> bool:
    """Data or a close waits on ``s`` (poll, not select: descriptors above 1,024)."""
    p = select.poll()
    p.register(s, select.POLLIN)
    return bool(p.poll(timeout * 1000))


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextmanager
def own_nofile(n: int) -> Iterator[None]:
    """Raise this test process's soft descriptor limit (it holds the flood's sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip(f"this process may open only {hard} descriptors")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, n), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- the flood: connections past the cap under a 1,024 descriptor limit --------------------------


def refused_or_held(socks: list[socket.socket], refused: set[int]) -> tuple[int, int]:
    """(refused: answered 503 with the busy code, or closed; held: open and silent).
    ``refused`` collects the indices found refused so far (an answer is read only once)."""
    for i, s in enumerate(socks):
        if i in refused or not readable(s, 0):
            continue
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            data = b""
        if data:
            assert data.startswith(b"HTTP/1.1 503 "), data
            assert json.loads(data.partition(b"\r\n\r\n")[2])["error"]["code"] == BUSY
        refused.add(i)
    return len(refused), len(socks) - len(refused)


def test_a_flood_of_connections_past_the_cap_is_refused_and_the_node_keeps_producing(
        tmp_path: Path) -> None:
    flood = 1100
    # Held connections stay held for the test (no header timeout cuts them first); the cap
    # asked for (900) does not fit 1,024 descriptors next to the store and the node's own.
    home = node_home(tmp_path, rpc={"max_connections": 900, "header_timeout_ms": 120_000})
    with own_nofile(flood + 200), running_node(home, nofile=1024) as n:
        pid = n.proc.pid
        assert resource.prlimit(pid, resource.RLIMIT_NOFILE) == (1024, 1024)
        cap_line = poll(lambda: [ln for ln in n.log().splitlines()
                                 if "connection caps in effect" in ln], "the caps line")
        assert len(cap_line) == 1 and "lowered" in cap_line[0] and "1024" in cap_line[0]
        cap = int(cap_line[0].split("rpc ")[1].split(",")[0])
        assert cap < 900
        status = connect(n.url)  # opened before the flood: a slot of its own
        h0 = int(call(status, "status")["result"]["sync_info"]["latest_block_height"])
        base_fds = fd_count(pid)

        # 1,100 connections held open and silent.
        socks = [connect(n.url) for _ in range(flood)]
        try:
            seen: set[int] = set()
            # All but cap - 1 (the status connection holds a slot) are refused.
            poll(lambda: refused_or_held(socks, seen)[0] >= flood - cap + 1 or None,
                 "the refusals")
            refused, held = refused_or_held(socks, seen)
            assert held == cap - 1 and refused == flood - cap + 1
            assert fd_count(pid) < 1024
            # Blocks go on at their interval (100 ms) and status answers, never halted.
            t0, h1 = time.monotonic(), int(
                call(status, "status")["result"]["sync_info"]["latest_block_height"])
            assert h1 > h0
            time.sleep(2.0)
            st = call(status, "status")["result"]
            blocks = int(st["sync_info"]["latest_block_height"]) - h1
            assert blocks >= (time.monotonic() - t0) / 0.1 / 3, blocks  # loaded machines
            assert st["halted"] is None, st["halted"]
            # A newcomer is refused clearly while the cap is full.
            extra = connect(n.url)
            extra.sendall(rpc_request("status"))
            try:
                code, _, body = read_response(extra)
                assert code == 503 and json.loads(body)["error"]["code"] == BUSY
            except (ConnectionError, OSError):
                pass  # an immediate close is a refusal too
            extra.close()
        finally:
            for s in socks:
                s.close()
        # The clients went: their descriptors are released.
        poll(lambda: fd_count(pid) <= base_fds + 8, "descriptors released")

        # 1,100 connections opened and closed at once, in bursts of 100.
        for _ in range(flood // 100):
            burst = [connect(n.url) for _ in range(100)]
            for s in burst:
                s.close()
        poll(lambda: fd_count(pid) <= base_fds + 8, "descriptors released after open/close")
        fresh = connect(n.url)
        st = call(fresh, "status")["result"]
        assert st["halted"] is None and int(st["sync_info"]["latest_block_height"]) > h1
        fresh.close()
        status.close()
        assert n.proc.poll() is None, n.log()
        metrics = connect(n.url)
        metrics.sendall(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        _, _, text = read_response(metrics)
        line = [ln for ln in text.decode().splitlines() if ln.startswith(
            'appchain_http_connections_refused_total{reason="max_connections",server="rpc"}')]
        assert line and float(line[0].split()[-1]) >= flood - cap
        metrics.close()


def test_over_the_cap_the_admin_endpoint_answers_503_and_closes(tmp_path: Path) -> None:
    home = node_home(tmp_path, admin={"max_connections": 2, "idle_timeout_ms": 60_000})
    with running_node(home):
        url = admin_url(home)
        held = [connect(url), connect(url)]
        for s in held:  # each answered once and kept alive: both slots are taken
            s.sendall(ADMIN_INFO)
            assert read_response(s)[0] == 200
        extra = connect(url)
        code, headers, body = read_response(extra)
        assert code == 503 and headers["connection"] == "close"
        assert json.loads(body)["error"]["code"] == BUSY
        assert closed_by_peer(extra, WAIT_S)
        for s in held:
            s.close()
        ok = poll(lambda: _admin_info_or_none(url), "a slot after the held ones left")
        assert ok["result"]["chain_id"]


ADMIN_BODY = b'{"jsonrpc":"2.0","id":1,"method":"admin_info"}'
ADMIN_INFO = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(ADMIN_BODY) + \
    ADMIN_BODY


def _admin_info_or_none(url: str) -> dict[str, Any] | None:
    s = connect(url)
    try:
        s.sendall(ADMIN_INFO)
        code, _, data = read_response(s)
        return json.loads(data) if code == 200 else None
    except (ConnectionError, OSError):
        return None
    finally:
        s.close()


# -- timeouts --------------------------------------------------------------------------------


TIMEOUTS = {"header_timeout_ms": 1000, "body_timeout_ms": 1500, "idle_timeout_ms": 500}


@pytest.fixture
def quick_node(tmp_path: Path) -> Iterator[NodeProcess]:
    home = node_home(tmp_path, rpc=dict(TIMEOUTS), admin=dict(TIMEOUTS))
    with running_node(home) as n:
        yield n


@pytest.mark.parametrize("server", ["rpc", "admin"])
def test_a_request_head_that_never_completes_is_answered_408_and_closed(
        quick_node: NodeProcess, server: str) -> None:
    url = quick_node.url if server == "rpc" else admin_url(quick_node.home)
    s = connect(url)
    s.sendall(b"POST / HTTP/1.1\r\nhost: x\r\n")  # and never the blank line
    code, _, body = read_response(s, timeout=10)
    assert code == 408 and json.loads(body)["error"]["code"] == TIMEOUT
    assert closed_by_peer(s, 10)
    # A silent connection is closed too, without an answer.
    silent = connect(url)
    assert closed_by_peer(silent, 10)


@pytest.mark.parametrize("server", ["rpc", "admin"])
def test_a_trickled_body_is_cut_off_at_the_body_timeout(quick_node: NodeProcess,
                                                        server: str) -> None:
    url = quick_node.url if server == "rpc" else admin_url(quick_node.home)
    s = connect(url)
    size = 200
    s.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % size)
    sent = 0
    answered = False
    while sent < size:  # a byte every 0.2 s: the whole body would take 40 s
        s.sendall(b" ")
        sent += 1
        if readable(s, 0.2):
            answered = True
            break
    assert answered and sent < size
    code, _, body = read_response(s)
    assert code == 408 and json.loads(body)["error"]["code"] == TIMEOUT
    assert closed_by_peer(s, 10)


@pytest.mark.parametrize("server", ["rpc", "admin"])
def test_an_idle_keep_alive_connection_is_closed(quick_node: NodeProcess, server: str) -> None:
    url = quick_node.url if server == "rpc" else admin_url(quick_node.home)
    s = connect(url)
    s.sendall(rpc_request("status") if server == "rpc" else ADMIN_INFO)
    code, headers, _ = read_response(s)
    assert code == 200 and headers.get("connection") != "close"  # kept alive at first
    assert closed_by_peer(s, 10)  # then closed after the idle timeout (0.5 s)


# -- the body limit while streaming ----------------------------------------------------------


class Sender(threading.Thread):
    """Writes a request head and ``size`` body bytes (chunked or with a length) until done or
    the server closes; ``sent`` counts the body bytes the kernel took."""

    def __init__(self, s: socket.socket, size: int, chunked: bool) -> None:
        super().__init__(daemon=True)
        self.s, self.size, self.chunked, self.sent = s, size, chunked, 0

    def run(self) -> None:
        framing = (b"transfer-encoding: chunked" if self.chunked
                   else b"content-length: %d" % self.size)
        piece = b" " * 65536
        try:
            self.s.sendall(b"POST / HTTP/1.1\r\nhost: x\r\n" + framing + b"\r\n\r\n")
            while self.sent < self.size:
                frame = b"%x\r\n%s\r\n" % (len(piece), piece) if self.chunked else piece
                self.s.sendall(frame)
                self.sent += len(piece)
            if self.chunked:
                self.s.sendall(b"0\r\n\r\n")
        except OSError:
            pass


@pytest.mark.parametrize("server", ["rpc", "admin"])
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_40_mb_body_is_refused_413_while_the_client_is_still_sending(
        quick_node: NodeProcess, server: str, chunked: bool) -> None:
    url = quick_node.url if server == "rpc" else admin_url(quick_node.home)
    size = 40 * 1024 * 1024
    s = connect(url)
    sender = Sender(s, size, chunked)
    sender.start()
    code, headers, body = read_response(s)
    assert code == 413 and headers["connection"] == "close"
    doc = json.loads(body)
    assert doc["id"] is None and doc["error"]["code"] == -32600
    assert "exceeds" in doc["error"]["message"]
    sender.join(WAIT_S)
    assert not sender.is_alive()
    # The server stopped reading: the sender was cut off long before its 40 MB.
    assert sender.sent < size // 2, sender.sent
    s.close()
    assert _admin_info_or_none(admin_url(quick_node.home)) is not None


# -- client disconnects ----------------------------------------------------------------------


def test_a_client_that_disconnects_mid_body_costs_one_log_line(quick_node: NodeProcess) -> None:
    for url in (quick_node.url, admin_url(quick_node.home)):
        s = connect(url)
        s.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n0123456789")
        s.close()
    lines = poll(lambda: [ln for ln in quick_node.log().splitlines()
                          if "disconnected mid-body" in ln] if len(
        [ln for ln in quick_node.log().splitlines() if "disconnected mid-body" in ln]) >= 2
        else None, "the disconnect lines")
    assert len(lines) == 2, lines
    assert any("rpc:" in ln for ln in lines) and any("admin:" in ln for ln in lines)
    assert "Traceback" not in quick_node.log()


# -- a port already taken --------------------------------------------------------------------


@pytest.mark.parametrize("which", ["rpc", "admin"])
def test_a_taken_port_is_one_error_line(tmp_path: Path, which: str) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    laddr = {"laddr": f"tcp://127.0.0.1:{port}"}
    home = node_home(tmp_path, **{which: laddr})
    r = subprocess.run([sys.executable, "-m", "node.cli", "start", "--home", str(home.root)],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    taken.close()
    assert r.returncode != 0
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert errors == [f"Error: cannot listen on 127.0.0.1:{port}: address already in use"]
    assert "Traceback" not in r.stderr and "ExceptionGroup" not in r.stderr


def test_a_taken_port_stops_devnet_with_one_error_line(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "node.cli", "devnet", "--home",
                        str(tmp_path / "dn"), "--port", "0", "--admin-port", str(port),
                        "--blocks", "2", "--accounts", "4", "--leveraged", "0"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    taken.close()
    assert r.returncode != 0
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, r.stderr
    assert errors[0].startswith(f"Error: cannot listen on 127.0.0.1:{port}: address already "
                                "in use"), errors
    assert "Traceback" not in r.stderr


def test_accept_without_a_descriptor_left_waits_and_goes_on(tmp_path: Path) -> None:
    home = node_home(tmp_path)
    with running_node(home) as n:
        pid = n.proc.pid
        status = connect(n.url)  # open before the limit drops: it keeps answering
        call(status, "status")
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        # No new descriptor can be numbered (0-2 are taken): every accept fails (EMFILE).
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, hard))
        try:
            waiting = [socket.create_connection(addr(n.url), timeout=WAIT_S) for _ in range(5)]
            poll(lambda: "rpc: cannot accept connections" in n.log(), "the accept warning")
            assert n.proc.poll() is None
            assert call(status, "status")["result"]["sync_info"]
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        # Descriptors are back: the waiting clients are served, in order.
        for s in waiting:
            assert call(s, "health")["result"] == {}
            s.close()
        log = n.log()
        assert log.count("rpc: cannot accept connections") == 1, log
        assert "Traceback" not in log
        status.sendall(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        text = read_response(status)[2].decode()
        assert 'appchain_http_connections_refused_total{reason="descriptors",server="rpc"}' \
            in text
        status.close()


def test_a_client_that_disconnects_mid_response_costs_one_log_line(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=2)
    home = make_home(tmp_path / "n", g, keys.producer, block_interval_ms=100)
    alice, bob = keys.accounts
    with running_node(home) as n:
        tx = make_tx(alice, g.chain_id, 0, Transfer(bob.public_key, 5))
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "broadcast_tx_commit",
                           "params": {"tx": b64(tx.raw)}}).encode()
        s = connect(n.url)
        s.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        # Gone (a reset) while the node waits for the block: its answer finds no one.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        line = poll(lambda: [ln for ln in n.log().splitlines()
                             if "disconnected mid-response" in ln], "the disconnect line")
        assert len(line) == 1 and "rpc:" in line[0]
        with RPCClient(n.url) as c:  # the transaction went in all the same
            poll(lambda: c.call("account", address=bob.public_key.hex())["balance"] != str(
                10**9), "the transfer")
        assert "Traceback" not in n.log()
