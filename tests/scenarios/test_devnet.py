"""`appchain devnet` end to end, as a user runs it: one command, a loaded chain, a clean stop."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
