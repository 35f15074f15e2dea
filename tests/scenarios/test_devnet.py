"""`appchain devnet` end to end, as a user runs it: one command, a loaded chain, a clean stop."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.config import AdminConfig
from node.dev.devnet import DevnetOptions, admin_port
from state.store import Store
from tests.helpers import REPO


def run_devnet(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "devnet", "--home", str(root), "--port", "0",
         "--block-interval-ms", "100", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120)


def test_devnet_runs_load_and_stops_at_height(tmp_path: Path) -> None:
    root = tmp_path / "dn"
    r = run_devnet(root, "--tps", "100", "--blocks", "6", "--accounts", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    heights = [int(h) for h in re.findall(r"^height\s+(\d+)\s+tx/s", r.stdout, re.M)]
    assert heights and heights[-1] >= 6 and heights == sorted(heights)
    assert "node stopped (status 0)" in r.stdout
    with Store(root / "node0" / "data" / "store") as s:
        head = s.head()
        assert head is not None and head.height >= 6
        committed = sum(len(s.results(h) or []) for h in range(1, head.height + 1))
    assert committed > 0  # the load generator's transfers landed

    # Running it again reuses the chain and continues from where it stopped.
    r = run_devnet(root, "--tps", "0", "--blocks", str(head.height + 2))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "created genesis" not in r.stdout
    with Store(root / "node0" / "data" / "store") as s:
        assert s.head().height >= head.height + 2  # type: ignore[union-attr]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveDevnet:
    """`appchain devnet` as a background process whose output is read line by line."""

    def __init__(self, root: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "devnet", "--home", str(root),
             "--block-interval-ms", "100", "--accounts", "5", *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.lines: list[str] = []

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first output line matching ``pattern`` (bounded wait; the process must live)."""
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
def test_a_signal_to_the_devnet_stops_its_node_and_exits_0(tmp_path: Path,
                                                           signum: signal.Signals) -> None:
    dn = LiveDevnet(tmp_path / "dn", "--port", "0", "--tps", "20")
    pid = int(dn.wait_for(r"node pid (\d+)").group(1))
    dn.wait_for(r"^height\s+\d+")
    dn.proc.send_signal(signum)
    code, out = dn.finish()
    assert code == 0, out
    assert "Traceback" not in out
    assert "node stopped (status 0)" in out
    assert _gone(pid), f"the devnet's node {pid} still runs after {signum.name}"


def test_two_devnets_run_side_by_side_on_their_own_ports(tmp_path: Path) -> None:
    rpc, admin = _free_port(), _free_port()
    a = LiveDevnet(tmp_path / "a", "--port", "0", "--tps", "10", "--blocks", "4")
    b = LiveDevnet(tmp_path / "b", "--port", str(rpc), "--admin-port", str(admin),
                   "--tps", "10", "--blocks", "4")
    for dn in (a, b):
        code, out = dn.finish(timeout=120)
        assert code == 0, out
        assert "Traceback" not in out
    admin_url = (tmp_path / "b" / "node0" / "data" / "admin_address").read_text().strip()
    assert admin_url == f"http://127.0.0.1:{admin}"
    rpc_url = (tmp_path / "b" / "node0" / "data" / "rpc_address").read_text().strip()
    assert rpc_url == f"http://127.0.0.1:{rpc}"
    # A reused devnet listens where the new run asks.
    rpc2, admin2 = _free_port(), _free_port()
    code, out = LiveDevnet(tmp_path / "b", "--port", str(rpc2), "--admin-port", str(admin2),
                           "--tps", "0", "--blocks", "6").finish(timeout=120)
    assert code == 0, out
    assert f"rpc http://127.0.0.1:{rpc2}, admin http://127.0.0.1:{admin2}," in out


def test_the_admin_port_defaults_beside_the_rpc_port_or_to_a_free_one() -> None:
    assert admin_port(DevnetOptions(Path("x"))) == int(AdminConfig.laddr.rsplit(":", 1)[1])
    assert admin_port(DevnetOptions(Path("x"), port=27000)) == 27002
    assert admin_port(DevnetOptions(Path("x"), port=0)) == 0
    assert admin_port(DevnetOptions(Path("x"), port=0, admin_port=5000)) == 5000
