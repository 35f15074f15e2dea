"""Replay at the store level: exactness (failed transactions included), corrupted archived
transactions, exclusions and exactly what they cost, and cancels the operators pre-empted."""

from __future__ import annotations

from chain.block import Block
from chain.codes import ResultCode
from chain.crypto import PrivateKey, sha256
from chain.tx import CancelOrder, Deposit, Transaction, Withdraw, decode_tx
from state.accounts import account_record
from state.meta import replayed_height
from state.params import load_params
from state.records import INSURANCE_ADDRESS
from state.recovery import replay
from state.recovery.archive import Exclusions, archived_blocks
from state.schema import archive_key
from state.store import Head
from state.transition import BlockOutcome, seal
from tests.harness.exchange import BTC, USD, Exchange, limit, market, op_tx
from tests.harness.recovery import full_dump, replay_all, roll_back, system_block, trade_blocks


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
    assert len(fates) == sum(len(b.txs) for b in archived_blocks(ex.store, 0))
    assert ex.store.dump_state() == original  # accounts, markets, positions, orders, funding
    head = ex.store.head()
    assert head is not None and head.state_root == original_head.state_root
    assert (head.height, head.era) == (original_head.height, 1)
    assert full_dump(ex.store)  # the tree was rebuilt alongside (same root)
    assert replayed_height(ex.store, 0) == head.height


def test_failed_transactions_are_replayed_as_failures_and_keep_their_senders_valid(
        ex: Exchange) -> None:
    """The devnet bug: a post-only order that failed on the abandoned fork was left out, so
    its sender's nonce was not consumed and every later transaction of that sender was
    dropped. A replayed block holds what the producer would include: failures too."""
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, 0.5)))
    h = ex.height
    r = ex.block(ex.tx(ex.bob, limit("buy", 60_100, 0.1, tif="post_only")),  # would cross
                 ex.tx(ex.bob, CancelOrder(BTC, 77)))                        # no such order
    assert [x.code for x in r] == [ResultCode.POST_ONLY_WOULD_CROSS, ResultCode.ORDER_NOT_FOUND]
    ex.block(ex.tx(ex.bob, market("buy", 61_000, 0.2)),
             ex.tx(ex.bob, limit("buy", 59_000, 0.1)))
    ex.block(ex.tx(ex.bob, Withdraw(10**15)))  # fails: not that much collateral
    original = ex.store.dump_state()
    roll_back(ex, h)
    fates = replay_all(ex, 0)
    assert [(f.fate, f.code) for f in fates] == [
        ("identical", ResultCode.POST_ONLY_WOULD_CROSS), ("identical", ResultCode.ORDER_NOT_FOUND),
        ("identical", 0), ("identical", 0), ("identical", ResultCode.INSUFFICIENT_FUNDS)]
    assert all(f.original_code == f.code for f in fates)
    assert ex.store.dump_state() == original


def test_a_corrupted_archived_transaction_is_dropped_and_the_rest_replayed(
        ex: Exchange) -> None:
    trade_blocks(ex, 6)
    roll_back(ex, 2)
    # Block 6 (the last): corrupt the signature of its transaction 0 (Alice's last order).
    _corrupt(ex, 6, 0, "signature")
    fates = replay_all(ex, 0)
    dropped = [f for f in fates if f.fate == "dropped"]
    assert [(f.height, f.index, f.reason) for f in dropped] == [(6, 0, "signature")]
    assert dropped[0].sender == ex.alice.public_key.hex()  # it still decodes
    assert len([f for f in fates if f.fate in ("identical", "diverged")]) == len(fates) - 1


def test_a_transaction_whose_bytes_no_longer_decode_is_dropped(ex: Exchange) -> None:
    trade_blocks(ex, 6)
    roll_back(ex, 2)
    _corrupt(ex, 6, 0, "decode")
    fates = replay_all(ex, 0)
    dropped = [(f.height, f.index, f.reason) for f in fates if f.fate == "dropped"]
    assert dropped == [(6, 0, "decode")]


