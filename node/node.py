"""A running node: store, mempool, producer loop and the state RPC reads from.

One trio thread owns the mempool and the head; block execution and the LevelDB commit run in
a worker thread (plyvel releases the GIL and reads are thread-safe) so RPC keeps answering
during a commit. A cancelled producer waits for an in-flight commit to finish (trio's
``to_thread.run_sync`` does not abandon the thread), so shutdown never leaves half a block;
the commit itself is a single LevelDB batch, so even SIGKILL cannot.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import trio

from chain.block import Block, Header, SignedHeader, TxResult
from chain.codec import decode, encode
from chain.crypto import sha256
from chain.errors import ChainError, InvalidBlock
from chain.stateproof import StateProof
from chain.tx import Transaction, decode_tx
from genesis.format import Genesis
from genesis.initial_store import init_store
from node.config import Home, NodeConfig
from node.mempool import Mempool, MempoolReject, RejectCode, precheck
from node.metrics import NodeMetrics
from node.signer import Signer
from state.invariants import InvariantViolation
from state.meta import next_era
from state.params import ChainParams, load_params
from state.records import Account
from state.recovery import rollback
from state.recovery.audit import JOURNAL_FILE, AuditLog
from state.recovery.pins import auto_pin_writes, prunable_below
from state.schema import META_HALT_AT, STATE, TREE, account_key
from state.store import Head, Store, StoreError
from state.transition import BlockOutcome, apply_body, commit, import_block
from state.tree import StateTree

log = logging.getLogger("appchain.node")


class NodeError(Exception):
    """The node cannot start or continue; the message says what the operator should do."""


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


def wall_ms() -> int:
    """Wall clock in milliseconds: used only to stamp new blocks, never inside the state."""
    return time.time_ns() // 1_000_000


class Node:
    """Everything a node process holds; RPC handlers and the producer loop share it."""

    def __init__(self, home: Home, cfg: NodeConfig, genesis: Genesis,
                 signer: Signer | None) -> None:
        self.home = home
        self.cfg = cfg
        self.genesis = genesis
        self.signer = signer
        home.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(home.store_dir, sync=cfg.storage.sync)
        try:
            self._open_chain()
        except BaseException:
            self.store.close()
            raise
        self.params: ChainParams = load_params(self.store.overlay())
        self.mempool = Mempool(
            self.params, self.committed_nonce,
            max_size=cfg.mempool.size, max_tx_bytes=cfg.mempool.max_tx_bytes,
        )
        self.metrics = NodeMetrics()
        self._waiters: dict[bytes, _Waiter] = {}
        self._produce_lock = trio.Lock()
        self.halted: dict[str, Any] | None = self.store.halt_record()
        raw_at = self.store.db.get(META_HALT_AT)
        self.halt_at: dict[str, Any] | None = None if raw_at is None else dict(decode(raw_at))
        self.metrics.height.set(self.head.height)
        self.held_back: list[Transaction] = []
        """Mempool transactions set aside by a rollback, re-admitted on resume."""
        self.progress: dict[str, Any] | None = None
        """The long operation running now (replay, rehearsal) and how far it is, for
        ``admin_progress`` and ``status``; None when nothing runs."""
        if self._pending_replay is not None:
            from node import replay

            log.warning("finishing the interrupted replay of era %s from block %s",
                        self._pending_replay["era"], self._pending_replay["next"])
            try:
                replay.run(self, self._pending_replay)
            except BaseException:
                self.store.close()
                raise
            log.warning("replay finished at height %d", self.head.height)

    # -- startup ---------------------------------------------------------------------------

    def _open_chain(self) -> None:
        head = self.store.head()
        if head is None:
            head = init_store(self.store, self.genesis)
            log.info("initialised store from genesis %s", self.genesis.hash.hex())
        elif self.store.genesis_hash() != self.genesis.hash:
            raise NodeError(
                f"the store at {self.home.store_dir} was created from another genesis "
                f"({(self.store.genesis_hash() or b'').hex()}); config/genesis.json has "
                f"{self.genesis.hash.hex()}"
            )
        # Only once the store is known to be this chain's: the journal's entries may be
        # copied into it (state/audit.py).
        self.audit = AuditLog(self.store, self.home.data_dir / JOURNAL_FILE)
        op = rollback.operation(self.store)
        self._pending_replay: dict[str, Any] | None = None
        if op is not None and op.get("kind") == "rollback":
            # A rollback was interrupted (crash, kill): finish exactly that one first.
            log.warning("resuming the interrupted rollback to height %s (head %d)",
                        op["to_height"], head.height)
            head = rollback.run(self.store, op,
                                max_blocks=self.cfg.recovery.rollback_chunk_blocks)
            log.warning("rollback finished at height %d", head.height)
            self.audit.append({
                "time_ms": wall_ms(), "command": "rollback", "outcome": "ok",
                "operators": op.get("by", []), "args": {"to_height": str(op["to_height"])},
                "nonce": "", "summary": f"interrupted rollback finished at startup, height "
                                        f"{head.height}"})
        elif op is not None and op.get("kind") == "replay":
            if self.signer is None:
                raise NodeError("a replay was interrupted; only the producer can finish it: "
                                "start the node with its producer key")
            self._pending_replay = op  # finished once the node is set up (__init__)
        self.next_era = next_era(self.store, head)
        if self.signer is not None and self._pending_replay is None:
            # (an interrupted replay rebuilds its in-flight block identically instead)
            if self.signer.public_key != self.genesis.producer.pub_key:
                raise NodeError(
                    "config/priv_validator_key.json is not the genesis producer key "
                    f"({self.genesis.producer.pub_key.hex()})"
                )
            # Signed before a crash but not committed: the only block allowed here (after a
            # rollback, that is the first block of the new era).
            pending = self.signer.pending_block(self.next_era, head.height)
            if pending is not None:
                try:
                    head = import_block(self.store, pending)
                except ChainError as e:
                    raise NodeError(
                        f"the last-signed block at height {head.height + 1} (era "
                        f"{self.next_era}) does not apply on the stored head: {e}") from e
                log.info("re-committed signed block %d (era %d) from the last-signed record",
                         head.height, head.era)
                self.next_era = head.era
            elif self.next_era > head.era and self.signer.era >= self.next_era:
                raise NodeError(
                    f"the producer already signed in era {self.signer.era}, not below the "
                    f"new era {self.next_era}: refusing to produce")
        if self.signer is not None and self._pending_replay is None and \
                self.next_era == head.era:
            # The record and the store must agree. (After a rollback, next_era > head.era:
            # what was signed above the head belongs to the abandoned era, skipped here.)
            if self.signer.era == head.era and self.signer.height > head.height:
                raise NodeError(
                    f"the producer already signed height {self.signer.height} in era "
                    f"{head.era} but the store ends at {head.height}: the data directory "
                    "was restored from an older copy or lost blocks. Restore the newer "
                    "store; producing here could sign two different blocks at one height."
                )
            has_blocks = head.height >= self.genesis.initial_height
            if has_blocks and (self.signer.era, self.signer.height) < (head.era, head.height):
                # The record is written before every commit, so it can only be behind the
                # store if it was lost or replaced: the real last signature is unknown and
                # may be for a block above the head that was sent out but not committed.
                raise NodeError(
                    f"the last-signed record {self.home.signer_state_file} is missing or "
                    f"older than the store (record: era {self.signer.era} height "
                    f"{self.signer.height}; store: era {head.era} height {head.height}). "
                    "Restore the record that belongs to this store; producing without it "
                    "could sign two different blocks at one height."
                )
        problem = tree_root_problem(self.store, head)
        if problem is not None:
            raise NodeError(problem + f"; run `appchain verify --home {self.home.root}` and "
                            "restore the store from a good copy (docs/OPERATIONS.md §6)")
        self.head: Head = head

    def close(self) -> None:
        self.store.close()

    # -- halting ---------------------------------------------------------------------------

    def halt(self, reason: str, check: str, evidence: dict[str, Any], height: int,
             by: str = "guard") -> None:
        """Stop producing, durably: the halt record is in the store until an operator clears
        it, so a restart does not resume on its own."""
        record: dict[str, Any] = {
            "reason": reason, "check": check, "evidence": evidence,
            "at_height": str(height), "since_ms": str(wall_ms()), "by": by,
        }
        self.store.set_halt(record)
        self.halted = record
        self.store.db.delete(META_HALT_AT, sync=True)
        self.halt_at = None
        log.critical("HALTED by %s: %s; evidence %s", by, reason, evidence)

    def schedule_halt(self, at_height: int, reason: str, by: str) -> None:
        """Halt once the head reaches ``at_height`` (durable: survives a restart)."""
        record = {"at_height": str(at_height), "reason": reason, "by": by,
                  "scheduled_ms": str(wall_ms())}
        self.store.db.put(META_HALT_AT, encode(record), sync=True)
        self.halt_at = record

    def resume(self) -> None:
        """Clear the halt record and any scheduled halt: production goes on."""
        self.store.set_halt(None)
        self.store.db.delete(META_HALT_AT, sync=True)
        self.halted = None
        self.halt_at = None
        log.warning("resumed at height %d", self.head.height)

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

    def _scheduled_halt_due(self) -> bool:
        if self.halt_at is None or self.head.height < int(self.halt_at["at_height"]):
            return False
        at = self.halt_at
        self.halt(at["reason"], "operator", {"scheduled_at_height": at["at_height"]},
                  self.head.height, by=at["by"])
        return True

    # -- queries ---------------------------------------------------------------------------

    def committed_nonce(self, sender: bytes) -> int:
        raw = self.store.state_get(account_key(sender))
        return 0 if raw is None else Account.decode(raw).nonce

    # -- transactions ----------------------------------------------------------------------

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

        libsodium runs without the GIL, so signature checks use every core. Nothing is
        admitted: pass each result to :meth:`admit`, in order, on the trio thread.
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
            if self.halted is not None:
                raise MempoolReject(RejectCode.HALTED,
                                    f"the chain is halted: {self.halted['reason']}")
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

    async def submit_and_wait(self, raw: bytes, timeout_s: float) -> tuple[Transaction,
                                                                             Committed | None]:
        """Submit, then wait (bounded) until the transaction is in a committed block."""
        tx_hash = sha256(raw)
        loc = self.store.tx_location(tx_hash)
        if loc is not None:  # already committed (an earlier wait timed out just before)
            results = self.store.results(loc[0]) or []
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

    # -- production ------------------------------------------------------------------------

    def _build_and_commit(self, txs: list[Transaction], height: int,
                          block_time: int,
                          extra_meta: list[tuple[bytes, bytes | None]] | None = None,
                          outcome: BlockOutcome | None = None
                          ) -> tuple[Head, list[TxResult]]:
        """Worker-thread part: apply, sign (recording it first), commit. Returns the
        transactions' results followed by the block's own result (if it has events)."""
        if self.signer is None:
            raise NodeError("this node has no producer key")
        if outcome is None:
            outcome = apply_body(self.store, self.params, height, block_time, txs)
        header = Header(
            chain_id=self.params.chain_id,
            era=self.next_era,
            height=height,
            prev_hash=self.head.hash,
            time=block_time,
            tx_root=outcome.tx_root,
            results_root=outcome.results_root,
            state_root=outcome.state_root,
            producer=self.signer.public_key,
        )
        block, raw = self.signer.sign_block(header, tuple(tx.raw for tx in txs))
        snaps = self.cfg.snapshots
        new_head = Head(height, header.hash, header.state_root, header.era, block_time)
        pins = auto_pin_writes(self.store, new_head, snaps.interval, snaps.keep_recent,
                               wall_ms())
        head = commit(self.store, block, raw, txs, outcome,
                      extra_meta=pins + (extra_meta or []))
        keep = self.cfg.storage.keep_undo_blocks
        if keep:
            self.store.prune_undo(prunable_below(self.store, head, keep))
        return head, outcome.results  # after the transactions': the block's own events

    def commit_block_now(self, txs: list[Transaction], block_time: int,
                         extra_meta: list[tuple[bytes, bytes | None]] | None = None,
                         outcome: BlockOutcome | None = None
                         ) -> tuple[Head, list[TxResult]]:
        """Build, sign and commit a block of exactly ``txs`` at ``block_time``, also while
        halted (operator transactions, replay). Synchronous: call it holding the producer
        lock, from a worker thread. Returns the head and every result (the block's own
        last, if it has events)."""
        head, results = self._build_and_commit(txs, self.head.height + 1, block_time,
                                               extra_meta, outcome)
        self.head = head
        self.next_era = head.era
        self.metrics.block_committed(time.perf_counter(), head.height, head.era, len(txs), 0.0)
        if len(results) > len(txs):
            self.metrics.block_events([e.type for e in results[len(txs)].events])
        return head, results

    def system_block_time(self) -> int:
        """Time of a block made by an operator command: wall clock when running; while
        halted, one millisecond after the head, so the chain's clock does not jump (replayed
        blocks keep their original times after it)."""
        if self.halted is not None:
            return self.head.time + 1
        return max(self.head.time + 1, wall_ms())

    async def produce_block(self) -> Head:
        """Build, sign and commit one block from the mempool; notify waiters.

        Serialised: two overlapping calls would build the same height from the same head.
        """
        async with self._produce_lock:
            return await self._produce_block()

    async def _produce_block(self) -> Head:
        if self.halted is not None or self._scheduled_halt_due():
            return self.head  # halted: nothing is produced (the in-flight block finished)
        txs = self.mempool.reap(self.cfg.producer.max_txs_per_block)
        height = self.head.height + 1
        block_time = max(self.head.time + 1, wall_ms())
        t0 = time.perf_counter()
        try:
            head, results = await trio.to_thread.run_sync(
                self._build_and_commit, txs, height, block_time)
        except InvariantViolation as e:
            # A guard refused the block: nothing was signed or written. Stop producing until
            # an operator has looked (the record survives a restart).
            self.halt(f"guard refused block {height}: {e.message}", e.check, e.evidence,
                      height)
            raise
        except InvalidBlock as e:
            # A transaction the mempool admitted cannot run (a bug, or state changed under
            # it). Drop the batch's offender and let the next block go on without it.
            log.error("block %d could not be built: %s", height, e)
            self._drop_offender(txs, e)
            raise
        self.head = head
        self.next_era = head.era
        self.mempool.remove(txs)
        now = time.perf_counter()
        self.metrics.block_committed(now, head.height, head.era, len(txs), now - t0)
        if len(results) > len(txs):
            self.metrics.block_events([e.type for e in results[len(txs)].events])
        results = results[:len(txs)]
        self.metrics.mempool_size.set(len(self.mempool))
        for i, (tx, res) in enumerate(zip(txs, results, strict=True)):
            waiter = self._waiters.pop(tx.hash, None)
            if waiter is not None:
                waiter.committed = Committed(head.height, i, res)
                waiter.event.set()
        return head

    def _drop_offender(self, txs: list[Transaction], e: InvalidBlock) -> None:
        if e.tx_index is None:
            # Not one transaction's fault: keep nothing of this batch rather than retry it
            # forever (with each sender's later transactions, which depend on its nonces).
            # Their senders resubmit; waiters time out.
            log.error("dropping the whole batch of %d transactions", len(txs))
            first: dict[bytes, Transaction] = {}
            for tx in txs:
                first.setdefault(tx.sender, tx)
            for tx in first.values():
                self.mempool.evict(tx)
        else:
            dropped = self.mempool.evict(txs[e.tx_index])
            log.error("dropped %d transaction(s) of sender %s", len(dropped),
                      txs[e.tx_index].sender.hex())
        self.metrics.mempool_size.set(len(self.mempool))

    async def producer_loop(self) -> None:
        """Produce a block every ``block_interval_ms`` until cancelled."""
        interval = self.cfg.producer.block_interval_ms / 1000
        next_at = trio.current_time() + interval
        while True:
            await trio.sleep_until(next_at)
            now = trio.current_time()
            next_at = max(next_at + interval, now)
            if self.halted is not None:
                continue
            if self.halt_at is not None:
                async with self._produce_lock:
                    if self._scheduled_halt_due():
                        continue
            if not self.cfg.producer.empty_blocks and not len(self.mempool):
                continue
            try:
                await self.produce_block()
            except InvalidBlock:
                continue

    def block(self, height: int) -> Block | None:
        raw = self.store.block_bytes(height)
        return None if raw is None else Block.decode_block(raw)


@dataclass(frozen=True)
class QueryAnswer:
    """A state key's value at a height, with the proof and the signed header to check it."""

    key: bytes
    value: bytes | None
    height: int
    proof: StateProof | None
    signed_header: SignedHeader | None
    """None at the genesis height (its state root follows from the genesis file)."""


