"""A running node: the chain it holds, its transaction intake and its producer, composed.

:func:`open_node` loads a home and opens it; opening (``Node.open``) is the explicit startup
step in which the node recovers from a crash (node/chain_head.py) and finishes an
interrupted replay before it serves anything.
"""

from __future__ import annotations

import logging
from typing import Any

from genesis.format import Genesis, load_genesis
from node.chain_head import ChainHead
from node.config import Home, NodeConfig
from node.follower_state import FollowerState
from node.head_watch import HeadWatch
from node.intake import Intake
from node.keyfile import read_key
from node.mempool import Mempool, store_accounts
from node.metrics import NodeMetrics
from node.node_error import NodeError
from node.producer import Producer
from node.replay_runner import finish_interrupted_replay
from node.signer import Signer
from state.kv_level import LevelDBOptions
from state.meta import HaltRecord, ScheduledHalt
from state.params import ChainParams, load_params
from state.recovery.audit import AuditLog
from state.store import Head, Store
from state.store_errors import StoreError

log = logging.getLogger("appchain.node")


class Node:
    """Everything a node process holds; the RPC, the operator endpoint and the producer loop
    share it through its parts: ``chain``, ``intake``, ``producer``."""

    def __init__(self, home: Home, cfg: NodeConfig, genesis: Genesis,
                 signer: Signer | None) -> None:
        self.home = home
        self.cfg = cfg
        self.genesis = genesis
        self.signer = signer
        home.data_dir.mkdir(parents=True, exist_ok=True)
        st = cfg.storage
        self.store = Store(home.store_dir, sync=st.sync, options=LevelDBOptions(
            st.cache_mb << 20, st.write_buffer_mb << 20, st.max_open_files))
        self.chain = ChainHead(home, cfg, genesis, signer, self.store)
        self.metrics = NodeMetrics()
        self.progress: dict[str, Any] | None = None
        """The long operation running now (replay, rehearsal) and how far it is, for
        ``admin_progress``; None when nothing runs."""
        self.follower: FollowerState | None = None
        """Set on a node that follows a producer (node/p2p/follower.py)."""
        self.rpc_url = ""
        """This node's public RPC URL once it listens (told to peers in ``hello``)."""
        self.head_watch: HeadWatch | None = None
        """Pokes trio tasks when the head moves (set by ``run_node``)."""

    def open(self) -> Node:
        """Recover from a crash, then set up intake and producer; finish an interrupted
        replay (only the producer can). Closes the store if it cannot open."""
        try:
            pending_replay = self.chain.open()
            self.params: ChainParams = load_params(self.store.overlay())
            mcfg = self.cfg.mempool
            mempool = Mempool(self.params, store_accounts(self.store),
                              max_size=mcfg.size, max_tx_bytes=mcfg.max_tx_bytes,
                              min_sender_balance=mcfg.min_sender_balance,
                              max_txs_per_sender=mcfg.max_txs_per_sender)
            self.intake = Intake(self.chain, self.params, mempool, self.metrics)
            self.producer = Producer(self.chain, self.intake, self.signer, self.params,
                                     self.cfg, self.metrics)
            self.metrics.height.set(self.head.height)
            try:  # (blocks are never pruned: the lowest held is known from the start)
                held = self.store.earliest_block_height()
            except StoreError:  # a damaged table: served reads of it answer 1040 anyway
                held = None
            # the lowest height whose block this node holds (``status``)
            self.earliest_block_height = held if held is not None else self.head.height + 1
            if pending_replay is not None:
                finish_interrupted_replay(self, pending_replay)
        except BaseException:
            self.store.close()
            raise
        return self

    def close(self) -> None:
        self.store.close()

    @property
    def audit(self) -> AuditLog:
        assert self.chain.audit is not None  # set by open()
        return self.chain.audit

    @property
    def head(self) -> Head:
        return self.chain.head

    @property
    def next_era(self) -> int:
        return self.chain.next_era

    @property
    def halted(self) -> HaltRecord | None:
        return self.chain.halted

    @property
    def halt_at(self) -> ScheduledHalt | None:
        return self.chain.halt_at

    @property
    def mempool(self) -> Mempool:
        return self.intake.mempool

    async def produce_block(self) -> Head:
        return await self.producer.produce_block()


def open_node(home: Home) -> Node:
    """Load config, genesis and (if present) the producer key from a home, then open it."""
    cfg = home.load_config()
    genesis = load_genesis(home.genesis_file)
    signer = None
    if home.producer_key_file.exists():
        key = read_key(home.producer_key_file)
        if key.public_key != genesis.producer.pub_key:  # before anything touches the store
            raise NodeError(f"{home.producer_key_file} is not the genesis producer key "
                            f"({genesis.producer.pub_key.hex()})")
        if not cfg.storage.sync:
            # A power cut would take back blocks the producer signed and sent out; it could
            # then only go on by signing other blocks at those heights (equivocating).
            raise NodeError(
                f"storage.sync = false in {home.config_file} is refused for a producer: a "
                "power cut could lose blocks it already signed, and it could never produce "
                "again without signing two blocks at one height. Set storage.sync = true "
                "(a node without the producer key may run with false).",
                reason="unsafe_config")
        signer = Signer(key, home.signer_state_file)
    try:
        return Node(home, cfg, genesis, signer).open()
    except StoreError as e:  # (a damaged store keeps its reason: store_damaged)
        raise NodeError(str(e), reason=e.reason) from e
