"""Replay and rehearsal progress: kept on the node for `admin_progress`, logged every few
seconds, printed by the CLI while the command runs."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from node.cli.admin_session import progress_line
from node.replay_runner import ProgressLog
from state.recovery.replay import Progress


def test_progress_log_keeps_the_latest_and_logs_the_first_and_last(
        caplog: pytest.LogCaptureFixture) -> None:
    node = SimpleNamespace(progress=None)
    log = ProgressLog(node, "rehearsal")  # type: ignore[arg-type]
    counts = {"identical": 3, "diverged": 1, "dropped": 0}
    with caplog.at_level(logging.WARNING, logger="appchain.replay"):
        log(Progress(0, 1, 10, counts, 0.5))
        log(Progress(0, 2, 10, counts, 0.6))   # within 2 s of the last line: not logged
        log(Progress(0, 10, 10, counts, 3.0))  # the last block: always logged
    assert node.progress["kind"] == "rehearsal" and node.progress["blocks_done"] == 10
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [Progress(0, 1, 10, counts, 0.5).line(),
                     Progress(0, 10, 10, counts, 3.0).line()]
    assert "block 1/10; 3 identical, 1 diverged, 0 dropped; 2.0 blocks/s; ~4s left" in lines[0]


def test_the_cli_progress_line() -> None:
    p = Progress(2, 5, 20, {"identical": 40, "diverged": 2, "dropped": 1}, 2.5).to_json()
    assert progress_line({"kind": "replay", **p}) == (
        "replay: block 5/20  identical 40  diverged 2  dropped 1  2.0 blocks/s  ~8s left")
