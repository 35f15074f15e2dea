"""The journaled LevelDB store: overlay semantics, atomic commits, undo records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import plyvel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from state import schema
from state.records import Account
from state.store import Head, PendingBlock, Store
from state.store_errors import StoreError

ZERO = b"\x00" * 32


def head(h: int) -> Head:
    return Head(h, bytes([h % 256]) * 32, ZERO, 0, 1000 + h)


def pending(h: int, txs: list[bytes] | None = None) -> PendingBlock:
    return PendingBlock(height=h, block_hash=bytes([h % 256]) * 32, block_bytes=b"block%d" % h,
                        tx_hashes=txs or [], result_bytes=[], head=head(h))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "db")
    ov = s.overlay()
    ov.put(b"k/a", b"1")
    ov.put(b"k/b", b"2")
    s.init_genesis(b"\x11" * 32, "c", [ov], head(0))
    yield s
    s.close()


def test_overlay_reads_through_and_buffers_writes(store: Store) -> None:
    ov = store.overlay()
    assert ov.get(b"k/a") == b"1"
    ov.put(b"k/a", b"9")
    ov.delete(b"k/b")
    ov.put(b"k/c", b"3")
    assert (ov.get(b"k/a"), ov.get(b"k/b"), ov.get(b"k/c")) == (b"9", None, b"3")
    # Nothing reached the database.
    assert store.state_get(b"k/a") == b"1"
    assert store.state_get(b"k/b") == b"2"
    assert store.state_get(b"k/c") is None
    assert list(ov.iter_prefix(b"k/")) == [(b"k/a", b"9"), (b"k/c", b"3")]


def test_checkpoint_revert_restores_exact_prior_overlay(store: Store) -> None:
    ov = store.overlay()
    ov.put(b"k/a", b"5")
    mark = ov.checkpoint()
    ov.put(b"k/a", b"6")
    ov.delete(b"k/b")
    ov.put(b"k/new", b"x")
    ov.revert(mark)
    assert ov.get(b"k/a") == b"5"
    assert ov.get(b"k/b") == b"2"
    assert ov.get(b"k/new") is None
    assert ov.changes() == [(b"k/a", b"5")]


def test_changes_drop_writes_equal_to_committed_value(store: Store) -> None:
    ov = store.overlay()
    ov.put(b"k/a", b"1")  # same as committed
    ov.put(b"k/z", b"7")
    ov.delete(b"k/z")  # created and deleted: absent before and after
    assert ov.changes() == []


def test_typed_values_encode_once_and_read_back(store: Store) -> None:
    ov = store.overlay()
    ov.put_obj(b"acct/x", Account(5, 1))
    assert ov.get_obj(b"acct/x", Account) == Account(5, 1)
    assert ov.get(b"acct/x") == Account(5, 1).encode()
    mark = ov.checkpoint()
    ov.put_obj(b"acct/x", Account(6, 2))
    ov.revert(mark)
    assert ov.get_obj(b"acct/x", Account) == Account(5, 1)
    assert ov.changes() == [(b"acct/x", Account(5, 1).encode())]


def test_commit_writes_state_block_indexes_undo_and_head(store: Store) -> None:
    ov = store.overlay()
    ov.put(b"k/a", b"10")
    ov.delete(b"k/b")
    ov.put(b"k/c", b"30")
    store.commit_block([ov], pending(1, [b"\x01" * 32, b"\x02" * 32]))
    assert store.state_get(b"k/a") == b"10"
    assert store.state_get(b"k/b") is None
    assert store.state_get(b"k/c") == b"30"
    assert store.head() == head(1)
    assert store.block_bytes(1) == b"block1"
    assert store.height_of(b"\x01" * 32) == 1
    assert store.tx_location(b"\x02" * 32) == (1, 1)
    assert store.undo_record(1) == [(b"k/a", b"1"), (b"k/b", b"2"), (b"k/c", None)]


def test_failed_commit_writes_nothing(store: Store) -> None:
    """An exception inside the batch must leave the store exactly as it was
    (plyvel's default batch would have written the puts made before it)."""
    before = list(store.db.iterator())
    ov = store.overlay()
    ov.put(b"k/a", b"10")
    bad = PendingBlock(height=1, block_hash=b"\x01" * 32, block_bytes=b"block",
                       tx_hashes=[b"\x01" * 32, "not-bytes"],  # type: ignore[list-item]
                       result_bytes=[], head=head(1))
    with pytest.raises(TypeError):
        store.commit_block([ov], bad)
    assert list(store.db.iterator()) == before


def test_undo_records_restore_every_earlier_state(store: Store) -> None:
    """Applying undo records from the head down reproduces each earlier dump exactly."""
    dumps = {0: store.dump_state()}
    for h in range(1, 6):
        ov = store.overlay()
        ov.put(b"k/a", b"a%d" % h)
        if h % 2:
            ov.delete(b"k/b")
        else:
            ov.put(b"k/b", b"b%d" % h)
        ov.put(b"k/h%d" % h, b"x")
        store.commit_block([ov], pending(h))
        dumps[h] = store.dump_state()
    for h in range(5, 0, -1):
        with store.db.write_batch(transaction=True) as wb:
            for k, prior in store.undo_record(h) or []:
                if prior is None:
                    wb.delete(schema.STATE + k)
                else:
                    wb.put(schema.STATE + k, prior)
        assert store.dump_state() == dumps[h - 1]


def test_init_genesis_refuses_a_non_empty_store(store: Store) -> None:
    with pytest.raises(StoreError):
        store.init_genesis(b"\x11" * 32, "c", [store.overlay()], head(0))


def test_store_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    db.put(schema.META_SCHEMA, schema.height_bytes(99))
    db.close()
    with pytest.raises(StoreError, match="schema version 99"):
        Store(tmp_path / "db")


def test_open_locked_store_is_a_clear_error(store: Store) -> None:
    assert store.path is not None  # an on-disk store
    with pytest.raises(StoreError, match="cannot open store"):
        Store(store.path)


class OverlayVsModel(RuleBasedStateMachine):
    """The overlay (with checkpoints, reverts and commits) against a plain dict model."""

    keys = st.sampled_from([b"k/%d" % i for i in range(6)])
    values = st.binary(min_size=0, max_size=4)

    @initialize()
    def setup(self) -> None:
        import tempfile

        self._dir = tempfile.TemporaryDirectory()
        self.store = Store(Path(self._dir.name) / "db", sync=False)
        self.store.init_genesis(ZERO, "c", [self.store.overlay()], head(0))
        self.committed: dict[bytes, bytes] = {}
        self.model: dict[bytes, bytes] = {}
        self.ov = self.store.overlay()
        self.marks: list[tuple[int, dict[bytes, bytes]]] = []
        self.height = 0

    @rule(k=keys, v=values)
    def put(self, k: bytes, v: bytes) -> None:
        self.ov.put(k, v)
        self.model[k] = v

    @rule(k=keys)
    def delete(self, k: bytes) -> None:
        self.ov.delete(k)
        self.model.pop(k, None)

    @rule()
    def checkpoint(self) -> None:
        self.marks.append((self.ov.checkpoint(), dict(self.model)))

    @rule()
    def revert(self) -> None:
        if self.marks:
            mark, snap = self.marks.pop()
            self.ov.revert(mark)
            self.model = snap

    @rule()
    def commit(self) -> None:
        self.height += 1
        self.store.commit_block([self.ov], pending(self.height))
        undo = dict(self.store.undo_record(self.height) or [])
        for k in set(self.committed) | set(self.model):
            if self.committed.get(k) != self.model.get(k):
                assert undo[k] == self.committed.get(k)
        self.committed = dict(self.model)
        self.ov = self.store.overlay()
        self.marks = []

    @invariant()
    def reads_match_model(self) -> None:
        if not hasattr(self, "ov"):
            return
        for i in range(6):
            k = b"k/%d" % i
            assert self.ov.get(k) == self.model.get(k)
        assert dict(self.ov.iter_prefix(b"k/")) == self.model
        assert dict(self.store.iter_state(b"k/")) == self.committed

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.close()
            self._dir.cleanup()


TestOverlayVsModel = OverlayVsModel.TestCase
TestOverlayVsModel.settings = settings(max_examples=50, stateful_step_count=30,
                                       deadline=None)


def test_snapshot_reads_do_not_see_a_later_commit(store: Store) -> None:
    with store.snapshot() as snap:
        ov = store.overlay()
        ov.put(b"k/a", b"changed")
        store.commit_block([ov], pending(1))
        # (raw reads: this store keeps no state tree, which snap.state_get checks against)
        assert snap.get(schema.STATE + b"k/a") == b"1"
        assert snap.head() == head(0)
    with store.snapshot() as snap:
        assert snap.get(schema.STATE + b"k/a") == b"changed"
        assert snap.head() == head(1)


@settings(max_examples=60, deadline=None)
@given(committed=st.sets(st.integers(0, 40), max_size=15),
       ops=st.lists(st.tuples(st.sampled_from(["put", "del", "mark", "revert"]),
                              st.integers(0, 40)), max_size=30),
       afters=st.lists(st.integers(-1, 41), min_size=1, max_size=5))
def test_first_key_after_matches_a_sorted_model(tmp_path_factory, committed, ops, afters  # type: ignore[no-untyped-def]
                                                ) -> None:
    """The order book's ordered walk over the overlay agrees with sorting the live keys."""
    path = tmp_path_factory.mktemp("fka") / "db"
    s = Store(path, sync=False)
    try:
        def key(i: int) -> bytes:
            return b"book/X/a" + i.to_bytes(2, "big")

        ov = s.overlay()
        for i in committed:
            ov.put(key(i), b"v")
        ov.put(b"book/Y/a\x00\x01", b"other side")  # must never leak into book/X/a
        s.init_genesis(ZERO, "c", [ov], head(0))
        ov = s.overlay()
        model = {key(i) for i in committed}
        marks: list[tuple[int, set[bytes]]] = []
        for op, i in ops:
            if op == "put":
                ov.put(key(i), b"w")
                model.add(key(i))
            elif op == "del":
                ov.delete(key(i))
                model.discard(key(i))
            elif op == "mark":
                marks.append((ov.checkpoint(), set(model)))
            elif marks:
                m, snap = marks.pop()
                ov.revert(m)
                model = snap
        prefix = b"book/X/a"
        for a in afters:
            after = b"" if a < 0 else key(a)
            want = min((k for k in model if k > after), default=None)
            assert ov.first_key_after(prefix, after) == want
    finally:
        s.close()


@settings(max_examples=100, deadline=None)
@given(committed=st.sets(st.integers(0, 40), max_size=15),
       ops=st.lists(st.tuples(st.sampled_from(["put", "del", "mark", "revert", "query",
                                               "query_wide"]),
                              st.integers(-1, 41)), max_size=60))
def test_first_key_after_interleaved_with_writes_matches_a_sorted_model(  # type: ignore[no-untyped-def]
        tmp_path_factory, committed, ops) -> None:
    """Walks between writes (the book walked while fills remove orders) stay exact: the
    overlay's memo of where a side's live keys start never hides a key written later."""
    path = tmp_path_factory.mktemp("fka2") / "db"
    s = Store(path, sync=False)
    try:
        def key(i: int) -> bytes:
            return (b"book/X/a" if i % 2 else b"book/X/b") + i.to_bytes(2, "big")

        ov = s.overlay()
        for i in committed:
            ov.put(key(i), b"v")
        s.init_genesis(ZERO, "c", [ov], head(0))
        ov = s.overlay()
        model = {key(i) for i in committed}
        marks: list[tuple[int, set[bytes]]] = []
        for op, i in ops:
            if op == "put" and i >= 0:
                ov.put(key(i), b"w")
                model.add(key(i))
            elif op == "del" and i >= 0:
                ov.delete(key(i))
                model.discard(key(i))
            elif op == "mark":
                marks.append((ov.checkpoint(), set(model)))
            elif op == "revert" and marks:
                m, snap = marks.pop()
                ov.revert(m)
                model = snap
            elif op.startswith("query"):
                prefixes = [b"book/X/"] if op == "query_wide" else [b"book/X/a", b"book/X/b"]
                for prefix in prefixes:
                    after = b"" if i < 0 else key(i)
                    want = min((k for k in model if k > after and k.startswith(prefix)),
                               default=None)
                    assert ov.first_key_after(prefix, after) == want
                    assert list(ov.iter_ordered(prefix)) == sorted(
                        k for k in model if k.startswith(prefix))
    finally:
        s.close()


def test_first_key_after_sees_a_removal_undone_by_revert(store: Store) -> None:
    """A walk after a reverted removal finds the order again (the memo is dropped)."""
    ov = store.overlay()
    a, b = b"book/X/a\x00\x01", b"book/X/a\x00\x02"
    ov.put(a, b"")
    ov.put(b, b"")
    assert ov.first_key_after(b"book/X/a") == a
    mark = ov.checkpoint()
    ov.delete(a)
    assert ov.first_key_after(b"book/X/a") == b
    ov.revert(mark)
    assert ov.first_key_after(b"book/X/a") == a
    ov.delete(a)
    ov.delete(b)
    assert ov.first_key_after(b"book/X/a") is None
    ov.put(b, b"")  # a new order below the memo's end
    assert ov.first_key_after(b"book/X/a") == b
