"""Replay at the store level: exactness, corrupted archived transactions, exclusions."""

from __future__ import annotations

from chain.block import Block, Header, sign_header
from chain.crypto import sha256
from chain.tx import Deposit, decode_tx
from state import replay, rollback
from state.exchange import INSURANCE_ADDRESS
from state.params import load_params
from state.schema import archive_key
from state.transition import commit
from tests.state.test_exchange import USD, Exchange
from tests.state.test_rollback import full_dump, roll_back, trade_blocks


def replay_all(ex: Exchange, era: int, exclusions: replay.Exclusions | None = None
               ) -> list[replay.Fate]:
    exclusions = exclusions or replay.Exclusions()
    fates: list[replay.Fate] = []
    params = load_params(ex.store.overlay())
    for ab in replay.archived_blocks(ex.store, era, ex.keys.producer.public_key):
        head = ex.store.head()
        assert head is not None
        a = replay.assemble(ex.store, params, ab, exclusions, head.height + 1, head.time + 1)
        o = a.outcome
        header = Header(params.chain_id, rollback.next_era(ex.store, head), head.height + 1,
                        head.hash, a.time, o.tx_root, o.results_root, o.state_root,
                        ex.keys.producer.public_key)
        block = Block(header, sign_header(ex.keys.producer, header),
                      tuple(t.raw for t in a.included))
        commit(ex.store, block, block.encode(), a.included, o)
        fates.extend(a.fates)
    return fates


def test_rollback_then_full_replay_gives_the_same_application_state(ex: Exchange) -> None:
    ex.block(ex.tx(ex.keys.faucet, Deposit(INSURANCE_ADDRESS, 1_000 * USD)))
    trade_blocks(ex, 9)
    original = ex.store.dump_state()
    original_head = ex.store.head()
    assert original_head is not None
    roll_back(ex, 3)
    assert ex.store.dump_state() != original
    fates = replay_all(ex, 0)
    assert {f.fate for f in fates} == {"identical"}
    assert len(fates) == sum(len(b.txs) for b in replay.archived_blocks(ex.store, 0))
    assert ex.store.dump_state() == original  # accounts, markets, positions, orders, funding
    head = ex.store.head()
    assert head is not None and head.state_root == original_head.state_root
    assert (head.height, head.era) == (original_head.height, 1)
    assert full_dump(ex.store)  # the tree was rebuilt alongside (same root)


def _corrupt(ex: Exchange, height: int, index: int, where: str) -> bytes:
    """Flip one byte of a transaction inside an archived block; returns the tx hash."""
    key = archive_key(0, height, b"b")
    raw = ex.store.db.get(key)
    assert raw is not None
    tx_raw = Block.decode_block(raw).txs[index]
    pos = raw.index(tx_raw)
    if where == "signature":
        off = tx_raw.index(decode_tx(tx_raw).sig) + 10
    else:  # the envelope's first byte (a map header) becomes an invalid msgpack byte
        off = 0
    bad = bytearray(tx_raw)
    bad[off] = 0xC1 if where == "decode" else bad[off] ^ 0x01
    ex.store.db.put(key, raw[:pos] + bytes(bad) + raw[pos + len(tx_raw):])
    return sha256(tx_raw)


def test_a_corrupted_archived_transaction_is_dropped_and_the_rest_replayed(
        ex: Exchange) -> None:
    trade_blocks(ex, 6)
    roll_back(ex, 2)
    # Block 6 (the last): corrupt the signature of its transaction 0 (Alice's last order).
    _corrupt(ex, 6, 0, "signature")
    fates = replay_all(ex, 0)
    dropped = [f for f in fates if f.fate == "dropped"]
    assert [(f.height, f.index, f.reason) for f in dropped] == [(6, 0, "signature")]
    assert len([f for f in fates if f.fate in ("identical", "diverged")]) == len(fates) - 1


def test_a_transaction_whose_bytes_no_longer_decode_is_dropped(ex: Exchange) -> None:
    trade_blocks(ex, 6)
    roll_back(ex, 2)
    _corrupt(ex, 6, 0, "decode")
    fates = replay_all(ex, 0)
    dropped = [(f.height, f.index, f.reason) for f in fates if f.fate == "dropped"]
    assert dropped == [(6, 0, "decode")]


def test_exclusions_and_their_consequences(ex: Exchange) -> None:
    trade_blocks(ex, 5)
    roll_back(ex, 1)
    restored = (ex.position(ex.alice), ex.position(ex.bob))
    fates = replay_all(ex, 0, replay.Exclusions(senders=frozenset({ex.bob.public_key})))
    bob = ex.bob.public_key.hex()
    by_bob = [f for f in fates if f.sender == bob or f.reason == "excluded_sender"]
    assert by_bob and all(f.reason == "excluded_sender" for f in by_bob)
    # Without Bob's market orders nobody hits Alice's orders: they rest as they did before
    # (their own results are identical), but her position never changes after block 1.
    others = [f for f in fates if f.reason != "excluded_sender"]
    assert others and all(f.fate == "identical" for f in others)
    assert (ex.position(ex.alice), ex.position(ex.bob)) == restored
    summary = replay.summarize(fates)
    assert summary["dropped_by_reason"] == {"excluded_sender": len(by_bob)}
