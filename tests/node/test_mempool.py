"""Mempool admission: one test per RejectCode, nonce ordering, reaping and removal.

Committed nonces come from a real LevelDB store (initialised from genesis) or from a real
node that commits blocks; nothing is mocked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chain.codec import decode, encode
from chain.crypto import TAG_TX, PrivateKey, signing_bytes
from chain.tx import Deposit, Transaction, Transfer, make_tx
from genesis.builder import DevnetKeys
from genesis.format import Genesis
from genesis.initial_store import init_store
from genesis.state import chain_params
from node.dev.local import make_genesis, make_home
from node.mempool import Mempool, MempoolReject, RejectCode, store_accounts
from node.node import Node, open_node
from state.store import Store

BALANCE = 10**9


# -- helpers -----------------------------------------------------------------------------------


def manual_tx(key: PrivateKey, chain_id: str, nonce: int, type_: str,
              payload: dict[str, object]) -> bytes:
    """A correctly signed, canonically encoded envelope built by hand (bypasses make_tx's
    payload check, so it can carry payloads make_tx refuses)."""
    body = {
        "chain_id": chain_id,
        "nonce": nonce,
        "payload": payload,
        "sender": key.public_key,
        "type": type_,
    }
    sig = key.sign(signing_bytes(TAG_TX, chain_id, body))
    return encode({**body, "sig": sig})


def reject_code(mp: Mempool, raw: bytes) -> RejectCode:
    with pytest.raises(MempoolReject) as ei:
        mp.check(raw)
    assert isinstance(ei.value.code, RejectCode)
    assert ei.value.message  # every refusal says why
    return ei.value.code


@dataclass
class Chain:
    g: Genesis
    keys: DevnetKeys
    store: Store

    def mempool(self, **kw: int) -> Mempool:
        return Mempool(chain_params(self.g), store_accounts(self.store), **kw)

    def transfer(self, sender: PrivateKey, nonce: int, amount: int = 1,
                 to: PrivateKey | None = None) -> Transaction:
        recipient = (to or self.keys.accounts[-1]).public_key
        return make_tx(sender, self.g.chain_id, nonce, Transfer(recipient, amount))


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    g, keys = make_genesis(accounts=4, balance=BALANCE)
    store = Store(tmp_path / "store")
    init_store(store, g)
    try:
        yield Chain(g, keys, store)
    finally:
        store.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Node, DevnetKeys]]:
    """A real node (store, signer, mempool) whose blocks the test produces by hand."""
    g, keys = make_genesis(accounts=4, balance=BALANCE)
    # A long interval: nothing runs a producer loop here, blocks come from produce_block().
    n = open_node(make_home(tmp_path / "home", g, keys.producer, block_interval_ms=60_000,
                            max_txs_per_block=10_000))
    try:
        yield n, keys
    finally:
        n.close()


def node_transfer(n: Node, sender: PrivateKey, nonce: int, to: PrivateKey,
                  amount: int = 1) -> Transaction:
    return make_tx(sender, n.params.chain_id, nonce, Transfer(to.public_key, amount))


# -- the manual envelope builder is faithful ----------------------------------------------------


def test_manual_envelope_matches_make_tx(chain: Chain) -> None:
    a, b = chain.keys.accounts[:2]
    t = make_tx(a, chain.g.chain_id, 3, Transfer(b.public_key, 7))
    raw = manual_tx(a, chain.g.chain_id, 3, "transfer", {"to": b.public_key, "amount": 7})
    assert raw == t.raw  # so the zero-amount envelope below differs only in the amount


# -- one test per RejectCode ---------------------------------------------------------------------


def test_decode_garbage_bytes(chain: Chain) -> None:
    mp = chain.mempool()
    for raw in (b"\x00\x01\x02garbage", b"\xc1", b"\x81\xa1a\x01trailing", b""):
        assert reject_code(mp, raw) is RejectCode.DECODE, raw
    # Valid msgpack but not a transaction envelope (an int; a map missing fields).
    assert reject_code(mp, encode(5)) is RejectCode.DECODE
    assert reject_code(mp, encode({"chain_id": chain.g.chain_id})) is RejectCode.DECODE
    # A real transaction with one trailing byte is not canonical.
    t = chain.transfer(chain.keys.accounts[0], 0)
    assert reject_code(mp, t.raw + b"\x00") is RejectCode.DECODE
    assert len(mp) == 0


def test_unknown_envelope_field_is_decode_error(chain: Chain) -> None:
    mp = chain.mempool()
    t = chain.transfer(chain.keys.accounts[0], 0)
    obj = decode(t.raw)
    obj["memo"] = "hello"
    assert reject_code(mp, encode(obj)) is RejectCode.DECODE


def test_too_large(chain: Chain) -> None:
    t = chain.transfer(chain.keys.accounts[0], 0)
    # Exactly at the limit is fine; one byte less of allowance refuses the same transaction.
    assert reject_code(chain.mempool(max_tx_bytes=len(t.raw) - 1), t.raw) is \
        RejectCode.TOO_LARGE
    mp = chain.mempool(max_tx_bytes=len(t.raw))
    assert mp.check(t.raw).hash == t.hash
    # Size is checked before decoding: oversized garbage is TOO_LARGE, not DECODE.
    assert reject_code(chain.mempool(max_tx_bytes=100), b"\xff" * 101) is RejectCode.TOO_LARGE


def test_wrong_chain(chain: Chain) -> None:
    mp = chain.mempool()
    a = chain.keys.accounts[0]
    other = make_tx(a, "another-chain", 0, Transfer(chain.keys.accounts[1].public_key, 1))
    assert other.chain_id != chain.g.chain_id
    assert reject_code(mp, other.raw) is RejectCode.WRONG_CHAIN
    # The refusal did not consume the sender's nonce.
    assert mp.pending_nonce(a.public_key) is None
    mp.check(chain.transfer(a, 0).raw)


def test_bad_signature_flipped_byte(chain: Chain) -> None:
    mp = chain.mempool()
    t = chain.transfer(chain.keys.accounts[0], 0)
    obj = decode(t.raw)
    for i in (0, 31, 63):
        sig = bytearray(obj["sig"])
        sig[i] ^= 0x01
        assert reject_code(mp, encode({**obj, "sig": bytes(sig)})) is RejectCode.BAD_SIGNATURE
    assert len(mp) == 0
    mp.check(t.raw)  # the untampered original is fine


def test_bad_signature_edited_payload(chain: Chain) -> None:
    """Changing a signed field (the amount, the sender) keeps the signature but breaks it."""
    mp = chain.mempool()
    a, b = chain.keys.accounts[:2]
    t = chain.transfer(a, 0, amount=5)
    obj = decode(t.raw)
    more = {**obj, "payload": {**obj["payload"], "amount": 5_000}}
    assert reject_code(mp, encode(more)) is RejectCode.BAD_SIGNATURE
    impostor = {**obj, "sender": b.public_key}
    assert reject_code(mp, encode(impostor)) is RejectCode.BAD_SIGNATURE


def test_duplicate(chain: Chain) -> None:
    mp = chain.mempool()
    t = chain.transfer(chain.keys.accounts[0], 0)
    mp.check(t.raw)
    assert reject_code(mp, t.raw) is RejectCode.DUPLICATE
    assert len(mp) == 1


def test_nonce_too_low_pending(chain: Chain) -> None:
    mp = chain.mempool()
    a = chain.keys.accounts[0]
    mp.check(chain.transfer(a, 0, amount=1).raw)
    mp.check(chain.transfer(a, 1, amount=1).raw)
    # A different transaction reusing a pending nonce (not a duplicate: other amount).
    assert reject_code(mp, chain.transfer(a, 0, amount=2).raw) is RejectCode.NONCE_TOO_LOW
    assert reject_code(mp, chain.transfer(a, 1, amount=2).raw) is RejectCode.NONCE_TOO_LOW
    assert len(mp) == 2
    assert mp.pending_nonce(a.public_key) == 2


async def test_nonce_too_low_committed(node: tuple[Node, DevnetKeys]) -> None:
    n, keys = node
    a, b = keys.accounts[:2]
    t0 = node_transfer(n, a, 0, b)
    n.intake.submit(t0.raw)
    await n.produce_block()
    assert n.chain.committed_nonce(a.public_key) == 1
    assert n.mempool.pending_nonce(a.public_key) is None
    # Replaying the committed transaction, or another one with its nonce, is refused.
    for raw in (t0.raw, node_transfer(n, a, 0, b, amount=2).raw):
        with pytest.raises(MempoolReject) as ei:
            n.intake.submit(raw)
        assert ei.value.code is RejectCode.NONCE_TOO_LOW
    assert len(n.mempool) == 0
    # The rejections are counted by reason.
    metrics = n.metrics.render().decode()
    assert 'appchain_mempool_rejected_total{reason="nonce_too_low"} 2.0' in metrics


def test_nonce_gap(chain: Chain) -> None:
    mp = chain.mempool()
    a = chain.keys.accounts[0]
    assert reject_code(mp, chain.transfer(a, 1).raw) is RejectCode.NONCE_GAP
    assert reject_code(mp, chain.transfer(a, 2**64 - 1).raw) is RejectCode.NONCE_GAP
    assert len(mp) == 0
    mp.check(chain.transfer(a, 0).raw)
    assert reject_code(mp, chain.transfer(a, 2).raw) is RejectCode.NONCE_GAP
    mp.check(chain.transfer(a, 1).raw)
    mp.check(chain.transfer(a, 2).raw)
    assert mp.pending_nonce(a.public_key) == 3


def test_mempool_full(chain: Chain) -> None:
    mp = chain.mempool(max_size=2)
    a, b, c = chain.keys.accounts[:3]
    ta = chain.transfer(a, 0)
    mp.check(ta.raw)
    mp.check(chain.transfer(b, 0).raw)
    assert reject_code(mp, chain.transfer(c, 0).raw) is RejectCode.MEMPOOL_FULL
    assert reject_code(mp, chain.transfer(a, 1).raw) is RejectCode.MEMPOOL_FULL
    assert len(mp) == 2
    # A refused transaction did not reserve a nonce: c may still send nonce 0 once there is
    # room, and a's next nonce is still 1.
    assert mp.pending_nonce(c.public_key) is None
    assert mp.pending_nonce(a.public_key) == 1
    mp.remove([ta])
    mp.check(chain.transfer(c, 0).raw)
    assert len(mp) == 2


def test_invalid_tx_zero_amount(chain: Chain) -> None:
    mp = chain.mempool()
    a, b = chain.keys.accounts[:2]
    for type_ in ("transfer", "deposit"):
        key = a if type_ == "transfer" else chain.keys.faucet
        raw = manual_tx(key, chain.g.chain_id, 0, type_, {"to": b.public_key, "amount": 0})
        assert reject_code(mp, raw) is RejectCode.INVALID_TX, type_
    assert len(mp) == 0
    assert mp.pending_nonce(a.public_key) is None


def test_unauthorized_deposit(chain: Chain) -> None:
    mp = chain.mempool()
    a, b = chain.keys.accounts[:2]
    forged = make_tx(a, chain.g.chain_id, 0, Deposit(b.public_key, 1_000))
    assert reject_code(mp, forged.raw) is RejectCode.UNAUTHORIZED
    for key in (chain.keys.producer, chain.keys.operators[0]):
        t = make_tx(key, chain.g.chain_id, 0, Deposit(b.public_key, 1))
        assert reject_code(mp, t.raw) is RejectCode.UNAUTHORIZED
    # The faucet itself may deposit.
    ok = make_tx(chain.keys.faucet, chain.g.chain_id, 0, Deposit(b.public_key, 1_000))
    assert mp.check(ok.raw).hash == ok.hash
    assert len(mp) == 1


def test_reject_codes_are_stable_numbers() -> None:
    """They are the JSON-RPC error codes clients see: never renumber one."""
    assert {c.name: int(c) for c in RejectCode} == {
        "DECODE": 1001, "TOO_LARGE": 1002, "WRONG_CHAIN": 1003, "BAD_SIGNATURE": 1004,
        "DUPLICATE": 1005, "NONCE_TOO_LOW": 1006, "NONCE_GAP": 1007, "MEMPOOL_FULL": 1008,
        "INVALID_TX": 1009, "UNAUTHORIZED": 1010, "HALTED": 1011,
        "INTERNAL": 1012, "NO_ACCOUNT": 1013, "LOW_BALANCE": 1014, "SENDER_LIMIT": 1015,
    }


# -- ordering, reaping, removal ---------------------------------------------------------------


def test_interleaved_senders_keep_per_sender_nonce_order(chain: Chain) -> None:
    mp = chain.mempool()
    a, b, c = chain.keys.accounts[:3]
    order = [(a, 0), (b, 0), (a, 1), (c, 0), (b, 1), (a, 2), (c, 1), (b, 2)]
    sent = [chain.transfer(k, nonce) for k, nonce in order]
    for t in sent:
        mp.check(t.raw)
    # Out-of-order nonces from an interleaved sender are refused, never parked.
    assert reject_code(mp, chain.transfer(c, 3).raw) is RejectCode.NONCE_GAP
    assert reject_code(mp, chain.transfer(b, 1, amount=9).raw) is RejectCode.NONCE_TOO_LOW
    reaped = mp.reap(100)
    assert [t.hash for t in reaped] == [t.hash for t in sent]
    for k in (a, b, c):
        nonces = [t.nonce for t in reaped if t.sender == k.public_key]
        assert nonces == sorted(nonces) == list(range(len(nonces)))
    assert mp.pending_nonce(a.public_key) == 3
    assert mp.pending_nonce(b.public_key) == 3
    assert mp.pending_nonce(c.public_key) == 2
    assert mp.pending_nonce(chain.keys.accounts[3].public_key) is None


def test_reap_returns_arrival_order_without_removing(chain: Chain) -> None:
    mp = chain.mempool()
    keys = chain.keys.accounts
    sent = [chain.transfer(keys[i % 3], i // 3) for i in range(7)]
    for t in sent:
        mp.check(t.raw)
    assert [t.hash for t in mp.reap(3)] == [t.hash for t in sent[:3]]
    assert [t.hash for t in mp.reap(100)] == [t.hash for t in sent]
    assert mp.reap(0) == []
    assert len(mp) == 7  # reaping does not remove
    assert all(t.hash in mp for t in sent)


def test_remove_is_idempotent_and_ignores_unknown(chain: Chain) -> None:
    mp = chain.mempool()
    a, b = chain.keys.accounts[:2]
    t0, t1 = chain.transfer(a, 0), chain.transfer(a, 1)
    mp.check(t0.raw)
    mp.check(t1.raw)
    mp.remove([t0, t0, chain.transfer(b, 0)])
    assert len(mp) == 1 and t1.hash in mp and t0.hash not in mp
    assert mp.pending_nonce(a.public_key) == 2  # t1 still pending: next stays 2
    mp.remove([t1])
    assert len(mp) == 0
    assert mp.pending_nonce(a.public_key) is None
    # With nothing pending, the next nonce comes from the store again (still 0: nothing was
    # committed), so the sender can start over from the committed nonce.
    mp.check(t0.raw)


async def test_remove_after_commit_lets_next_nonce_continue(
        node: tuple[Node, DevnetKeys]) -> None:
    n, keys = node
    a, b, c = keys.accounts[:3]
    for t in (node_transfer(n, a, 0, c), node_transfer(n, b, 0, c), node_transfer(n, a, 1, c)):
        n.intake.submit(t.raw)
    head = await n.produce_block()
    assert head.height == 1
    assert len(n.mempool) == 0  # committed transactions left the mempool
    assert n.chain.committed_nonce(a.public_key) == 2
    assert n.chain.committed_nonce(b.public_key) == 1
    assert n.mempool.pending_nonce(a.public_key) is None
    # The next nonces continue from the committed state.
    n.intake.submit(node_transfer(n, a, 2, c).raw)
    n.intake.submit(node_transfer(n, b, 1, c).raw)
    with pytest.raises(MempoolReject) as ei:
        n.intake.submit(node_transfer(n, a, 4, c).raw)
    assert ei.value.code is RejectCode.NONCE_GAP
    await n.produce_block()
    assert n.chain.committed_nonce(a.public_key) == 3
    assert n.chain.committed_nonce(b.public_key) == 2


async def test_partial_reap_keeps_the_rest_in_nonce_order(tmp_path: Path) -> None:
    """A block smaller than the mempool commits the oldest; the rest still run in order."""
    g, keys = make_genesis(accounts=3, balance=BALANCE)
    n = open_node(make_home(tmp_path / "home", g, keys.producer, block_interval_ms=60_000,
                            max_txs_per_block=2))
    try:
        a, b, c = keys.accounts
        sent = [node_transfer(n, a, 0, c), node_transfer(n, b, 0, c),
                node_transfer(n, a, 1, c), node_transfer(n, a, 2, c)]
        for t in sent:
            n.intake.submit(t.raw)
        await n.produce_block()
        assert [t.hash for t in n.mempool.reap(10)] == [t.hash for t in sent[2:]]
        assert n.chain.committed_nonce(a.public_key) == 1
        # a has nonces 1 and 2 pending on top of committed nonce 1: the next one is 3.
        assert n.mempool.pending_nonce(a.public_key) == 3
        n.intake.submit(node_transfer(n, a, 3, c).raw)
        with pytest.raises(MempoolReject) as ei:
            n.intake.submit(node_transfer(n, a, 1, c, amount=99).raw)
        assert ei.value.code is RejectCode.NONCE_TOO_LOW
        await n.produce_block()
        await n.produce_block()
        assert len(n.mempool) == 0
        assert n.chain.committed_nonce(a.public_key) == 4
        # Every transaction landed and succeeded, in nonce order per sender.
        heights = {}
        for t in sent:
            loc = n.store.tx_location(t.hash)
            assert loc is not None
            heights[t.hash] = loc
        assert heights[sent[2].hash] < heights[sent[3].hash]
    finally:
        n.close()


def test_evict_drops_the_sender_tail_and_rewinds_its_nonce(chain: Chain) -> None:
    mp = chain.mempool()
    a, b = chain.keys.accounts[0], chain.keys.accounts[1]
    a0, a1, a2 = (mp.add(chain.transfer(a, n)) for n in range(3))
    b0 = mp.add(chain.transfer(b, 0))
    dropped = mp.evict(a1)
    assert [t.nonce for t in dropped] == [1, 2]
    assert mp.reap(10) == [a0, b0]
    assert mp.pending_nonce(a.public_key) == 1
    # The sender can now fill the freed nonce again; a gap is still refused.
    assert reject_code(mp, chain.transfer(a, 2).raw) == RejectCode.NONCE_GAP
    mp.add(chain.transfer(a, 1, amount=2))
    assert mp.evict(a2) == []  # already gone
    mp.evict(a0)
    assert mp.pending_nonce(a.public_key) is None
    assert [t.sender for t in mp.reap(10)] == [b.public_key]


async def test_overlapping_commit_waits_all_learn_the_commit(
        node: tuple[Node, DevnetKeys]) -> None:
    """A first wait timing out must not strand a second, longer wait on the same tx."""
    import trio

    n, keys = node
    a, b = keys.accounts[0], keys.accounts[1]
    t = make_tx(a, n.params.chain_id, 0, Transfer(b.public_key, 1))
    results: dict[str, object] = {}

    async def wait(name: str, wait_s: float) -> None:
        results[name] = (await n.intake.submit_and_wait(t.raw, wait_s))[1]

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, "short", 0.05)
            await trio.sleep(0.01)
            nursery.start_soon(wait, "long", 5)
            with trio.fail_after(5):
                while "short" not in results:  # noqa: ASYNC110 - a bounded poll of a task
                    await trio.sleep(0.01)
            assert results["short"] is None
            await n.produce_block()
    committed = results["long"]
    assert committed is not None and committed.height == n.head.height  # type: ignore[attr-defined]
