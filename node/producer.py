"""The producer: build a block from the mempool, sign it (recording the signature first),
commit it in one batch, every block interval.

Block execution and the LevelDB commit run in a worker thread (plyvel releases the GIL and
reads are thread-safe) so RPC keeps answering during a commit. A cancelled producer waits
for an in-flight commit to finish (trio's ``to_thread.run_sync`` does not abandon the
thread), so shutdown never leaves half a block; the commit itself is a single LevelDB batch,
so even SIGKILL cannot. Everything that writes blocks (operator transactions, rollback,
replay) runs inside :meth:`Producer.exclusive`, so an in-flight block always finishes first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from chain.block import Block, Header, TxResult
from chain.errors import Failure, InvalidBlock
from chain.tx import Transaction, decode_tx
from node.chain_head import ChainHead, wall_ms
from node.config import NodeConfig
from node.intake import Intake
from node.metrics import NodeMetrics
from node.node_error import NodeError
from node.signer import Signer
from state.invariants import InvariantViolation
from state.meta import MetaWrite
from state.params import ChainParams
from state.recovery.pins import auto_pin_writes, prunable_below
from state.store import Head
from state.transition import BlockOutcome, apply_body, commit, import_block

log = logging.getLogger("appchain.node")

STORAGE_IO = "storage_io"
"""The halt check of a block the node could not write (its own I/O failed)."""


class Producer:
    """Builds, signs and commits blocks on the chain's head."""

    def __init__(self, chain: ChainHead, intake: Intake, signer: Signer | None,
                 params: ChainParams, cfg: NodeConfig, metrics: NodeMetrics) -> None:
        self.chain = chain
        self.intake = intake
        self.signer = signer
        self.params = params
        self.cfg = cfg
        self.metrics = metrics
        self._lock = trio.Lock()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """No block is built while inside (a block being built finishes first)."""
        async with self._lock:
            yield

    def _build_and_commit(self, txs: list[Transaction], height: int, block_time: int,
                          extra_meta: list[MetaWrite] | None = None,
                          outcome: BlockOutcome | None = None, leave_out: bool = False
                          ) -> tuple[Head, BlockOutcome]:
        """Worker-thread part: apply, sign (recording it first), commit. Returns the new
        head and the outcome (``results``: the included transactions' results followed by
        the block's own result, if it has events). ``leave_out``: the mempool's
        non-includable transactions are left out of the block (``outcome.left_out``)."""
        if self.signer is None:
            raise NodeError("this node has no producer key")
        store, head = self.chain.store, self.chain.head
        if outcome is None:
            outcome = apply_body(store, self.params, height, block_time, txs,
                                 leave_out=leave_out)
        txs = outcome.included
        header = Header(chain_id=self.params.chain_id, era=self.chain.next_era, height=height,
                        prev_hash=head.hash, time=block_time, tx_root=outcome.tx_root,
                        results_root=outcome.results_root, state_root=outcome.state_root,
                        producer=self.signer.public_key)
        block, raw = self.signer.sign_block(header, tuple(tx.raw for tx in txs))
        snaps = self.cfg.snapshots
        new_head = Head(height, header.hash, header.state_root, header.era, block_time)
        pins = auto_pin_writes(store, new_head, snaps.interval, snaps.keep_recent, wall_ms())
        committed = commit(store, block, raw, txs, outcome, extra_meta=pins + (extra_meta or []))
        keep = self.cfg.storage.keep_undo_blocks
        if keep:
            store.prune_undo(prunable_below(store, committed, keep))
        return committed, outcome

    def _committed(self, head: Head, txs: list[Transaction], results: list[TxResult],
                   built_s: float) -> None:
        self.chain.advance(head)
        self.metrics.block_committed(time.perf_counter(), head.height, head.era, len(txs),
                                     built_s)
        if len(results) > len(txs):
            self.metrics.block_events([e.type for e in results[len(txs)].events])

    def commit_block_now(self, txs: list[Transaction], block_time: int,
                         extra_meta: list[MetaWrite] | None = None,
                         outcome: BlockOutcome | None = None) -> tuple[Head, list[TxResult]]:
        """Build, sign and commit a block of exactly ``txs`` at ``block_time``, also while
        halted (operator transactions, replay). Synchronous: call it inside
        :meth:`exclusive`, from a worker thread. Returns the head and every result (the
        block's own last, if it has events)."""
        head, out = self._build_and_commit(txs, self.chain.head.height + 1, block_time,
                                           extra_meta, outcome)
        self._committed(head, out.included, out.results, 0.0)
        return head, out.results

    async def recover_storage(self) -> None:
        """Resuming after a storage I/O halt: reopen the store (LevelDB refuses writes until
        then) and commit the block that was signed but not committed when the write failed,
        if there is one: the only block the producer may still put at that height."""
        async with self._lock:
            chain = self.chain
            chain.recover_storage()
            signer = self.signer
            pending = (None if signer is None
                       else signer.pending_block(chain.next_era, chain.head.height))
            if pending is None:
                return
            head = await trio.to_thread.run_sync(import_block, chain.store, pending)
            block = Block.decode_block(pending)
            txs = [decode_tx(raw) for raw in block.txs]
            results = [TxResult.decode(r) for r in chain.store.results(head.height) or []]
            self._committed(head, txs, results, 0.0)
            self.intake.committed(txs, head, results[:len(txs)])
            log.warning("committed the signed block %d left by the failed write", head.height)

    def system_block_time(self) -> int:
        """Time of a block made by an operator command: wall clock when running; while
        halted, one millisecond after the head, so the chain's clock does not jump (replayed
        blocks keep their original times after it)."""
        head = self.chain.head
        if self.chain.halted is not None:
            return head.time + 1
        return max(head.time + 1, wall_ms())

    async def produce_block(self) -> Head:
        """Build, sign and commit one block from the mempool; notify waiters. Serialised:
        two overlapping calls would build the same height from the same head."""
        async with self._lock:
            return await self._produce_block()

    async def _produce_block(self) -> Head:
        chain = self.chain
        if chain.halted is not None or chain.scheduled_halt_due():
            return chain.head  # halted: nothing is produced (the in-flight block finished)
        txs = self.intake.mempool.reap(self.cfg.producer.max_txs_per_block)
        height = chain.head.height + 1
        block_time = max(chain.head.time + 1, wall_ms())
        t0 = time.perf_counter()
        try:
            head, out = await trio.to_thread.run_sync(
                self._build_and_commit, txs, height, block_time, None, None, True)
        except InvariantViolation as e:
            # A guard refused the block: nothing was signed or written. Stop producing until
            # an operator has looked (the record survives a restart).
            chain.halt(f"guard refused block {height}: {e.message}", e.check, e.evidence,
                       height)
            raise
        except InvalidBlock as e:
            # A transaction the mempool admitted cannot run (a bug, or state changed under
            # it). Drop the batch's offender and let the next block go on without it.
            log.error("block %d could not be built: %s", height, e)
            self.intake.evict_offender(txs, e.tx_index)
            raise
        except Failure as e:
            if isinstance(e.__cause__, OSError):
                chain.halt(f"block {height} could not be written: {e.message}", STORAGE_IO,
                           {"errno": str(e.__cause__.errno or ""), "error": e.message}, height,
                           by="node")
                raise
            # The node's own storage or state is broken: no transaction is to blame. Halt,
            # keep serving reads, and say why.
            chain.halt(f"block {height} could not be built: {e.message}", "failure",
                       {"reason": e.reason, "error": e.message}, height)
            raise
        except OSError as e:
            # The node's own I/O failed (a full disk, no file descriptors left) writing the
            # last-signed record or the block: nothing was committed, the transactions stay
            # in the mempool. Halt rather than exit; `admin resume` recovers once the cause
            # is gone (recover_storage).
            chain.halt(f"block {height} could not be written: {e}", STORAGE_IO,
                       {"errno": str(e.errno or ""), "error": str(e)}, height, by="node")
            raise
        txs, results = out.included, out.results
        self._committed(head, txs, results, time.perf_counter() - t0)
        self.intake.committed(txs, head, results[:len(txs)])
        if out.left_out:
            self.intake.left_out(out.left_out)
        return head

    async def producer_loop(self) -> None:
        """Produce a block every ``block_interval_ms`` until cancelled."""
        interval = self.cfg.producer.block_interval_ms / 1000
        next_at = trio.current_time() + interval
        chain = self.chain
        while True:
            await trio.sleep_until(next_at)
            now = trio.current_time()
            next_at = max(next_at + interval, now)
            if chain.halted is not None:
                continue
            if chain.halt_at is not None:
                async with self._lock:
                    if chain.scheduled_halt_due():
                        continue
            if not self.cfg.producer.empty_blocks and not len(self.intake.mempool):
                continue
            try:
                await self.produce_block()
            except (InvalidBlock, Failure, OSError):
                continue
