"""The store end to end on every backend: the same blocks give the same bytes on LevelDB and
in memory, and a scratch copy of a LevelDB store takes blocks and a rollback (an operator's
rehearsal) while the real store stays exactly as it was."""

from __future__ import annotations

from chain.block import Block, TxResult
from chain.tx import Deposit, Transfer
from genesis.initial_store import init_store
from state.kv import MemoryKV, ScratchKV
from state.meta import fork_certificates
from state.records import INSURANCE_ADDRESS
from state.schema import STATE, account_key
from state.store import Store
from state.transition import import_block
from tests.harness.exchange import USD, Exchange, limit, open_long, oracle, px
from tests.harness.recovery import block_in_era, full_dump, replay_all, roll_back, trade_blocks


def exchange_on(store: Store, like: Exchange) -> Exchange:
    """``like``'s chain (genesis, keys, nonces) driven on another store."""
    ex = Exchange.__new__(Exchange)
    ex.g, ex.keys, ex.store, ex.nonces = like.g, like.keys, store, dict(like.nonces)
    ex.alice, ex.bob, ex.carol, ex.dave, ex.erin = like.keys.accounts
    return ex


def everything(store: Store) -> list[tuple[bytes, bytes]]:
    """Every key of the store: blocks, indexes, results, state, tree, undo, metadata."""
    return list(store.db.iterator())


def test_the_same_blocks_give_the_same_bytes_on_leveldb_and_in_memory(ex: Exchange) -> None:
    mem = Store.in_memory()
    assert isinstance(mem.db, MemoryKV) and mem.path is None and mem.head() is None
    init_store(mem, ex.g)
    mx = exchange_on(mem, ex)
    assert everything(mem) == everything(ex.store)
    trade_blocks(ex, 4)
    trade_blocks(mx, 4)
    assert mem.head() == ex.store.head()
    assert full_dump(mem) == full_dump(ex.store)
    assert everything(mem) == everything(ex.store)
    # a block built on one imports on the other
    raw = block_in_era(ex, 0, [ex.tx(ex.alice, limit("buy", 50_000, 0.01))])
    import_block(ex.store, raw)
    import_block(mem, raw)
    assert everything(mem) == everything(ex.store)
    with mem.snapshot() as snap, ex.store.snapshot() as real_snap:
        assert snap.head() == real_snap.head()
        alice = STATE + account_key(ex.alice.public_key)
        old = snap.at_height(2).get(alice)
        assert old is not None and old == real_snap.at_height(2).get(alice)
        assert old != snap.state_get(account_key(ex.alice.public_key))
    assert mem.prune_undo(3) == ex.store.prune_undo(3) == 2
    assert everything(mem) == everything(ex.store)
    mem.close()
    assert mem.db.closed


def test_a_scratch_copy_takes_blocks_and_a_rollback_and_the_real_store_is_unchanged(
        ex: Exchange) -> None:
    trade_blocks(ex, 3)
    h = ex.height
    at_h = full_dump(ex.store)
    trade_blocks(ex, 4)
    real = everything(ex.store)
    real_head = ex.store.head()
    scratch = Store.scratch_of(ex.store)
    assert isinstance(scratch.db, ScratchKV) and not scratch.sync
    sx = exchange_on(scratch, ex)

    trade_blocks(sx, 2)  # commit_block on the scratch layer
    head = scratch.head()
    assert head is not None and real_head is not None and head.height == real_head.height + 2
    assert everything(ex.store) == real and ex.store.head() == real_head

    roll_back(sx, h)  # the rehearsal: roll back and start the new era
    assert scratch.head() is not None and sx.height == h
    assert full_dump(scratch) == at_h
    assert fork_certificates(scratch) and not fork_certificates(ex.store)
    import_block(scratch, block_in_era(sx, 1, []))
    assert scratch.prune_undo(h) > 0
    assert everything(ex.store) == real and ex.store.head() == real_head

    trade_blocks(ex, 1)  # the real store goes on, unseen by the scratch copy
    assert sx.height == h + 1 and ex.height == real_head.height + 1
    scratch.close()
    assert not ex.store.db.closed
    trade_blocks(ex, 1)


def test_a_scratch_copy_of_a_scratch_copy_and_of_a_memory_store(ex: Exchange) -> None:
    mem = Store.in_memory()
    init_store(mem, ex.g)
    mx = exchange_on(mem, ex)
    trade_blocks(ex, 2)
    trade_blocks(mx, 2)
    first = Store.scratch_of(mem)
    second = Store.scratch_of(first)
    trade_blocks(exchange_on(second, mx), 2)
    trade_blocks(ex, 2)
    assert full_dump(second) == full_dump(ex.store)
    assert everything(first) == everything(mem)
    second.close()
    first.close()
    assert not mem.db.closed and mem.head() is not None
    mem.close()


def test_transfers_orders_funding_liquidation_rollback_and_replay_in_memory_match_leveldb(
        ex: Exchange) -> None:
    """The whole state machine and the recovery run on the in-memory backend and give the
    same roots (and bytes) as on LevelDB: fuzzing and simulation need no disk."""
    mem = Store.in_memory()
    init_store(mem, ex.g)
    mx = exchange_on(mem, ex)
    for e in (ex, mx):
        e.block(e.tx(e.keys.faucet, Deposit(INSURANCE_ADDRESS, 1_000 * USD)),
                e.tx(e.alice, Transfer(e.bob.public_key, 5 * USD)))
        trade_blocks(e, 3)
        open_long(e, 2)                                  # Dave ~12x long
        e.block(oracle(e, px(60_100), dt=61_000), dt=61_000)  # a funding interval passes
        e.block(oracle(e, px(54_000)))                   # Dave is liquidated
    assert full_dump(mem) == full_dump(ex.store) and mem.head() == ex.store.head()
    kinds = {ev["type"] for h in range(1, ex.height + 1)
             for ev in _end_events_at(ex.store, h)}
    assert {"funding", "liquidation", "liquidation_settled"} <= kinds  # all of it ran
    before = ex.store.head()
    assert before is not None
    for e in (ex, mx):
        roll_back(e, 2)
    assert everything(mem) == everything(ex.store)
    fates = [replay_all(e, 0) for e in (ex, mx)]
    assert fates[0] == fates[1] and {f.fate for f in fates[0]} == {"identical"}
    after = ex.store.head()
    assert after is not None and after.state_root == before.state_root
    assert mem.head() == after and full_dump(mem) == full_dump(ex.store)


def _end_events_at(store: Store, height: int) -> list[dict[str, str]]:
    raw = store.block_bytes(height)
    if raw is None:
        return []
    ntx = len(Block.decode_block(raw).txs)
    return [{"type": e.type, **e.as_dict()} for r in (store.results(height) or [])[ntx:]
            for e in TxResult.decode(r).events]
