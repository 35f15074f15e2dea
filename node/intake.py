"""Transaction intake: stateless checks (signatures on every core), admission to the mempool,
and waiting for a transaction's commit.

The mempool and the waiters are owned by the trio thread; signature checks run in worker
threads (libsodium releases the GIL). A halted chain admits nothing; a rollback sets the
mempool's transactions aside (``held_back``) until ``resume`` offers them again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import trio

from chain.block import TxResult
from chain.crypto import sha256
from chain.tx import Transaction, decode_tx
from node.chain_head import ChainHead
from node.mempool import Mempool, MempoolReject, RejectCode, precheck
from node.metrics import NodeMetrics
from state.params import ChainParams
from state.store import Head

log = logging.getLogger("appchain.node")


@dataclass(frozen=True)
class Committed:
    """What ``broadcast_tx_commit`` waiters learn about their transaction."""

    height: int
    index: int
    result: TxResult


class _Waiter:
    """Everyone waiting for one transaction's commit (several calls may overlap)."""

    __slots__ = ("event", "committed", "count")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.committed: Committed | None = None
        self.count = 0


class Intake:
    """Checks, admits and tracks transactions until they are committed."""

    def __init__(self, chain: ChainHead, params: ChainParams, mempool: Mempool,
                 metrics: NodeMetrics) -> None:
        self.chain = chain
        self.params = params
        self.mempool = mempool
        self.metrics = metrics
        self._waiters: dict[bytes, _Waiter] = {}
        self.held_back: list[Transaction] = []
        """Mempool transactions set aside by a rollback, re-admitted on resume."""

    def submit(self, raw: bytes) -> Transaction:
        """Check a transaction into the mempool (raises ``MempoolReject``)."""
        try:
            checked: Transaction | MempoolReject = precheck(
                raw, self.params, self.mempool.max_tx_bytes)
        except MempoolReject as e:
            checked = e
        return self.admit(checked)

    async def precheck_many(self, raws: list[bytes], workers: int | None = None
                            ) -> list[Transaction | MempoolReject]:
        """Stateless checks of many transactions, signatures verified on ``workers`` threads.

        Nothing is admitted: pass each result to :meth:`admit`, in order, on the trio thread.
        """
        workers = workers or os.cpu_count() or 1
        chunk = max(1, -(-len(raws) // workers))
        parts = [raws[i:i + chunk] for i in range(0, len(raws), chunk)]
        checked: list[list[Transaction | MempoolReject]] = [[] for _ in parts]
        params, limit = self.params, self.mempool.max_tx_bytes

        def check_part(i: int) -> None:
            out = checked[i]
            for raw in parts[i]:
                try:
                    out.append(precheck(raw, params, limit))
                except MempoolReject as e:
                    out.append(e)
                except Exception as e:  # a bug: answered per item, never a lost batch
                    log.exception("internal error checking a transaction")
                    out.append(MempoolReject(RejectCode.INTERNAL, f"internal error: {e}"))

        async with trio.open_nursery() as nursery:
            for i in range(len(parts)):
                nursery.start_soon(trio.to_thread.run_sync, check_part, i)
        return [item for part in checked for item in part]

    def admit(self, checked: Transaction | MempoolReject) -> Transaction:
        """Admit a prechecked transaction (or raise the refusal it already carries)."""
        try:
            if isinstance(checked, MempoolReject):
                raise checked
            halted = self.chain.halted
            if halted is not None:
                raise MempoolReject(RejectCode.HALTED, f"the chain is halted: {halted.reason}")
            tx = self.mempool.add(checked)
        except MempoolReject as e:
            self.metrics.tx_rejected.labels(e.code.name.lower()).inc()
            raise
        self.metrics.mempool_size.set(len(self.mempool))
        return tx

    async def submit_many(self, raws: list[bytes]) -> list[Transaction | MempoolReject]:
        """Check and admit many transactions in order; refusals are returned, not raised."""
        results: list[Transaction | MempoolReject] = []
        for item in await self.precheck_many(raws):
            try:
                results.append(self.admit(item))
            except MempoolReject as e:
                results.append(e)
        return results

    async def submit_and_wait(self, raw: bytes, timeout_s: float
                              ) -> tuple[Transaction, Committed | None]:
        """Submit, then wait (bounded) until the transaction is in a committed block."""
        tx_hash = sha256(raw)
        store = self.chain.store
        loc = store.tx_location(tx_hash)
        if loc is not None:  # already committed (an earlier wait timed out just before)
            results = store.results(loc[0]) or []
            if loc[1] < len(results):
                return decode_tx(raw), Committed(loc[0], loc[1],
                                                 TxResult.decode(results[loc[1]]))
        pending = self.mempool.get(tx_hash)
        # Waiting again for a transaction that is still pending (an earlier wait timed out)
        # is allowed: only a new submission of it would be a duplicate.
        tx = pending if pending is not None else self.submit(raw)
        waiter = self._waiters.get(tx.hash)
        if waiter is None:
            waiter = self._waiters[tx.hash] = _Waiter()
        waiter.count += 1
        try:
            with trio.move_on_after(timeout_s):  # the caller asked for a bounded wait
                await waiter.event.wait()
        finally:
            waiter.count -= 1
            if waiter.committed is None and waiter.count == 0:
                self._waiters.pop(tx.hash, None)  # the last one waiting gave up
        return tx, waiter.committed

    def committed(self, txs: list[Transaction], head: Head, results: list[TxResult]) -> None:
        """A block holding ``txs`` was committed: out of the mempool, waiters told."""
        self.mempool.remove(txs)
        self.metrics.mempool_size.set(len(self.mempool))
        for i, (tx, res) in enumerate(zip(txs, results, strict=True)):
            waiter = self._waiters.pop(tx.hash, None)
            if waiter is not None:
                waiter.committed = Committed(head.height, i, res)
                waiter.event.set()

    def evict_offender(self, txs: list[Transaction], tx_index: int | None) -> None:
        """A built block was invalid: drop the transaction to blame with its sender's later
        ones, or (no one to blame) the first transaction of every sender in the batch."""
        if tx_index is None:
            # Keep nothing of this batch rather than retry it forever (with each sender's
            # later transactions, which depend on its nonces). Senders resubmit.
            log.error("dropping the whole batch of %d transactions", len(txs))
            first: dict[bytes, Transaction] = {}
            for tx in txs:
                first.setdefault(tx.sender, tx)
            for tx in first.values():
                self.mempool.evict(tx)
        else:
            dropped = self.mempool.evict(txs[tx_index])
            log.error("dropped %d transaction(s) of sender %s", len(dropped),
                      txs[tx_index].sender.hex())
        self.metrics.mempool_size.set(len(self.mempool))

    def left_out(self, txs: list[Transaction]) -> None:
        """The producer left these out of its block as not includable (their sender had no
        account record when they would have run, e.g. the transfer meant to fund it failed):
        out of the mempool, each with the sender's later ones."""
        senders: set[bytes] = set()
        for tx in txs:
            if tx.sender not in senders:
                senders.add(tx.sender)
                self.mempool.evict(tx)
        log.warning("left %d transaction(s) of %d sender(s) without an account out of the "
                    "block", len(txs), len(senders))
        self.metrics.mempool_size.set(len(self.mempool))

    def hold_back(self) -> int:
        """A rollback: set the mempool's transactions aside until resume; how many now."""
        self.held_back.extend(self.mempool.drain())
        self.metrics.mempool_size.set(len(self.mempool))
        return len(self.held_back)

    def readmit_held_back(self) -> tuple[int, list[dict[str, str]]]:
        """Re-admit the transactions a rollback set aside, in arrival order; those the
        restored state no longer accepts are dropped, each with its reason."""
        held, self.held_back = self.held_back, []
        ok = 0
        dropped: list[dict[str, str]] = []
        for tx in held:
            try:
                self.mempool.add(tx)
                ok += 1
            except MempoolReject as e:
                dropped.append({"hash": tx.hash.hex(), "reason": e.code.name.lower(),
                                "message": e.message})
        self.metrics.mempool_size.set(len(self.mempool))
        if dropped:
            log.warning("after the rollback, %d held-back transaction(s) were dropped",
                        len(dropped))
        return ok, dropped