def test_an_excluded_transaction_drops_exactly_its_senders_later_transactions(
        ex: Exchange) -> None:
    trade_blocks(ex, 2)
    h = ex.height
    trade_blocks(ex, 5)
    roll_back(ex, h)
    blocks = archived_blocks(ex.store, 0)
    # Alice's order in the second abandoned block is excluded.
    victim = decode_tx(blocks[1].txs[0])
    assert victim.sender == ex.alice.public_key
    fates = replay_all(ex, 0, Exclusions(tx_hashes=frozenset({victim.hash})))
    later = [f for f in fates if f.sender == ex.alice.public_key.hex() and
             (f.height, f.index) > (blocks[1].height, 0)]
    assert later  # Alice sent more after it
    by_hash = {f.hash: f for f in fates}
    assert by_hash[victim.hash].reason == "excluded_tx"
    assert all(f.fate == "dropped" and f.reason == f"after_excluded:{victim.hash.hex()}"
               for f in later)
    others = [f for f in fates if f.sender != ex.alice.public_key.hex()]
    earlier = [f for f in fates if f.sender == ex.alice.public_key.hex() and
               (f.height, f.index) < (blocks[1].height, 0)]
    assert all(f.fate != "dropped" for f in others + earlier)
    s = replay.summarize(fates)
    assert s["dropped_by_reason"] == {"after_excluded": len(later), "excluded_tx": 1}


def test_exclusions_by_sender(ex: Exchange) -> None:
    trade_blocks(ex, 5)
    roll_back(ex, 1)
    restored = (ex.position(ex.alice), ex.position(ex.bob))
    fates = replay_all(ex, 0, Exclusions(senders=frozenset({ex.bob.public_key})))
    bob = ex.bob.public_key.hex()
    by_bob = [f for f in fates if f.sender == bob]
    assert by_bob and all(f.reason == "excluded_sender" for f in by_bob)
    # Without Bob's market orders nobody hits Alice's orders: they rest as they did before
    # (their own results are identical), but her position never changes after block 1.
    others = [f for f in fates if f.sender != bob]
    assert others and all(f.fate == "identical" for f in others)
    assert (ex.position(ex.alice), ex.position(ex.bob)) == restored
    summary = replay.summarize(fates)
    assert summary["dropped_by_reason"] == {"excluded_sender": len(by_bob)}


def test_a_cancel_signed_on_the_abandoned_fork_names_its_order_after_a_shift(
        ex: Exchange) -> None:
    """Order ids do not depend on block position: with the operators' cancel-orders block
    in front (every replayed block one height later) a cancel still finds its order, and a
    cancel of an order the operators already cancelled says so."""
    ex.block(ex.tx(ex.carol, limit("buy", 55_000, 0.1)))       # rests before the fork
    h = ex.height
    late = ex.tx(ex.alice, limit("sell", 65_000, 0.1))          # placed on the fork
    ex.block(late)
    ex.block(ex.tx(ex.alice, CancelOrder(BTC, late.nonce)),       # cancels the fork's order
             ex.tx(ex.carol, CancelOrder(BTC, 0)))                # cancels the old one
    roll_back(ex, h)
    [r] = system_block(ex, op_tx(ex, "cancel_orders", {"keep": "take_profit,stop_loss"}))
    assert r.code == 0 and r.events[0].as_dict()["owner"] == ex.carol.public_key.hex()
    cancel_height = ex.height
    fates = replay_all(ex, 0, fork_height=h)
    f_place, f_alice, f_carol = fates
    assert f_place.fate == "identical" and f_place.new_height == h + 2  # shifted by one
    assert f_alice.fate == "identical" and f_alice.code == 0  # found its order by id
    assert f_carol.fate == "diverged" and f_carol.code == ResultCode.ORDER_NOT_FOUND
    assert f_carol.why == (f"code ok -> order_not_found; order 0 was already cancelled by "
                           f"the operators (cancel_orders in block {cancel_height})")
    assert replay.summarize(fates)["diverged_by_code"] == {"ok -> order_not_found": 1}


