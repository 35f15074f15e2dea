"""Running a replay on the producer: one signed block per abandoned block, crash-resumable.

The operation is recorded (``m`` + ``op``, kind ``replay``) before its first block. Each
replayed block is committed in ONE batch together with the fate of every transaction of the
abandoned block it replaces (``m`` + ``fate/`` + tx hash) and the advanced progress pointer;
the last block also removes the record. After a crash the node finishes the replay when it
opens (node/node.py): replay is deterministic (state/replay.py), so the block it rebuilds for
the interrupted step is the one the producer may already have signed, and the last-signed
record accepts it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chain.codec import decode
from chain.crypto import encode, sha256
from state import schema
from state.replay import (
    Exclusions,
    Fate,
    archived_blocks,
    assemble,
    summarize,
)
from state.store import StoreError

if TYPE_CHECKING:
    from node.node import Node

log = logging.getLogger("appchain.replay")


def fate_of(store: Any, tx_hash: bytes) -> dict[str, Any] | None:
    raw = store.db.get(schema.META_FATE + tx_hash)
    return None if raw is None else dict(decode(raw))


def begin(node: Node, era: int, ex: Exclusions, by: list[str], started_ms: int
          ) -> dict[str, Any]:
    store = node.store
    if store.db.get(schema.META_OP) is not None:
        raise StoreError("another recovery operation is in progress")
    if not archived_blocks(store, era):
        raise StoreError(f"no abandoned blocks archived for era {era}")
    record = {"kind": "replay", "era": era, "next": 0, "exclusions": ex.to_json(),
              "by": by, "started_ms": started_ms}
    store.db.put(schema.META_OP, encode(record), sync=True)
    return record


def run(node: Node, record: dict[str, Any]) -> dict[str, Any]:
    """Replay from ``record['next']`` to the end; returns the report (also written to
    ``data/reports/replay-era-<era>.json``)."""
    store = node.store
    era = int(record["era"])
    ex = Exclusions.from_json(record["exclusions"])
    blocks = archived_blocks(store, era, node.params.producer)
    from node.admin import test_kill_hook

    hook = test_kill_hook("APPCHAIN_TEST_KILL_REPLAY")
    for idx in range(int(record["next"]), len(blocks)):
        ab = blocks[idx]
        done = idx + 1 == len(blocks)
        a = assemble(store, node.params, ab, ex, node.head.height + 1, node.head.time + 1)
        meta: list[tuple[bytes, bytes | None]] = [
            (schema.META_FATE + f.hash, encode(f.to_obj())) for f in a.fates]
        nxt = dict(record, next=idx + 1)
        meta.append((schema.META_OP, None if done else encode(nxt)))
        if done:
            meta.append((schema.META_REPLAYED + str(era).encode(), b"1"))
        node.commit_block_now(a.included, a.time, meta, a.outcome)
        record = nxt
        if hook is not None:
            hook(None)
    return report(node, era)


def report(node: Node, era: int) -> dict[str, Any]:
    """Every abandoned transaction of ``era`` with its fate, and the totals."""
    fates: list[Fate] = []
    rows = []
    for ab in archived_blocks(node.store, era):
        for raw in ab.txs:
            doc = fate_of(node.store, sha256(raw))
            if doc is None:
                continue
            rows.append(doc)
            fates.append(Fate(bytes.fromhex(doc["hash"]), doc["era"], doc["height"],
                              doc["index"], doc["fate"], doc["reason"]))
    out = {"era": era, "summary": summarize(fates), "transactions": rows}
    path = Path(node.home.data_dir) / "reports" / f"replay-era-{era}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    out["path"] = str(path)
    return out