def query_state(store: Store, key: bytes, height: int | None, prove: bool) -> QueryAnswer:
    """Read ``key`` as of ``height`` (default: the head) from one consistent snapshot."""
    with store.snapshot() as snap:
        head = snap.head()
        if head is None:
            raise StoreError("store has no genesis")
        h = head.height if height is None else height
        view = snap.at_height(h)
        value = view.get(STATE + key)
        proof = StateTree(view.keyspace(TREE)).prove(key) if prove else None
        raw = snap.block_bytes(h)
        sh = Block.signed_header_of(raw) if raw is not None else None
    return QueryAnswer(key, value, h, proof, sh)


def tree_root_problem(store: Store, head: Head) -> str | None:
    """Why the store cannot be served as it is (its committed state tree does not end at the
    head's state root: something rewrote the tree outside the blocks), or None. Checked
    at start and before every resume; O(1) (one tree node read)."""
    root = StateTree(store.overlay(TREE)).root
    if root != head.state_root:
        return (f"the stored state tree's root {root.hex()} differs from the state root "
                f"{head.state_root.hex()} of the head (height {head.height}): the store was "
                "changed outside the blocks")
    return None


def open_node(home: Home) -> Node:
    """Load config, genesis and (if present) the producer key from a home, then open it."""
    from genesis.format import load_genesis
    from node.keyfile import read_key

    cfg = home.load_config()
    genesis = load_genesis(home.genesis_file)
    signer = None
    if home.producer_key_file.exists():
        key = read_key(home.producer_key_file)
        if key.public_key != genesis.producer.pub_key:  # before anything touches the store
            raise NodeError(
                f"{home.producer_key_file} is not the genesis producer key "
                f"({genesis.producer.pub_key.hex()})")
        signer = Signer(key, home.signer_state_file)
    try:
        return Node(home, cfg, genesis, signer)
    except StoreError as e:
        raise NodeError(str(e)) from e

