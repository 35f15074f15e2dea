"""Running a replay on the producer: one signed block per abandoned block, crash-resumable.

The operation is recorded (``m`` + ``op``, kind ``replay``) before its first block. Each
replayed block is committed in ONE batch together with the fate of every transaction of the
abandoned block it replaces (``m`` + ``fate/`` + tx hash) and the advanced record; the last
block also removes the record. After a crash the node finishes the replay when it opens
(node/chain_head.py): replay is deterministic (state/recovery/replay.py), so the block it rebuilds
for the interrupted step is the one the producer may already have signed, and the
last-signed record accepts it. Progress is logged and kept on the node for
``admin_progress``.

The runner takes the node as a :class:`ReplayHost`: what it needs of it, nothing more.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Protocol

from chain.tx import Transaction
from node.config import Home
from node.producer import Producer
from node.testhooks import test_kill_hook
from state import meta
from state.meta import Fate, ReplayOperation, fork_certificates, replayed_height
from state.params import ChainParams
from state.recovery.archive import Exclusions, archived_blocks
from state.recovery.replay import Progress, begin_record, fates_of, run_replay, summarize
from state.store import Head, Store
from state.store_errors import OperationRefused
from state.transition import BlockOutcome

log = logging.getLogger("appchain.replay")

PROGRESS_EVERY_S = 2.0


class ReplayHost(Protocol):
    """The parts of a node a replay uses."""

    store: Store
    params: ChainParams
    producer: Producer
    home: Home
    progress: dict[str, Any] | None


def fork_height(store: Store, era: int) -> int:
    """The height the rollback that abandoned ``era`` went to."""
    for c in fork_certificates(store):
        if c.certificate.era == era + 1:
            return int(c.certificate.to_height)
    raise OperationRefused(f"no fork certificate starts era {era + 1}")


def begin(host: ReplayHost, era: int, ex: Exclusions, by: list[str], started_ms: int
          ) -> ReplayOperation:
    """Record the replay of ``era`` (refused if another operation is recorded, if the era
    has no archived block or no rollback opened the next era)."""
    store = host.store
    if meta.operation(store) is not None:
        raise OperationRefused("another recovery operation is in progress")
    if not archived_blocks(store, era):
        raise OperationRefused(f"no abandoned blocks archived for era {era}")
    fork_height(store, era)  # refuse early if no rollback started the next era
    record = begin_record(store, era, ex, by, started_ms)
    meta.record_operation(store, record)
    return record


class ProgressLog:
    """Keeps the latest progress on the node and logs a line every few seconds."""

    def __init__(self, host: ReplayHost, kind: str) -> None:
        self.host = host
        self.kind = kind
        self._last = 0.0

    def __call__(self, p: Progress) -> None:
        self.host.progress = {"kind": self.kind, **p.to_json()}
        now = time.monotonic()
        if now - self._last >= PROGRESS_EVERY_S or p.blocks_done == p.blocks_total:
            self._last = now
            log.warning("%s", p.line())


def run(host: ReplayHost, record: ReplayOperation) -> dict[str, Any]:
    """Replay from ``record.next`` to the end; returns the report (also written to
    ``data/reports/replay-era-<era>.json``)."""
    era = record.era
    hook = test_kill_hook("APPCHAIN_TEST_KILL_REPLAY")

    def commit(txs: list[Transaction], block_time: int,
               extra: list[meta.MetaWrite], outcome: BlockOutcome) -> Head:
        head, _ = host.producer.commit_block_now(txs, block_time, extra, outcome)
        return head

    try:
        run_replay(host.store, host.params, record, commit,
                   fork_height=fork_height(host.store, era),
                   on_progress=ProgressLog(host, "replay"),
                   after_block=None if hook is None else (lambda: hook(None)))
    finally:
        host.progress = None
    return report(host, era)


def finish_interrupted_replay(host: ReplayHost, record: ReplayOperation) -> None:
    """At start: finish the replay a crash interrupted, before the node serves."""
    log.warning("finishing the interrupted replay of era %s from block %s", record.era,
                record.next)
    run(host, record)
    head = host.store.head()
    log.warning("replay finished at height %d", 0 if head is None else head.height)


def report(host: ReplayHost, era: int) -> dict[str, Any]:
    """Every abandoned transaction of ``era`` with its fate, and the totals."""
    fates = fates_of(host.store, era)
    out = report_json(era, fates, replayed_height(host.store, era))
    path = Path(host.home.data_dir) / "reports" / f"replay-era-{era}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    out["path"] = str(path)
    return out


def report_json(era: int, fates: list[Fate], last_height: int | None) -> dict[str, Any]:
    """The replay report: summary, then every transaction's fate (JSON-ready)."""
    return {"era": era, "replayed_to_height": None if last_height is None else
            str(last_height), "summary": summarize(fates),
            "transactions": [f.to_obj() for f in fates]}
