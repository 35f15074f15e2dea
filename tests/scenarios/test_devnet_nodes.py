"""`appchain devnet --nodes N`: the producer and N-1 followers as real processes, the load
sent through a follower, one progress line with every height, and every node ending on the
same chain; a signal stops them all, a child that dies stops the rest."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.dev.devnet import DevnetOptions, NodePorts, node_ports
from state.store import Store
from tests.helpers import REPO

ENDPOINT = (r"^node(\d+) (producer|follower) rpc (http://127\.0\.0\.1:\d+) p2p "
            r"(127\.0\.0\.1:\d+) admin (http://127\.0\.0\.1:\d+) pid (\d+) home (\S+)$")


def chain_of(store_dir: Path) -> tuple[list[bytes], list[tuple[bytes, bytes]], int]:
    """Every block's bytes, the whole state at the head, and the transactions committed."""
    with Store(store_dir, create=False) as s:
        head = s.head()
        assert head is not None
        blocks = [s.block_bytes(h) or b"" for h in range(1, head.height + 1)]
        txs = sum(len(s.results(h) or []) for h in range(1, head.height + 1))
        return blocks, list(s.iter_state()), txs


def test_three_nodes_with_the_load_through_a_follower_end_on_one_chain(tmp_path: Path
                                                                       ) -> None:
    root = tmp_path / "dn"
    r = subprocess.run(
        [sys.executable, "-m", "node.cli", "devnet", "--home", str(root), "--nodes", "3",
         "--port", "0", "--blocks", "40", "--block-interval-ms", "100", "--tps", "100",
         "--accounts", "8", "--load-node", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Traceback" not in out
    endpoints = {int(m[1]): m for m in re.finditer(ENDPOINT, r.stdout, re.M)}
    assert sorted(endpoints) == [0, 1, 2], out
    assert endpoints[0][2] == "producer" and endpoints[1][2] == endpoints[2][2] == "follower"
    for i, m in endpoints.items():  # what each node wrote it listens on
        data = root / f"node{i}" / "data"
        assert m[3] == (data / "rpc_address").read_text().strip()
        assert m[4] == (data / "p2p_address").read_text().strip()
        assert m[5] == (data / "admin_address").read_text().strip()
    assert "load 100 tx/s through node1" in r.stdout
    progress = re.findall(r"^height\s+(\d+)\s+nodes (\d+) (\d+) (\d+)\s+tx/s", r.stdout, re.M)
    assert progress and int(progress[-1][0]) >= 40, out
    assert all(p[0] == p[1] for p in progress)  # node0's height is the line's height
    done = re.search(r"^all 3 nodes at height (\d+); node1 forwarded (\d+) transactions, "
                     r"node2 forwarded (\d+) transactions$", r.stdout, re.M)
    assert done, out
    top, forwarded, forwarded2 = int(done[1]), int(done[2]), int(done[3])
    assert top >= 40 and forwarded > 0 and forwarded2 == 0  # the load went through node1
    for i in range(3):
        assert f"node{i} stopped (status 0)" in r.stdout

    blocks, state, txs = chain_of(root / "node0" / "data" / "store")
    assert len(blocks) == top
    assert txs > 0  # committed: every transaction of this run came through node1
    for i in (1, 2):
        fb, fs, _ = chain_of(root / f"node{i}" / "data" / "store")
        assert len(fb) == len(blocks), (i, len(fb), len(blocks))
        for h, (x, y) in enumerate(zip(blocks, fb, strict=True), start=1):
            assert x == y, f"node{i}: block {h} differs"
        assert fs == state, f"node{i}: the state differs"

    # Run again with one node more: the homes are reused, node3 is made and syncs it all.
    r = subprocess.run(
        [sys.executable, "-m", "node.cli", "devnet", "--home", str(root), "--nodes", "4",
         "--port", "0", "--blocks", str(top + 5), "--block-interval-ms", "100", "--tps", "0",
         "--load-node", "3"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    made = re.findall(r"^initialised (\w+) home (\S+)$", r.stdout, re.M)
    assert made == [("follower", str(root / "node3"))], r.stdout
    blocks, state, _ = chain_of(root / "node0" / "data" / "store")
    assert len(blocks) >= top + 5
    for i in (1, 2, 3):
        assert chain_of(root / f"node{i}" / "data" / "store")[:2] == (blocks, state), i


class LiveDevnet:
    """`appchain devnet` as a background process whose output is read line by line."""

    def __init__(self, root: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "devnet", "--home", str(root), "--port", "0",
             "--block-interval-ms", "100", "--accounts", "5", *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.lines: list[str] = []

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first new output line matching ``pattern`` (bounded wait)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if not ready:
                continue
            line = self.proc.stdout.readline()
            if not line:
                break  # exited
            self.lines.append(line)
            m = re.search(pattern, line)
            if m:
                return m
        raise AssertionError(f"no line matching {pattern!r}:\n" + "".join(self.lines))

    def pids(self, n: int) -> dict[int, int]:
        """Node index -> pid, from the ``nodeI producer|follower rpc ...`` lines."""
        out: dict[int, int] = {}
        while len(out) < n:
            m = self.wait_for(ENDPOINT)
            out[int(m[1])] = int(m[6])
        return out

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, "".join(self.lines) + out


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_every_node_and_exits_0(tmp_path: Path, signum: signal.Signals
                                               ) -> None:
    dn = LiveDevnet(tmp_path / "dn", "--nodes", "3", "--tps", "20", "--load-node", "2")
    pids = dn.pids(3)
    dn.wait_for(r"^height\s+\d+\s+nodes \d+ \d+ \d+\s")
    dn.proc.send_signal(signum)
    code, out = dn.finish()
    assert code == 0, out
    assert "Traceback" not in out
    for i, pid in pids.items():
        assert f"node{i} stopped (status 0)" in out, out
        assert _gone(pid), f"node{i} ({pid}) still runs after {signum.name}"


def test_a_node_that_dies_stops_the_rest_and_the_devnet_fails(tmp_path: Path) -> None:
    dn = LiveDevnet(tmp_path / "dn", "--nodes", "3", "--tps", "20")
    pids = dn.pids(3)
    dn.wait_for(r"^height\s+\d+\s+nodes \d+ \d+ \d+\s")
    os.kill(pids[2], signal.SIGKILL)
    code, out = dn.finish()
    assert code == 1, out
    assert "Traceback" not in out
    log = tmp_path / "dn" / "node2" / "node.log"
    assert f"node2 exited with status -9 (log: {log})" in out, out
    for i in (0, 1):
        assert f"node{i} stopped (status 0)" in out, out
    assert all(_gone(pid) for pid in pids.values())


def test_the_port_scheme_shifts_node0s_ports_by_ten_per_node() -> None:
    opts = DevnetOptions(Path("x"), port=27000, nodes=3)
    assert node_ports(opts, 0) == NodePorts(rpc=27000, p2p=26999, admin=27002)
    assert node_ports(opts, 1) == NodePorts(rpc=27010, p2p=27009, admin=27012)
    assert node_ports(opts, 2) == NodePorts(rpc=27020, p2p=27019, admin=27022)
    # --admin-port moves node0's operator endpoint only; --port 0 lets the OS pick all.
    assert node_ports(DevnetOptions(Path("x"), admin_port=5000), 0).admin == 5000
    assert node_ports(DevnetOptions(Path("x"), admin_port=5000), 1).admin == 26669
    assert node_ports(DevnetOptions(Path("x"), port=0, nodes=4), 3) == NodePorts(0, 0, 0)
    # --port 0 with an explicit --admin-port: node0 keeps it (a taken one must be refused)
    assert node_ports(DevnetOptions(Path("x"), port=0, admin_port=5000), 0) == \
        NodePorts(0, 0, 5000)
