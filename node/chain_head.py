"""The chain as this node holds it: the store, the head and the era of the next block, and
whether production is halted.

Opening it (:meth:`ChainHead.open`, an explicit step, never the constructor) is where the
node recovers from a crash: an interrupted rollback is finished, a block that was signed but
not committed is re-committed, the producer's last-signed record is checked against the
store, and the stored state tree must end at the head's state root. Only then is the head
served or built on.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from typing import Any

from chain.errors import ChainError, Failure
from genesis.format import Genesis
from genesis.initial_store import init_store
from node.config import Home, NodeConfig
from node.node_error import NodeError
from node.signer import Signer
from state import meta
from state.checked_state import key_text, mismatched_keys
from state.meta import HaltRecord, ReplayOperation, RollbackOperation, ScheduledHalt
from state.records import Account
from state.recovery import chain_check, rollback
from state.recovery.audit import JOURNAL_FILE, AuditLog
from state.recovery.pins import prunable_below
from state.schema import TREE, account_key
from state.store import Head, Store
from state.transition import import_block
from state.tree import StateTree

log = logging.getLogger("appchain.node")

STORED_STATE = "stored_state"
"""The halt check of a stored value that differs from the committed tree."""

MIN_FREE_BYTES = 128 * 2**20
"""Free space needed before a store that failed a write is reopened (LevelDB's memtable is
64 MiB and reopening writes it out to a table)."""


def wall_ms() -> int:
    """Wall clock in milliseconds: used only to stamp new blocks, never inside the state."""
    return time.time_ns() // 1_000_000


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


def stored_state_problem(store: Store, halted: HaltRecord | None) -> str | None:
    """After a ``stored_state`` halt: why the keys it named still cannot be served (their
    stored values still differ from the committed tree), or None once repaired. Checked at
    start and before every resume; one tree path per key."""
    if halted is None or halted.check != STORED_STATE:
        return None
    keys = []
    for k in halted.evidence.get("keys", ()):
        try:
            keys.append(bytes.fromhex(k["key"]))
        except (TypeError, KeyError, ValueError):
            continue
    bad = mismatched_keys(store.db, keys)
    if not bad:
        return None
    return (f"the stored value of {', '.join(key_text(e.key) for e in bad[:5])} still "
            "differs from the committed state tree (the halt's stored_state keys): the store "
            "was changed outside the blocks and is not repaired. Restore it from a backup or "
            "a snapshot file (docs/OPERATIONS.md §6, §8 stored_state)")


class ChainHead:
    """The committed head, the next block's era and the halt state of one store."""

    def __init__(self, home: Home, cfg: NodeConfig, genesis: Genesis, signer: Signer | None,
                 store: Store) -> None:
        self.home = home
        self.cfg = cfg
        self.genesis = genesis
        self.signer = signer
        self.store = store
        self.head: Head = Head(0, bytes(32), bytes(32), 0, 0)  # set by open()
        self.next_era = 0
        self.halted: HaltRecord | None = None
        self.halt_at: ScheduledHalt | None = None
        self.audit: AuditLog | None = None
        self.watchers: list[Callable[[], None]] = []
        """Called (from any thread) when the head moves or the halt changes: the peer
        protocol wakes its connections."""

    # -- opening: startup recovery -----------------------------------------------------------

    def open(self) -> ReplayOperation | None:
        """Initialise the store from genesis or check it belongs to this genesis, finish an
        interrupted rollback, check the signer against the store, check the tree root.
        Returns an interrupted replay, which the node finishes once it is set up."""
        head = self.store.head()
        if head is None:
            head = init_store(self.store, self.genesis)
            log.info("initialised store from genesis %s", self.genesis.hash.hex())
        elif self.store.genesis_hash() != self.genesis.hash:
            raise NodeError(
                f"the store at {self.home.store_dir} was created from another genesis "
                f"({(self.store.genesis_hash() or b'').hex()}); config/genesis.json has "
                f"{self.genesis.hash.hex()}")
        # Only once the store is known to be this chain's: the journal's entries may be
        # copied into it (state/recovery/audit.py).
        self.audit = AuditLog(self.store, self.home.data_dir / JOURNAL_FILE)
        op = meta.operation(self.store)
        pending_replay: ReplayOperation | None = None
        if isinstance(op, RollbackOperation):
            head = self._finish_rollback(op, head)
        elif isinstance(op, ReplayOperation):
            if self.signer is None:
                raise NodeError("a replay was interrupted; only the producer can finish it: "
                                "start the node with its producer key")
            pending_replay = op
        self.next_era = meta.next_era(self.store, head)
        if self.signer is not None and pending_replay is None:
            # (an interrupted replay rebuilds its in-flight block identically instead)
            head = self._check_signer(self.signer, head)
        problem = tree_root_problem(self.store, head)
        if problem is not None:
            raise NodeError(problem + f"; run `appchain verify --home {self.home.root}` and "
                            "restore the store from a good copy (docs/OPERATIONS.md §6)")
        self._check_tail(head)
        self.head = head
        self.halted = meta.halt(self.store)
        problem = stored_state_problem(self.store, self.halted)
        if problem is not None:
            raise NodeError(problem, reason=STORED_STATE)
        self.halt_at = meta.scheduled_halt(self.store)
        return pending_replay

    def _check_tail(self, head: Head) -> None:
        """The newest ``storage.check_tail_blocks`` blocks' record must be whole: a hole or a
        mismatch (a damaged store) refuses the start, naming the first height."""
        n = self.cfg.storage.check_tail_blocks
        if n <= 0:
            return
        low = max(0, head.height - n + 1)
        undo_from = max(low, prunable_below(self.store, head,
                                            self.cfg.storage.keep_undo_blocks))
        problems = chain_check.check_range(self.store, head, low, undo_from, max_problems=n)
        if problems:
            raise NodeError(
                f"the store at {self.home.store_dir} is damaged at {problems[0]}"
                + (f" (problems at heights "
                   f"{chain_check.heights_text([p.height for p in problems])})"
                   if len(problems) > 1 else "")
                + f"; the node will not serve it. Run `appchain verify --home "
                f"{self.home.root} --chain` for the whole list, then restore the store from "
                "a backup or a snapshot file (docs/OPERATIONS.md §6, §7)",
                reason="store_damaged")

    def _finish_rollback(self, op: RollbackOperation, head: Head) -> Head:
        """A rollback was interrupted (crash, kill): finish exactly that one first."""
        log.warning("resuming the interrupted rollback to height %s (head %d)", op.to_height,
                    head.height)
        head = rollback.run(self.store, op, max_blocks=self.cfg.recovery.rollback_chunk_blocks)
        log.warning("rollback finished at height %d", head.height)
        assert self.audit is not None
        self.audit.append({
            "time_ms": wall_ms(), "command": "rollback", "outcome": "ok",
            "operators": list(op.by), "args": {"to_height": str(op.to_height)}, "nonce": "",
            "summary": f"interrupted rollback finished at startup, height {head.height}"})
        return head

    def _check_signer(self, signer: Signer, head: Head) -> Head:
        """The producer's last-signed record and the store must agree; a block signed but
        not committed before a crash is the only one allowed at the next height, and is
        committed now (after a rollback, that is the first block of the new era)."""
        if signer.public_key != self.genesis.producer.pub_key:
            raise NodeError("config/priv_validator_key.json is not the genesis producer key "
                            f"({self.genesis.producer.pub_key.hex()})")
        pending = signer.pending_block(self.next_era, head.height)
        if pending is not None:
            try:
                head = import_block(self.store, pending)
            except ChainError as e:
                raise NodeError(f"the last-signed block at height {head.height + 1} (era "
                                f"{self.next_era}) does not apply on the stored head: {e}"
                                ) from e
            log.info("re-committed signed block %d (era %d) from the last-signed record",
                     head.height, head.era)
            self.next_era = head.era
        elif self.next_era > head.era and signer.era >= self.next_era:
            raise NodeError(f"the producer already signed in era {signer.era}, not below the "
                            f"new era {self.next_era}: refusing to produce")
        if self.next_era != head.era:
            return head  # what was signed above the head belongs to the abandoned era
        if signer.era == head.era and signer.height > head.height:
            raise NodeError(
                f"the producer already signed height {signer.height} in era {head.era} but "
                f"the store ends at {head.height}: the data directory was restored from an "
                "older copy or lost blocks. Restore the newer store; producing here could "
                "sign two different blocks at one height.")
        has_blocks = head.height >= self.genesis.initial_height
        if has_blocks and (signer.era, signer.height) < (head.era, head.height):
            # The record is written before every commit, so it can only be behind the store
            # if it was lost or replaced: the real last signature is unknown and may be for a
            # block above the head that was sent out but not committed.
            raise NodeError(
                f"the last-signed record {self.home.signer_state_file} is missing or older "
                f"than the store (record: era {signer.era} height {signer.height}; store: era "
                f"{head.era} height {head.height}). Restore the record that belongs to this "
                "store; producing without it could sign two different blocks at one height.")
        return head

    # -- the head moves ----------------------------------------------------------------------

    def advance(self, head: Head) -> None:
        """A block was committed on the head."""
        self.head = head
        self.next_era = head.era
        self._moved()

    def rolled_back(self, head: Head) -> None:
        """A rollback moved the head down; the next block opens the new era."""
        self.head = head
        self.next_era = meta.next_era(self.store, head)
        self._moved()

    def _moved(self) -> None:
        for w in self.watchers:
            w()

    def committed_nonce(self, sender: bytes) -> int:
        raw = self.store.state_get(account_key(sender))
        return 0 if raw is None else Account.decode(raw).nonce

    # -- halts -------------------------------------------------------------------------------

    def halt(self, reason: str, check: str, evidence: dict[str, Any], height: int,
             by: str = "guard") -> None:
        """Stop producing, durably: the halt record is in the store until an operator clears
        it, so a restart does not resume on its own."""
        record = HaltRecord(reason, check, evidence, height, wall_ms(), by)
        self.halted, self.halt_at = record, None
        self._moved()
        log.critical("HALTED by %s: %s; evidence %s", by, reason, evidence)
        try:
            meta.set_halt(self.store, record)
        except (OSError, Failure) as e:
            # The disk that failed the block may refuse this write too: the node stays
            # halted in memory (status says so) and a restart halts again on the same cause.
            log.critical("the halt record could not be written (%s): halted in memory only",
                         e)

    def recover_storage(self) -> None:
        """After a storage I/O failure (check ``storage_io``): LevelDB refuses every write
        until it is reopened, even once space is back. Refuses while the disk is still
        nearly full, then reopens the store and checks it still ends at the served head."""
        free = shutil.disk_usage(self.home.store_dir).free
        if free < MIN_FREE_BYTES:
            raise NodeError(f"only {free // 2**20} MiB free on the disk of "
                            f"{self.home.store_dir} (need {MIN_FREE_BYTES // 2**20} MiB): "
                            "free space first", reason="disk_full")
        self.store.reopen()
        head = self.store.head()
        if head != self.head:
            raise NodeError(f"after reopening, the store's head ({head}) is not the head "
                            f"this node served ({self.head})", reason="store_changed")

    def schedule_halt(self, at_height: int, reason: str, by: str) -> None:
        """Halt once the head reaches ``at_height`` (durable: survives a restart)."""
        record = ScheduledHalt(at_height, reason, by, wall_ms())
        meta.schedule_halt(self.store, record)
        self.halt_at = record

    def resume(self) -> None:
        """Clear the halt record and any scheduled halt: production goes on."""
        meta.set_halt(self.store, None)
        self.halted, self.halt_at = None, None
        self._moved()
        log.warning("resumed at height %d", self.head.height)

    def scheduled_halt_due(self) -> bool:
        """Halt now if a scheduled halt's height is reached; whether it did."""
        at = self.halt_at
        if at is None or self.head.height < at.at_height:
            return False
        self.halt(at.reason, "operator", {"scheduled_at_height": str(at.at_height)},
                  self.head.height, by=at.by)
        return True