def test_a_diverged_fill_says_what_differs(ex: Exchange) -> None:
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, 0.1)),
             ex.tx(ex.carol, limit("sell", 60_100, 0.2)))
    h = ex.height
    ex.block(ex.tx(ex.bob, market("buy", 61_000, 0.1)))
    roll_back(ex, h)
    # Alice's ask is gone on the recovered chain (an operator cancels it): Bob's taker
    # order then fills at Carol's price instead.
    system_block(ex, op_tx(ex, "cancel_orders", {"keep": "", "market": BTC}))
    system_block(ex, ex.tx(ex.carol, limit("sell", 60_100, 0.2)))
    [f] = replay_all(ex, 0, fork_height=h)
    assert f.fate == "diverged" and f.code == 0
    assert f.why == (
        f"fill #1: maker {ex.alice.public_key.hex()[:12]}… -> {ex.carol.public_key.hex()[:12]}…, "
        f"maker_order 0 -> 1, price {60_000 * USD} -> {60_100 * USD}; 1 order(s) it met on "
        f"the abandoned fork were already cancelled by the operators (cancel_orders in block "
        f"{h + 1})")


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


def test_progress_is_reported_after_every_block(ex: Exchange) -> None:
    trade_blocks(ex, 2)
    h = ex.height
    trade_blocks(ex, 4)
    roll_back(ex, h)
    params = load_params(ex.store.overlay())
    rec = replay.begin_record(ex.store, 0, Exclusions(), [], 0)
    seen: list[replay.Progress] = []

    def commit(txs: list[Transaction], time: int, meta: list[tuple[bytes, bytes | None]],
               outcome: BlockOutcome) -> Head:
        return seal(ex.store, params, ex.keys.producer, txs, time, outcome, meta)

    fates = replay.run_replay(ex.store, params, rec, commit, fork_height=h,
                              on_progress=seen.append)
    assert [p.blocks_done for p in seen] == [1, 2, 3, 4]
    assert {p.blocks_total for p in seen} == {4}
    assert sum(seen[-1].counts.values()) == len(fates)
    j = seen[-1].to_json()
    assert j["blocks_done"] == j["blocks_total"] == 4 and j["seconds_left"] in (0, 0.0, None)
    assert seen[-1].line().startswith("replay era 0: block 4/4; ")


def test_a_sender_funded_only_by_an_excluded_transaction_is_dropped_as_no_account(
        ex: Exchange) -> None:
    """Excluding the deposit that created an account leaves its owner's transactions not
    includable on the restored state: dropped with reason ``no_account`` (the later ones
    ``after_dropped``), never replayed as failures that would create a record."""
    h = ex.height
    x = PrivateKey.generate()
    deposit = ex.tx(ex.keys.faucet, Deposit(x.public_key, 5 * USD))
    ex.block(deposit)
    first, second = ex.tx(x, Withdraw(USD)), ex.tx(x, Withdraw(USD))
    ex.block(first, ex.tx(ex.alice, limit("sell", 60_000, 0.1)))
    ex.block(second)
    roll_back(ex, h)
    fates = replay_all(ex, 0, Exclusions(tx_hashes=frozenset({deposit.hash})))
    by_hash = {f.hash: f for f in fates}
    assert by_hash[deposit.hash].reason == "excluded_tx"
    assert (by_hash[first.hash].fate, by_hash[first.hash].reason) == ("dropped", "no_account")
    assert by_hash[second.hash].reason == f"after_dropped:{first.hash.hex()}"
    assert sum(f.fate == "identical" for f in fates) == 1  # Alice's order
    assert account_record(ex.store.overlay(), x.public_key) is None
