"""Running a replay on the producer: one signed block per abandoned block, crash-resumable.

The operation is recorded (``m`` + ``op``, kind ``replay``) before its first block. Each
replayed block is committed in ONE batch together with the fate of every transaction of the
abandoned block it replaces (``m`` + ``fate/`` + tx hash) and the advanced record; the last
block also removes the record. After a crash the node finishes the replay when it opens
(node/node.py): replay is deterministic (state/replay.py), so the block it rebuilds for the
interrupted step is the one the producer may already have signed, and the last-signed record
accepts it. Progress is logged and kept on the node for ``admin_progress``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chain.codec import decode, encode
from node.testhooks import test_kill_hook
from state import schema
from state.meta import Fate, fork_certificates, replayed_height
from state.recovery.archive import Exclusions, archived_blocks
from state.recovery.replay import Progress, begin_record, fates_of, run_replay, summarize
from state.store import Head, StoreError
from state.transition import BlockOutcome

if TYPE_CHECKING:
    from chain.tx import Transaction
    from node.node import Node

log = logging.getLogger("appchain.replay")

PROGRESS_EVERY_S = 2.0


def fate_of(store: Any, tx_hash: bytes) -> dict[str, Any] | None:
    raw = store.db.get(schema.META_FATE + tx_hash)
    return None if raw is None else dict(decode(raw))


def fork_height(store: Any, era: int) -> int:
    """The height the rollback that abandoned ``era`` went to."""
    for c in fork_certificates(store):
        if c.certificate.era == era + 1:
            return int(c.certificate.to_height)
    raise StoreError(f"no fork certificate starts era {era + 1}")


def begin(node: Node, era: int, ex: Exclusions, by: list[str], started_ms: int
          ) -> dict[str, Any]:
    store = node.store
    if store.db.get(schema.META_OP) is not None:
        raise StoreError("another recovery operation is in progress")
    if not archived_blocks(store, era):
        raise StoreError(f"no abandoned blocks archived for era {era}")
    fork_height(store, era)  # refuse early if no rollback started the next era
    record = begin_record(store, era, ex, by, started_ms)
    store.db.put(schema.META_OP, encode(record), sync=True)
    return record


class ProgressLog:
    """Keeps the latest progress on the node and logs a line every few seconds."""

    def __init__(self, node: Node, kind: str) -> None:
        self.node = node
        self.kind = kind
        self._last = 0.0

    def __call__(self, p: Progress) -> None:
        self.node.progress = {"kind": self.kind, **p.to_json()}
        now = time.monotonic()
        if now - self._last >= PROGRESS_EVERY_S or p.blocks_done == p.blocks_total:
            self._last = now
            log.warning("%s", p.line())


def run(node: Node, record: dict[str, Any]) -> dict[str, Any]:
    """Replay from ``record['next']`` to the end; returns the report (also written to
    ``data/reports/replay-era-<era>.json``)."""
    era = int(record["era"])
    hook = test_kill_hook("APPCHAIN_TEST_KILL_REPLAY")

    def commit(txs: list[Transaction], block_time: int,
               meta: list[tuple[bytes, bytes | None]], outcome: BlockOutcome) -> Head:
        head, _ = node.commit_block_now(txs, block_time, meta, outcome)
        return head

    try:
        run_replay(node.store, node.params, record, commit,
                   fork_height=fork_height(node.store, era),
                   on_progress=ProgressLog(node, "replay"),
                   after_block=None if hook is None else (lambda: hook(None)))
    finally:
        node.progress = None
    return report(node, era)


def report(node: Node, era: int) -> dict[str, Any]:
    """Every abandoned transaction of ``era`` with its fate, and the totals."""
    fates = fates_of(node.store, era)
    out = report_json(era, fates, replayed_height(node.store, era))
    path = Path(node.home.data_dir) / "reports" / f"replay-era-{era}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    out["path"] = str(path)
    return out


def report_json(era: int, fates: list[Fate], last_height: int | None) -> dict[str, Any]:
    """The replay report: summary, then every transaction's fate (JSON-ready)."""
    return {"era": era, "replayed_to_height": None if last_height is None else
            str(last_height), "summary": summarize(fates),
            "transactions": [f.to_obj() for f in fates]}
