"""Rehearsal: the whole recovery, run in a scratch copy of the store, before anything is done.

The same steps the operators will take (rollback to the target, their operator transactions
such as ``cancel_orders``, replay with their exclusions, the compensation report) run over a
copy-on-write layer on a snapshot of the store (state/kv.py ``ScratchKV``): the real chain
keeps running (or stays halted) untouched, and the scratch costs what the recovery changes,
not the size of the state. Every step is the production code path, so the real run
afterwards produces the same fates and the same report (same ``id``), provided it starts
from the same head (halt first) with the same certificate reason, operator commands and
exclusions.

Blocks in the scratch are signed with a throwaway key, never the producer's: a rehearsal
must never sign anything that could be mistaken for a block of the chain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chain.crypto import PrivateKey
from chain.tx import Transaction
from state.meta import Fate
from state.params import load_params
from state.recovery import rollback
from state.recovery.archive import Exclusions
from state.recovery.compensation import build_report
from state.recovery.replay import Progress, begin_record, fates_of, run_replay, summarize
from state.store import Head, Store
from state.store_errors import OperationRefused
from state.transition import BlockOutcome, apply_body, seal


@dataclass(frozen=True)
class RehearsalPlan:
    """What the real recovery will do."""

    to_height: int
    certificate: bytes
    """The signed fork certificate of the new era (as for the real rollback)."""
    reason: str
    restore_file: str | None
    """The pre-maintenance snapshot file the real rollback would restore, if any."""
    operator_txs: tuple[Transaction, ...] = ()
    """Operator transactions committed after the rollback and before the replay, one block
    each, one millisecond apart (as the admin endpoint commits them on a halted chain)."""
    exclusions: Exclusions = Exclusions()


@dataclass(frozen=True)
class RehearsalResult:
    era: int
    fates: tuple[Fate, ...]
    summary: dict[str, Any]
    report: dict[str, Any]
    operator_results: tuple[dict[str, Any], ...]
    """Per operator transaction: its height, code and log in the scratch chain."""
    replayed_to_height: int


def rehearse(store: Store, plan: RehearsalPlan,
             on_progress: Callable[[Progress], None] | None = None) -> RehearsalResult:
    """Run the recovery described by ``plan`` in a scratch copy of ``store``."""
    scratch = Store.scratch_of(store)
    try:
        head = scratch.head()
        assert head is not None
        era = head.era
        rp = rollback.plan_rollback(scratch, plan.to_height, details=False)
        record = rollback.begin(scratch, rp, plan.certificate, plan.reason, [], 0,
                                plan.restore_file)
        rollback.run(scratch, record)
        params = load_params(scratch.overlay())
        key = PrivateKey.generate()  # never the producer key (module docstring)

        def commit(txs: list[Transaction], time: int, meta: list[tuple[bytes, bytes | None]],
                   outcome: BlockOutcome) -> Head:
            return seal(scratch, params, key, txs, time, outcome, meta)

        results = _operator_blocks(scratch, params, plan.operator_txs, commit)
        rec = begin_record(scratch, era, plan.exclusions, [], 0)
        run_replay(scratch, params, rec, commit, fork_height=plan.to_height,
                   on_progress=on_progress)
        fates = tuple(fates_of(scratch, era))
        report = build_report(scratch, era)
        end = scratch.head()
        assert end is not None
        return RehearsalResult(era, fates, summarize(fates), report, tuple(results),
                               end.height)
    finally:
        scratch.close()


def _operator_blocks(scratch: Store, params: Any, txs: Sequence[Transaction],
                     commit: Callable[[list[Transaction], int, list[tuple[bytes, bytes | None]],
                                       BlockOutcome], Head]) -> list[dict[str, Any]]:
    out = []
    for tx in txs:
        head = scratch.head()
        assert head is not None
        outcome = apply_body(scratch, params, head.height + 1, head.time + 1, [tx])
        new = commit([tx], head.time + 1, [], outcome)
        r = outcome.results[0]
        if r.code != 0:
            raise OperationRefused(f"operator transaction {tx.hash.hex()} fails in the rehearsal: "
                             f"{r.log}")
        out.append({"height": str(new.height), "hash": tx.hash.hex(), "code": r.code,
                    "events": len(r.events)})
    return out
