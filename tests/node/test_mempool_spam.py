"""Mempool admission against spam: a sender who cannot pay is refused (no account record: 1013,
balance below the minimum: 1014), one sender holds at most its cap (1015), and a full mempool
makes room for a sender under its share by evicting the newest transaction of the largest.

Accounts come from a real LevelDB store initialised from genesis; nothing is mocked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.block import Block
from chain.crypto import PrivateKey
from chain.tx import CancelAll, Deposit, Transaction, Transfer, make_tx
from genesis.builder import DevnetKeys
from genesis.format import Genesis
from genesis.initial_store import init_store
from genesis.state import chain_params
from node.dev.local import make_genesis, make_home
from node.mempool import Mempool, MempoolReject, RejectCode, store_accounts
from node.node import open_node
from state.schema import account_key
from state.store import Store
from state.transition import decode_block_txs

BALANCE = 10**9


class Chain:
    def __init__(self, g: Genesis, keys: DevnetKeys, store: Store) -> None:
        self.g, self.keys, self.store = g, keys, store

    def mempool(self, **kw: int) -> Mempool:
        return Mempool(chain_params(self.g), store_accounts(self.store), **kw)

    def transfer(self, sender: PrivateKey, nonce: int, to: bytes | None = None,
                 amount: int = 1) -> Transaction:
        to = to if to is not None else self.keys.accounts[-1].public_key
        return make_tx(sender, self.g.chain_id, nonce, Transfer(to, amount))


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    g, keys = make_genesis(accounts=6, balance=BALANCE)
    store = Store(tmp_path / "store")
    init_store(store, g)
    try:
        yield Chain(g, keys, store)
    finally:
        store.close()


def refused(mp: Mempool, tx: Transaction) -> RejectCode:
    with pytest.raises(MempoolReject) as ei:
        mp.add(tx)
    assert ei.value.message
    return ei.value.code


def test_unfunded_fresh_keys_are_refused(chain: Chain) -> None:
    mp = chain.mempool()
    fresh = [PrivateKey.generate() for _ in range(50)]
    for k in fresh:
        assert refused(mp, chain.transfer(k, 0)) is RejectCode.NO_ACCOUNT
    assert len(mp) == 0
    # A refusal leaves no trace: nothing pending, no nonce taken.
    assert all(mp.pending_nonce(k.public_key) is None for k in fresh)


def test_pending_credit_admits_the_funded_key(chain: Chain) -> None:
    """A key funded by a deposit or a transfer still pending may send after it."""
    mp = chain.mempool()
    x, y = PrivateKey.generate(), PrivateKey.generate()
    mp.add(make_tx(chain.keys.faucet, chain.g.chain_id, 0, Deposit(x.public_key, 10)))
    mp.add(chain.transfer(chain.keys.accounts[0], 0, to=y.public_key, amount=10))
    mp.add(chain.transfer(x, 0))
    mp.add(chain.transfer(y, 0))
    assert len(mp) == 4
    # Once the credit is gone from the mempool, the key is refused again.
    mp.drain()
    assert refused(mp, chain.transfer(x, 0)) is RejectCode.NO_ACCOUNT


def test_genesis_keys_need_no_account(chain: Chain) -> None:
    mp = chain.mempool(max_txs_per_sender=2)
    faucet = chain.keys.faucet
    for n in range(5):  # and no per-sender cap: the faucet funds many accounts at once
        mp.add(make_tx(faucet, chain.g.chain_id, n,
                       Deposit(PrivateKey.generate().public_key, 1)))
    assert len(mp) == 5


def test_balance_below_minimum_is_refused_but_cancels_pass(chain: Chain) -> None:
    a = chain.keys.accounts[0]
    mp = chain.mempool(min_sender_balance=BALANCE + 1)
    assert refused(mp, chain.transfer(a, 0)) is RejectCode.LOW_BALANCE
    # A trader can always take its orders down.
    mp.add(make_tx(a, chain.g.chain_id, 0, CancelAll("")))
    assert chain.mempool(min_sender_balance=BALANCE).add(chain.transfer(a, 0))


def test_sender_cap(chain: Chain) -> None:
    a, b = chain.keys.accounts[:2]
    mp = chain.mempool(max_txs_per_sender=3)
    for n in range(3):
        mp.add(chain.transfer(a, n))
    assert refused(mp, chain.transfer(a, 3)) is RejectCode.SENDER_LIMIT
    mp.add(chain.transfer(b, 0))  # others are not affected
    mp.remove([mp.reap(1)[0]])  # a's first is committed: room again
    mp.add(chain.transfer(a, 3))
    assert mp.pending_count(a.public_key) == 3


def test_full_mempool_evicts_newest_of_largest_sender(chain: Chain) -> None:
    a, b, c = chain.keys.accounts[:3]
    mp = chain.mempool(max_size=6)
    flood = [chain.transfer(a, n) for n in range(6)]
    for t in flood:
        mp.add(t)
    # a holds the whole mempool; b, with nothing pending, takes the newest of a's place.
    mp.add(chain.transfer(b, 0))
    assert len(mp) == 6 and flood[5].hash not in mp and mp.pending_nonce(a.public_key) == 5
    assert mp.evicted == 1
    # a cannot take it back: it would hold more than b again.
    assert refused(mp, flood[5]) is RejectCode.MEMPOOL_FULL
    mp.add(chain.transfer(b, 1))
    mp.add(chain.transfer(c, 0))
    assert [mp.pending_count(k.public_key) for k in (a, b, c)] == [3, 2, 1]
    mp.add(chain.transfer(c, 1))  # a (3) > c (1) + 1
    assert [mp.pending_count(k.public_key) for k in (a, b, c)] == [2, 2, 2]
    # An equal share: none of them is evicted for another of them...
    assert refused(mp, chain.transfer(c, 2)) is RejectCode.MEMPOOL_FULL
    # ...but a newcomer still gets a place while anyone holds two or more.
    d, e = chain.keys.accounts[3:5]
    mp.add(chain.transfer(d, 0))
    mp.add(chain.transfer(e, 0))
    assert sorted(mp.pending_count(k.public_key) for k in (a, b, c, d, e)) == [1, 1, 1, 1, 2]
    assert refused(mp, chain.transfer(d, 1)) is RejectCode.MEMPOOL_FULL
    # What is left is still executable: each sender's txs consecutive from its committed nonce.
    by_sender: dict[bytes, list[int]] = {}
    for t in mp.reap(100):
        by_sender.setdefault(t.sender, []).append(t.nonce)
    assert all(ns == list(range(len(ns))) for ns in by_sender.values())


def test_evict_and_remove_keep_counts(chain: Chain) -> None:
    """Eviction after a bad block and commits keep the per-sender counts right."""
    a, b = chain.keys.accounts[:2]
    mp = chain.mempool(max_size=4)
    ts = [chain.transfer(a, n) for n in range(4)]
    for t in ts:
        mp.add(t)
    assert mp.evict(ts[2]) == ts[2:]
    assert mp.pending_count(a.public_key) == 2 and mp.pending_nonce(a.public_key) == 2
    mp.remove(ts[:2])
    assert mp.pending_count(a.public_key) == 0 and mp.pending_nonce(a.public_key) is None
    for n in range(4):
        mp.add(chain.transfer(b, n))
    assert refused(mp, chain.transfer(b, 4)) is RejectCode.MEMPOOL_FULL


async def test_producer_leaves_out_a_key_whose_funding_failed(tmp_path: Path) -> None:
    """A key admitted on a pending transfer that then fails has no account when its own
    transaction would run: the producer leaves it out of the block (and out of the mempool);
    the block holds the rest, imports strictly, and no record is created for the key."""
    g, keys = make_genesis(accounts=3, balance=BALANCE)
    n = open_node(make_home(tmp_path / "home", g, keys.producer, block_interval_ms=60_000))
    try:
        a, b, _ = keys.accounts
        x = PrivateKey.generate()
        ch = g.chain_id
        fund = make_tx(a, ch, 0, Transfer(x.public_key, BALANCE + 1))  # fails: too much
        xs = [make_tx(x, ch, i, Transfer(b.public_key, 1)) for i in range(2)]
        other = make_tx(b, ch, 0, Transfer(a.public_key, 5))
        for t in (fund, *xs, other):
            n.intake.submit(t.raw)
        head = await n.produce_block()
        assert len(n.mempool) == 0 and n.mempool.pending_nonce(x.public_key) is None
        block = n.store.block_bytes(head.height)
        assert block is not None
        assert [t.hash for t in decode_block_txs(Block.decode_block(block))] == [
            fund.hash, other.hash]
        assert n.store.state_get(account_key(x.public_key)) is None
        assert n.store.tx_location(xs[0].hash) is None
        # x is refused at admission now: nothing funds it any more.
        with pytest.raises(MempoolReject) as ei:
            n.intake.submit(xs[0].raw)
        assert ei.value.code is RejectCode.NO_ACCOUNT
    finally:
        n.close()
