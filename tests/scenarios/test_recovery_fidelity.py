"""Recovery under the devnet's own load, on real node processes and the real CLI.

The load is `appchain devnet` itself (quotes, takes, post-only orders that cross and fail,
cancels by id that find their order filled, take-profit/stop-loss orders, some of which
trigger and some of which fail, a market maker, leveraged traders who get liquidated, and
funding every two seconds), run once for the module. Each test works on its own copy:

* a no-op recovery (halt, roll back more than 100 blocks, replay) gives back exactly the
  application state of the pre-rollback head: 100% identical, nothing dropped;
* with the operators' cancel-orders committed first, nothing is dropped, every diverged
  transaction says why, and every cancel either cancels its order or says the operators did;
* an excluded transaction drops exactly its sender's later transactions, each naming it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from chain.block import Block, TxResult
from chain.tx import decode_tx
from node.client.rpc_client import RPCClient
from state.recovery.snapshot_file import SnapshotReader
from state.store import Store
from tests.helpers import REPO

BLOCKS = 160
ROLLBACK_TO = 40


def cli(*args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def workload(store_dir: Path) -> Counter[str]:
    """What the chain holds: transactions by type and outcome, block events by type."""
    c: Counter[str] = Counter()
    with Store(store_dir) as s:
        head = s.head()
        assert head is not None
        c["blocks"] = head.height
        for h in range(1, head.height + 1):
            b = Block.decode_block(s.block_bytes(h) or b"")
            res = [TxResult.decode(r) for r in s.results(h) or []]
            for raw, r in zip(b.txs, res, strict=False):
                t = decode_tx(raw)
                kind = t.type + (":" + t.payload.kind if t.type == "order" else "")  # type: ignore[attr-defined]
                c[f"tx {kind}"] += 1
                c["tx failed" if r.code else "tx ok"] += 1
            for r in res[len(b.txs):]:
                for e in r.events:
                    c[f"event {e.type}"] += 1
    return c


@pytest.fixture(scope="module")
def loaded_devnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Counter[str]]:
    """A devnet run to BLOCKS by its own load generator (re-run, bounded, until its history
    holds a liquidation, a fired take-profit/stop-loss and funding payments)."""
    root = tmp_path_factory.mktemp("devnet")
    blocks = BLOCKS
    for _ in range(3):
        r = cli("devnet", "--home", root, "--blocks", str(blocks), "--block-interval-ms", "100",
                "--port", "0", "--tps", "150", "--accounts", "12", "--funding-interval-ms", "2000",
                "--oracle-period-ms", "200", "--oracle-sharp-every", "8")
        assert r.returncode == 0, r.stdout + r.stderr
        w = workload(root / "node0" / "data" / "store")
        if w["event liquidation_settled"] and w["event order_triggered"] and \
                w["event funding"]:
            return root, w
        blocks = w["blocks"] + 60
    raise AssertionError(f"the devnet load did not produce liquidations, triggers and "
                         f"funding: {w}")


class Recovery:
    """A copy of the loaded devnet with its producer running, driven through the CLI."""

    def __init__(self, src: Path, dst: Path) -> None:
        shutil.copytree(src, dst)
        self.root = dst
        self.home = dst / "node0"
        self.key = dst / "genesis" / "keys" / "operator-0.json"
        (self.home / "data" / "admin_address").unlink(missing_ok=True)
        self.log = open(self.home / "recovery.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "node.cli", "start", "--home",
                                      str(self.home)], cwd=REPO, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not (self.home / "data" / "admin_address").exists():
            assert self.proc.poll() is None, (self.home / "recovery.log").read_text()
            assert time.monotonic() < deadline, "node did not start"
            time.sleep(0.05)

    def admin(self, *args: str | Path) -> dict[str, Any]:
        r = cli("admin", "--home", self.home, "--key", self.key, *args)
        assert r.returncode == 0, r.stdout + r.stderr
        out = json.loads(r.stdout)
        out["_stderr"] = r.stderr
        return out

    def export(self, label: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """The full application state at the head (a snapshot file: every state key)."""
        self.admin("snapshot", "create", "--label", label)
        path = self.root / f"{label}.snap"
        self.admin("snapshot", "export", label, "--path", path)
        with SnapshotReader(path) as r:
            return r.header.state_root, list(r.pairs())

    def report(self) -> list[dict[str, Any]]:
        doc = json.loads((self.home / "data" / "reports" / "replay-era-0.json").read_text())
        return doc["transactions"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def recover(loaded: tuple[Path, Counter[str]], tmp: Path
            ) -> tuple[Recovery, dict[str, Any], int]:
    """A running copy, halted, with the full state of its head exported."""
    src, work = loaded
    r = Recovery(src, tmp / "copy")
    head = int(r.admin("halt", "--reason", "drill")["height"])
    assert head >= 150 and head - ROLLBACK_TO >= 100, work
    return r, {"head": head, "before": r.export("before")}, head


def test_a_no_op_recovery_under_devnet_load_gives_back_exactly_the_same_state(
        loaded_devnet: tuple[Path, Counter[str]], tmp_path: Path) -> None:
    root, work = loaded_devnet
    # The history is the realistic mix, failures included.
    assert work["tx failed"] > 100 and work["tx order:take_profit"] and \
        work["tx order:stop_loss"] and work["tx cancel"], work
    r, info, head = recover(loaded_devnet, tmp_path)
    try:
        rb = r.admin("rollback", "--to-height", str(ROLLBACK_TO), "--reason", "no-op drill")
        assert rb["summary"].startswith(f"rolled back {head - ROLLBACK_TO} block(s)")
        rp = r.admin("replay")
        with RPCClient((r.home / "data" / "admin_address").read_text().strip()) as adm:
            idle = adm.call("admin_progress")  # unsigned, read-only
        assert idle["progress"] is None and int(idle["height"]) == head
        assert f"replay era 0: block {head - ROLLBACK_TO}/{head - ROLLBACK_TO}" in (
            r.home / "recovery.log").read_text()  # the node logged its progress
        total = sum(1 for t in r.report())
        assert rp["counts"]["identical"] == total > 1000, rp["counts"]
        assert rp["counts"]["dropped"] == rp["counts"]["diverged"] == 0, rp
        root_after, after = r.export("after")
        root_before, before = info["before"]
        assert after == before  # accounts, markets, positions, orders, funding: byte-identical
        assert root_after == root_before
    finally:
        r.stop()


def test_recovery_with_cancel_orders_drops_nothing_and_explains_every_divergence(
        loaded_devnet: tuple[Path, Counter[str]], tmp_path: Path) -> None:
    r, info, head = recover(loaded_devnet, tmp_path)
    try:
        r.admin("rollback", "--to-height", str(ROLLBACK_TO), "--reason", "incident drill")
        cancelled = r.admin("cancel-orders", "--keep", "take-profit,stop-loss")
        assert cancelled["code"] == 0
        n_cancelled = sum(1 for e in cancelled["events"] if e["type"] == "order_cancelled")
        assert n_cancelled > 0  # there were resting orders at the fork
        rp = r.admin("replay")
        assert rp["counts"]["dropped"] == 0, rp["counts"]
        txs = r.report()
        assert len(txs) == rp["counts"]["total"]
        diverged = [t for t in txs if t["fate"] == "diverged"]
        assert diverged  # the cancellations changed what some transactions met
        assert all(t["why"] for t in diverged), [t for t in diverged if not t["why"]]
        for t in txs:
            if t["type"] != "cancel":
                continue
            # A cancel signed on the abandoned fork cancels its order, or fails as it did
            # there, or says the operators already cancelled the order, or (the book having
            # changed) says how the order left it on the recovered chain.
            assert t["code"] == 0 or t["fate"] == "identical" or \
                "already cancelled by the operators" in t["why"] or \
                "on the recovered chain order" in t["why"], t
        noted = [t for t in diverged if "already cancelled by the operators" in t["why"]]
        assert noted
    finally:
        r.stop()


def test_an_excluded_transaction_drops_exactly_its_senders_later_transactions(
        loaded_devnet: tuple[Path, Counter[str]], tmp_path: Path) -> None:
    # Pick, in the abandoned range, a sender with many transactions and one in the middle.
    root, _ = loaded_devnet
    by_sender: dict[str, list[tuple[int, int, str]]] = {}
    with Store(root / "node0" / "data" / "store") as s:
        head = s.head()
        assert head is not None
        for h in range(ROLLBACK_TO + 1, head.height + 1):
            for i, raw in enumerate(Block.decode_block(s.block_bytes(h) or b"").txs):
                t = decode_tx(raw)
                by_sender.setdefault(t.sender.hex(), []).append((h, i, t.hash.hex()))
    sender, seq = max(by_sender.items(), key=lambda kv: len(kv[1]))
    victim = seq[len(seq) // 3]
    r, info, _ = recover(loaded_devnet, tmp_path)
    try:
        r.admin("rollback", "--to-height", str(ROLLBACK_TO), "--reason", "exclusion drill")
        dry = r.admin("replay", "--dry-run", "--exclude-tx", victim[2])
        assert dry["dropped_before_execution"] == {"excluded_tx": 1}, dry
        rp = r.admin("replay", "--exclude-tx", victim[2])
        txs = r.report()
        dropped = [t for t in txs if t["fate"] == "dropped"]
        later = {x[2] for x in seq if (x[0], x[1]) > (victim[0], victim[1])}
        assert {t["hash"] for t in dropped} == later | {victim[2]}
        assert all(t["reason"] == f"after_excluded:{victim[2]}" for t in dropped
                   if t["hash"] != victim[2])
        assert next(t for t in txs if t["hash"] == victim[2])["reason"] == "excluded_tx"
        assert rp["counts"]["dropped_by_reason"] == {"after_excluded": len(later),
                                                     "excluded_tx": 1}
        assert all(t["sender"] == sender for t in dropped)
    finally:
        r.stop()


def test_a_rehearsal_predicts_the_real_recovery_exactly(
        loaded_devnet: tuple[Path, Counter[str]], tmp_path: Path) -> None:
    """`admin rehearse` runs rollback, cancel-orders, replay (with an exclusion) and the
    compensation report in a scratch copy; the chain is untouched; the real run afterwards
    gives the same fate for every transaction and the same report (same id)."""
    root, _ = loaded_devnet
    with Store(root / "node0" / "data" / "store") as s:
        tip = s.head()
        assert tip is not None
        # The first transaction from ROLLBACK_TO + 30 on (a block may be empty).
        victim = next(decode_tx(raw) for h in range(ROLLBACK_TO + 30, tip.height + 1)
                      for raw in Block.decode_block(s.block_bytes(h) or b"").txs[:1])
    r, info, head = recover(loaded_devnet, tmp_path)
    try:
        out_dir = tmp_path / "rehearsal"
        res = cli("admin", "--home", r.home, "--key", r.key, "rehearse", "--to-height",
                  str(ROLLBACK_TO), "--reason", "incident", "--cancel-orders-keep",
                  "take-profit,stop-loss", "--exclude-tx", victim.hash.hex(), "--out",
                  out_dir)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "rehearsed era 0" in res.stdout and "compensation report" in res.stdout
        rehearsed = json.loads((out_dir / "fates.json").read_text())
        rehearsed_report = json.loads((out_dir / "report.json").read_text())
        on_node = json.loads(Path(rehearsed["path"]).read_text())
        assert rehearsed["counts"]["dropped"] >= 1  # the exclusion and its consequences
        # Nothing of the chain changed: same head, same state.
        st = r.admin("snapshot", "show", "before")
        assert int(st["height"]) == head
        root_now, state_now = r.export("after-rehearsal")
        assert (root_now, state_now) == info["before"]
        # The real recovery, with the same choices.
        r.admin("rollback", "--to-height", str(ROLLBACK_TO), "--reason", "incident")
        r.admin("cancel-orders", "--keep", "take-profit,stop-loss")
        rp = r.admin("replay", "--exclude-tx", victim.hash.hex())
        assert rp["counts"] == rehearsed["counts"]
        assert r.report() == on_node["transactions"]  # every fate, field by field
        real = cli("admin", "--home", r.home, "--key", r.key, "compensation-report",
                   "--out", tmp_path / "real-report")
        assert real.returncode == 0, real.stderr
        real_report = json.loads((tmp_path / "real-report" / "report.json").read_text())
        real_report.pop("summary", None)
        real_report.pop("audit_seq", None)
        assert real_report["id"] == rehearsed_report["id"]
        assert real_report == rehearsed_report
    finally:
        r.stop()
