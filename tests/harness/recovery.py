"""Recovery at the store level, as the node does it: trading blocks to roll back, a signed fork
certificate, rollback, blocks in a new era, and replay sealed with the producer key.
"""

from __future__ import annotations

from chain.admin import ForkCertificate, sign_fork
from chain.block import Block, Header, sign_header
from chain.tx import Transaction
from state.meta import Fate
from state.params import load_params
from state.recovery import replay, rollback
from state.recovery.archive import Exclusions
from state.schema import TREE
from state.store import Head, Store
from state.transition import BlockOutcome, apply_body, seal
from tests.harness.exchange import Exchange, limit, market


def full_dump(store: Store) -> list[tuple[bytes, bytes]]:
    """State values and state tree nodes: everything a rollback must restore."""
    return store.dump_state() + [(k, v) for k, v in store.db.iterator(prefix=TREE)]


def trade_blocks(ex: Exchange, n: int) -> None:
    """``n`` blocks of trading, oracle moves and a liquidation or two."""
    from tests.harness.exchange import oracle, px

    for i in range(n):
        side = "buy" if i % 2 else "sell"
        ex.block(ex.tx(ex.alice, limit(side, 60_000 + (50 if side == "sell" else -50), 0.5)),
                 ex.tx(ex.bob, market("buy" if side == "sell" else "sell", 61_000 if
                                      side == "sell" else 59_000, 0.2)),
                 oracle(ex, px(60_000 - 300 * (i % 5))))


def certificate(ex: Exchange, plan: rollback.RollbackPlan, reason: str = "test"
                ) -> bytes:
    cert = ForkCertificate(ex.g.chain_id, plan.new_era, plan.from_height, plan.to_height,
                           plan.target.hash, plan.target.state_root, reason)
    return sign_fork(cert, list(ex.keys.operators), 1).encode()


def roll_back(ex: Exchange, to_height: int) -> rollback.RollbackPlan:
    plan = rollback.plan_rollback(ex.store, to_height)
    rec = rollback.begin(ex.store, plan, certificate(ex, plan), "test", [], 0)
    rollback.run(ex.store, rec)
    return plan


def block_in_era(ex: Exchange, era: int, txs: list[Transaction]) -> bytes:
    head = ex.store.head()
    assert head is not None
    params = load_params(ex.store.overlay())
    out = apply_body(ex.store, params, head.height + 1, head.time + 1000, txs)
    header = Header(params.chain_id, era, head.height + 1, head.hash, head.time + 1000,
                    out.tx_root, out.results_root, out.state_root, ex.keys.producer.public_key)
    return Block(header, sign_header(ex.keys.producer, header), tuple(t.raw for t in txs)
                 ).encode()


def replay_all(ex: Exchange, era: int, exclusions: Exclusions | None = None,
               fork_height: int | None = None) -> list[Fate]:
    """Run the replay as the producer does (state.recovery.replay.run_replay), sealing each block
    with the producer key."""
    params = load_params(ex.store.overlay())
    rec = replay.begin_record(ex.store, era, exclusions or Exclusions(), [], 0)

    def commit(txs: list[Transaction], time: int, meta: list[tuple[bytes, bytes | None]],
               outcome: BlockOutcome) -> Head:
        return seal(ex.store, params, ex.keys.producer, txs, time, outcome, meta)

    if fork_height is None:
        fork_height = rec.start_height - 1
    return replay.run_replay(ex.store, params, rec, commit, fork_height=fork_height)


def system_block(ex: Exchange, *txs: Transaction) -> list:  # type: ignore[type-arg]
    """A block in the new era one millisecond after the head (as operator commands made
    while halted are), e.g. the operators' cancel-orders before a replay."""
    head = ex.store.head()
    assert head is not None
    params = load_params(ex.store.overlay())
    out = apply_body(ex.store, params, head.height + 1, head.time + 1, list(txs))
    seal(ex.store, params, ex.keys.producer, list(txs), head.time + 1, out)
    return out.results
