"""Rollback at the store level: exactness, archiving, resumability, the new era's linkage."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.admin import ForkCertificate, SignedForkCertificate, sign_fork
from chain.block import Block
from chain.errors import InvalidBlock
from chain.tx import Deposit
from state.meta import RollbackOperation, next_era
from state.records import INSURANCE_ADDRESS
from state.recovery import pins, rollback
from state.schema import ARCHIVE, TX_FATE, archive_key
from state.store import Store
from state.store_errors import OperationRefused
from state.transition import import_block
from tests.harness.exchange import USD, Exchange
from tests.harness.recovery import block_in_era, certificate, full_dump, roll_back, trade_blocks


def test_rollback_restores_the_exact_state_and_archives_the_abandoned_blocks(
        ex: Exchange) -> None:
    ex.block(ex.tx(ex.keys.faucet, Deposit(INSURANCE_ADDRESS, 1_000 * USD)))
    trade_blocks(ex, 3)
    h = ex.height
    at_h = full_dump(ex.store)
    head_h = ex.store.head()
    trade_blocks(ex, 6)
    abandoned = {height: ex.store.block_bytes(height) for height in range(h + 1, ex.height + 1)}
    tx_hashes = [t for height in abandoned
                 for t in Block.decode_block(abandoned[height] or b"").txs]
    assert full_dump(ex.store) != at_h
    plan = rollback.plan_rollback(ex.store, h)
    assert [b["height"] for b in plan.blocks] == [str(x) for x in abandoned]
    assert len(plan.txs) == len(tx_hashes)
    assert ex.alice.public_key.hex() in plan.accounts
    roll_back(ex, h)
    assert ex.store.head() == head_h
    assert full_dump(ex.store) == at_h  # byte for byte, state and tree
    for height, raw in abandoned.items():
        assert ex.store.block_bytes(height) is None
        assert ex.store.db.get(archive_key(0, height, b"b")) == raw
        assert ex.store.db.get(archive_key(0, height, b"r")) is not None
    from chain.crypto import sha256

    for t in tx_hashes:
        assert ex.store.tx_location(sha256(t)) is None
        assert ex.store.db.get(TX_FATE + sha256(t)) is not None
    assert rollback.operation(ex.store) is None
    assert next_era(ex.store, head_h) == 1  # type: ignore[arg-type]


def test_the_first_block_after_a_rollback_must_start_the_new_era(ex: Exchange) -> None:
    trade_blocks(ex, 4)
    roll_back(ex, 2)
    with pytest.raises(InvalidBlock, match="era 0, expected 1"):
        import_block(ex.store, block_in_era(ex, 0, []))
    import_block(ex.store, block_in_era(ex, 1, []))
    head = ex.store.head()
    assert head is not None and (head.height, head.era) == (3, 1)
    assert next_era(ex.store, head) == 1
    with pytest.raises(InvalidBlock, match="era 2, expected 1"):
        import_block(ex.store, block_in_era(ex, 2, []))


def test_a_rollback_resumes_to_the_same_result_after_stopping_midway(
        ex: Exchange, tmp_path: Path) -> None:
    trade_blocks(ex, 8)
    plan = rollback.plan_rollback(ex.store, 3)
    rec = rollback.begin(ex.store, plan, certificate(ex, plan), "test", [], 0)
    rollback.step(ex.store, rec, max_blocks=1)
    rollback.step(ex.store, rec, max_blocks=2)  # "crash": the record says what is left
    assert rollback.operation(ex.store) == rec
    with pytest.raises(OperationRefused, match="another recovery operation"):
        rollback.begin(ex.store, plan, b"", "again", [], 0)
    pending = rollback.operation(ex.store)
    assert isinstance(pending, RollbackOperation)
    rollback.run(ex.store, pending)
    assert rollback.operation(ex.store) is None
    resumed = full_dump(ex.store)
    stored = ex.store.db.get(b"m" + b"fork/" + (1).to_bytes(8, "big"))
    assert stored is not None and SignedForkCertificate.decode(stored).certificate.to_height == 3
    # The same rollback without interruption, on a replay of the same chain.
    from genesis.initial_store import init_store

    other = Store(tmp_path / "other")
    init_store(other, ex.g)
    kept = [ex.store.block_bytes(height) for height in range(1, 4)]
    archived = [ex.store.db.get(archive_key(0, height, b"b")) for height in range(4, 9)]
    for raw in kept + archived:
        assert raw is not None
        import_block(other, raw)
    plan2 = rollback.plan_rollback(other, 3)
    rollback.run(other, rollback.begin(other, plan2, certificate(ex, plan2), "t", [], 0))
    assert full_dump(other) == resumed
    other.close()


def test_rollback_refuses_bad_targets(ex: Exchange) -> None:
    trade_blocks(ex, 2)
    with pytest.raises(OperationRefused, match="not below the head"):
        rollback.plan_rollback(ex.store, ex.height)
    with pytest.raises(OperationRefused, match=">= 0"):
        rollback.plan_rollback(ex.store, -1)


def test_pins_and_automatic_pins(ex: Exchange) -> None:
    trade_blocks(ex, 2)
    p = pins.create_pin(ex.store, "before-upgrade", 123, (b"\x01" * 32,))
    head = ex.store.head()
    assert head is not None and (p.height, p.state_root) == (head.height, head.state_root)
    with pytest.raises(OperationRefused, match="already exists"):
        pins.create_pin(ex.store, "before-upgrade", 1, ())
    with pytest.raises(OperationRefused, match="label"):
        pins.create_pin(ex.store, "bad label!", 1, ())
    assert [x.label for x in pins.list_pins(ex.store)] == ["before-upgrade"]
    # Automatic pins every 2 blocks, keeping the 2 most recent.
    for height in (2, 4, 6):
        h2 = head.__class__(height, b"\x02" * 32, b"\x03" * 32, 0, 0)
        for k, v in pins.auto_pin_writes(ex.store, h2, 2, 2, 0):
            if v is None:
                ex.store.db.delete(k)
            else:
                ex.store.db.put(k, v)
    assert pins.auto_pin_writes(ex.store, head.__class__(7, b"", b"", 0, 0), 2, 2, 0) == []
    labels = [x.label for x in pins.list_pins(ex.store)]
    assert "auto-2" not in labels and {"auto-4", "auto-6", "before-upgrade"} == set(labels)
    assert pins.delete_pin(ex.store, "before-upgrade").label == "before-upgrade"
    with pytest.raises(OperationRefused, match="no snapshot"):
        pins.delete_pin(ex.store, "before-upgrade")
    assert ARCHIVE == b"x"


def test_a_new_era_needs_a_certificate_with_operator_signatures(ex: Exchange) -> None:
    from chain.crypto import PrivateKey

    trade_blocks(ex, 3)
    plan = rollback.plan_rollback(ex.store, 1)
    cert = ForkCertificate(ex.g.chain_id, plan.new_era, plan.from_height, plan.to_height,
                           plan.target.hash, plan.target.state_root, "forged")
    forged = sign_fork(cert, [PrivateKey.generate()], 1).encode()
    rollback.run(ex.store, rollback.begin(ex.store, plan, forged, "forged", [], 0))
    with pytest.raises(InvalidBlock, match="fork certificate of era 1") as e:
        import_block(ex.store, block_in_era(ex, 1, []))
    assert e.value.reason == "fork_certificate"


def test_undo_pruning_keeps_recent_blocks_and_everything_above_the_oldest_pin(
        ex: Exchange) -> None:
    from state.schema import UNDO, height_from

    def held() -> list[int]:
        return [height_from(k[1:]) for k, _ in ex.store.db.iterator(prefix=UNDO)]

    trade_blocks(ex, 4)
    pins.create_pin(ex.store, "p", 0, ())  # pinned at height 4
    trade_blocks(ex, 8)  # head 12
    head = ex.store.head()
    assert head is not None and head.height == 12
    # keep 3: heights 10-12 by age, but the pin at 4 needs 5-12.
    below = pins.prunable_below(ex.store, head, 3)
    assert below == 5
    assert ex.store.prune_undo(below) == 4
    assert held() == list(range(5, 13))
    rollback.plan_rollback(ex.store, 4)  # the pin is still reachable
    with pytest.raises(OperationRefused, match="no undo record"):
        rollback.plan_rollback(ex.store, 3)
    pins.delete_pin(ex.store, "p")
    assert pins.prunable_below(ex.store, head, 3) == 10
    assert ex.store.prune_undo(10, max_records=2) == 2  # bounded work per call
    assert ex.store.prune_undo(10) == 3
    assert held() == [10, 11, 12]
    assert pins.prunable_below(ex.store, head, 0) == 0  # 0: keep everything
