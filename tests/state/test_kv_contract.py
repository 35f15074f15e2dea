"""One contract for every key-value backend (state/kv.py), in the py-evm manner: the same
tests run on real LevelDB (plyvel), on MemoryKV and on a ScratchKV over a snapshot of a
LevelDB that already holds keys (some shown through, some overridden, some tombstoned).

The expected values are what plyvel 1.5 does, quirks included (marked "plyvel quirk"): the
in-memory backends run plyvel's own iterator logic, so code behaves the same on all three.
A stateful test drives random operations against the in-memory backends, real plyvel and a
dict model; another checks that a scratch layer never writes its base.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import plyvel
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from state import kv_level
from state.kv import KV, KVReader, MemoryKV, ScratchKV
from state.kv_level import LevelKV
from state.store_errors import StoreDamaged

BASE = {b"": b"stale", b"a": b"A", b"abc": b"stale", b"b": b"B", b"bb": b"gone",
        b"\xff": b"FF", b"zz": b"gone"}
"""What every backend holds before a test: a scratch backend's base, else written."""

ITEMS = {b"": b"EMPTY", b"a": b"A", b"ab": b"AB", b"abc": b"ABC", b"b": b"B", b"ba": b"BA",
         b"c": b"C", b"\xff": b"FF", b"\xff\x00": b"FF00", b"\xff\xff": b"FFFF"}
"""What the ``db`` fixture holds: on a scratch backend a, b and \\xff come from the base."""

ALL = sorted(ITEMS)


class Boom(Exception):
    """Raised inside a write batch's with-block."""


def open_leveldb(path: Path, content: dict[bytes, bytes]) -> Any:
    """The LevelDB backend as the store opens it (checked reads, state/kv_level.py)."""
    db = LevelKV(str(path), create_if_missing=True)
    for k, v in content.items():
        db.put(k, v)
    return db


def open_plyvel(path: Path, content: dict[bytes, bytes]) -> Any:
    """Plain plyvel: the reference the backends are held to."""
    db = plyvel.DB(str(path), create_if_missing=True)
    for k, v in content.items():
        db.put(k, v)
    return db


@pytest.fixture(params=["leveldb", "memory", "scratch"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KV]:
    """A backend holding ``BASE``."""
    base = None
    if request.param == "leveldb":
        db: KV = open_leveldb(tmp_path / "db", BASE)
    elif request.param == "memory":
        db = MemoryKV()
        for k, v in BASE.items():
            db.put(k, v)
    else:
        base = open_leveldb(tmp_path / "base", BASE)
        db = ScratchKV(base.snapshot(), owns_base=True)
    yield db
    db.close()
    if base is not None:
        assert dict(base.iterator()) == BASE  # the scratch layer never wrote its base
        base.close()


@pytest.fixture
def db(kv: KV) -> KV:
    """A backend holding exactly ``ITEMS`` (written over ``BASE``)."""
    for k in BASE.keys() - ITEMS.keys():
        kv.delete(k)
    for k, v in ITEMS.items():
        if kv.get(k) != v:
            kv.put(k, v)
    return kv


def keys(db: KVReader, **kw: Any) -> list[Any]:
    return list(db.iterator(include_value=False, **kw))


def steps(it: Any, script: list[bytes | None]) -> list[Any]:
    """Run a script on an iterator: None is next(), bytes a seek there."""
    out: list[Any] = []
    for s in script:
        if s is None:
            out.append(next(it, "END"))
        else:
            it.seek(s)
    return out


# -- single keys ------------------------------------------------------------------------------

def test_get_put_overwrite_delete(db: KV) -> None:
    assert db.get(b"nope") is None
    assert db.get(b"nope", b"dflt") == b"dflt"
    assert db.get(b"a") == b"A" and db.get(b"") == b"EMPTY"
    db.put(b"a", b"A2")
    assert db.get(b"a") == b"A2"
    db.put(b"new", b"N", sync=True)
    assert db.get(b"new") == b"N"
    db.delete(b"a")
    db.delete(b"never-there")  # deleting a missing key is fine
    assert db.get(b"a") is None and db.get(b"a", b"d") == b"d"
    db.put(b"a", b"")  # an empty value is a value
    assert db.get(b"a") == b"" and db.get(b"a", b"d") == b""
    db.put(b"v", bytearray(b"xy"))  # type: ignore[arg-type]  # any bytes-like value
    assert db.get(b"v") == b"xy"


def test_tombstoned_and_overridden_keys(kv: KV) -> None:
    """A scratch backend's deletes and puts win over its base (the others simply write)."""
    assert dict(kv.iterator()) == BASE
    kv.delete(b"bb")
    kv.put(b"abc", b"new")
    assert kv.get(b"bb") is None and kv.get(b"abc") == b"new"
    assert keys(kv, prefix=b"b") == [b"b"]
    assert dict(kv.iterator(prefix=b"a")) == {b"a": b"A", b"abc": b"new"}
    kv.put(b"bb", b"back")
    assert dict(kv.iterator(prefix=b"b", reverse=True)) == {b"b": b"B", b"bb": b"back"}


def test_keys_and_bounds_must_be_bytes(db: KV) -> None:
    for call in (lambda: db.get("a"), lambda: db.put("a", b"1"),  # type: ignore[arg-type]
                 lambda: db.delete(bytearray(b"a")),  # type: ignore[arg-type]
                 lambda: db.put(b"a", "1"),  # type: ignore[arg-type]
                 lambda: db.iterator(prefix="a"), lambda: db.iterator(start="a"),  # type: ignore
                 lambda: db.iterator(prefix=b"a", start=b"a"),
                 lambda: db.iterator(prefix=b"a", stop=b"b")):
        with pytest.raises(TypeError):
            call()


# -- ranges -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, expected", [
    ({}, ALL),
    ({"prefix": b""}, ALL),
    ({"prefix": b"a"}, [b"a", b"ab", b"abc"]),
    ({"prefix": b"a", "include_start": False}, [b"a", b"ab", b"abc"]),  # flags ignored
    ({"prefix": b"ab"}, [b"ab", b"abc"]),
    ({"prefix": b"\xff"}, [b"\xff", b"\xff\x00", b"\xff\xff"]),  # no end: all 0xff
    ({"prefix": b"\xff\xff"}, [b"\xff\xff"]),
    ({"prefix": b"q"}, []),
    ({"start": b"b"}, [b"b", b"ba", b"c", b"\xff", b"\xff\x00", b"\xff\xff"]),
    ({"start": b"b", "include_start": False}, [b"ba", b"c", b"\xff", b"\xff\x00", b"\xff\xff"]),
    ({"start": b"bb"}, [b"c", b"\xff", b"\xff\x00", b"\xff\xff"]),
    ({"start": b"", "include_start": False}, ALL[1:]),
    ({"stop": b"b"}, [b"", b"a", b"ab", b"abc"]),
    ({"stop": b"b", "include_stop": True}, [b"", b"a", b"ab", b"abc", b"b"]),
    ({"start": b"ab", "stop": b"ba"}, [b"ab", b"abc", b"b"]),
    ({"start": b"ab", "stop": b"ba", "include_start": False, "include_stop": True},
     [b"abc", b"b", b"ba"]),
    ({"start": b"b", "stop": b"b"}, []),
    ({"start": b"b", "stop": b"b", "include_stop": True}, [b"b"]),
    ({"start": b"c", "stop": b"a"}, []),
    ({"start": b"\xff\x00", "stop": b"\xff\xff", "include_stop": True},
     [b"\xff\x00", b"\xff\xff"]),
])
def test_forward_ranges(db: KV, kw: dict[str, Any], expected: list[bytes]) -> None:
    assert keys(db, **kw) == expected
    assert list(db.iterator(**kw)) == [(k, ITEMS[k]) for k in expected]


@pytest.mark.parametrize("kw, expected", [
    ({}, ALL[::-1]),
    ({"prefix": b"a"}, [b"abc", b"ab", b"a"]),
    ({"prefix": b"\xff"}, [b"\xff\xff", b"\xff\x00", b"\xff"]),
    ({"start": b"a", "stop": b"c"}, [b"ba", b"b", b"abc", b"ab", b"a"]),
    ({"start": b"a", "stop": b"c", "include_start": False, "include_stop": True},
     [b"c", b"ba", b"b", b"abc", b"ab"]),
    ({"stop": b"b"}, [b"abc", b"ab", b"a", b""]),
    ({"start": b"bb", "stop": b"\xff"}, [b"c"]),
    ({"start": b"c", "stop": b"a"}, []),
    # plyvel quirk: a reverse iterator whose largest key in range IS ``start`` (here: the
    # prefix itself, or start == stop) yields nothing
    ({"prefix": b"c"}, []),
    ({"prefix": b"ba"}, []),
    ({"start": b"b", "stop": b"b", "include_stop": True}, []),
    ({"start": b"b", "stop": b"ba"}, []),
])
def test_reverse_ranges(db: KV, kw: dict[str, Any], expected: list[bytes]) -> None:
    assert keys(db, reverse=True, **kw) == expected


def test_include_key_and_include_value(db: KV) -> None:
    assert list(db.iterator(prefix=b"ab")) == [(b"ab", b"AB"), (b"abc", b"ABC")]
    assert list(db.iterator(prefix=b"ab", include_value=False)) == [b"ab", b"abc"]
    assert list(db.iterator(prefix=b"ab", include_key=False)) == [b"AB", b"ABC"]
    assert list(db.iterator(prefix=b"ab", include_key=False, include_value=False)) == \
        [None, None]
    assert list(db.iterator(prefix=b"ab", reverse=True, include_key=False)) == [b"ABC", b"AB"]


# -- seek -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, script, expected", [
    ({}, [b"b", None, None], [b"b", b"ba"]),
    ({}, [b"bb", None], [b"c"]),
    ({}, [b"zz", None], [b"\xff"]),
    ({}, [b"\xff\xff\x00", None], ["END"]),
    ({}, [None, None, None, b"a", None], [b"", b"a", b"ab", b"a"]),  # seek back
    ({}, [None] * 11 + [b"c", None], ALL + ["END", b"c"]),  # seek after the end
    ({"start": b"ab", "stop": b"c"}, [b"", None], [b"ab"]),  # clamped to start
    ({"start": b"ab", "stop": b"c"}, [b"c", None], ["END"]),
    ({"start": b"ab", "stop": b"c", "include_stop": True}, [b"zz", None, None], [b"c", "END"]),
    ({"prefix": b"a"}, [b"b", None], ["END"]),
    # plyvel quirk: a seek to an excluded start lands on it
    ({"start": b"ab", "include_start": False}, [b"ab", None], [b"ab"]),
])
def test_seek_forward(db: KV, kw: dict[str, Any], script: list[bytes | None],
                      expected: list[Any]) -> None:
    with db.iterator(include_value=False, **kw) as it:
        assert steps(it, script) == expected


@pytest.mark.parametrize("kw, script, expected", [
    # after a seek, a reverse iterator yields the keys BELOW the target
    ({}, [b"b", None, None], [b"abc", b"ab"]),
    ({}, [b"bb", None], [b"ba"]),
    ({}, [b"zz", None], [b"c"]),
    ({}, [b"\xff\xff\x00", None], [b"\xff\xff"]),  # past the end: from the last key
    ({}, [b"", None], ["END"]),
    ({}, [None, b"ab", None, None, None], [b"\xff\xff", b"a", b"", "END"]),
    ({"start": b"a", "stop": b"c"}, [b"zz", None], [b"ba"]),  # clamped to stop
    ({"start": b"a", "stop": b"c", "include_stop": True}, [b"c", None], [b"ba"]),
    ({"start": b"a", "stop": b"c"}, [b"b", None, None, None, None],
     [b"abc", b"ab", b"a", "END"]),
    # plyvel quirk: a seek at or below start yields one key below the range, then stops
    ({"start": b"ab", "stop": b"c"}, [b"a", None, None], [b"a", "END"]),
    ({"prefix": b"b"}, [b"", None, None], [b"abc", "END"]),
    ({"start": b"ab", "stop": b"c", "include_start": False}, [b"abc", None, None],
     [b"ab", "END"]),
])
def test_seek_on_reverse_iterators(db: KV, kw: dict[str, Any], script: list[bytes | None],
                                   expected: list[Any]) -> None:
    with db.iterator(reverse=True, include_value=False, **kw) as it:
        assert steps(it, script) == expected


# -- consistency ------------------------------------------------------------------------------

def test_an_open_iterator_sees_the_data_as_it_was_when_opened(db: KV) -> None:
    """LevelDB iterators read an implicit snapshot taken when they are created."""
    it = db.iterator(prefix=b"a")
    rit = db.iterator(reverse=True)
    assert next(it) == (b"a", b"A")
    db.put(b"aa", b"new")
    db.put(b"ab", b"changed")
    db.delete(b"abc")
    with db.write_batch() as wb:
        wb.put(b"a\xff", b"batched")
    assert list(it) == [(b"ab", b"AB"), (b"abc", b"ABC")]
    it.seek(b"a")  # a seek stays in the iterator's view
    assert list(it) == [(b"a", b"A"), (b"ab", b"AB"), (b"abc", b"ABC")]
    assert [k for k, _ in rit] == ALL[::-1]
    assert list(db.iterator(prefix=b"a")) == [(b"a", b"A"), (b"aa", b"new"),
                                              (b"ab", b"changed"), (b"a\xff", b"batched")]


def test_iterators_close_and_work_as_context_managers(db: KV) -> None:
    with db.iterator(prefix=b"a") as it:
        assert next(it) == (b"a", b"A")
    for call in (lambda: next(it), lambda: it.seek(b"a")):
        with pytest.raises(RuntimeError):
            call()
    it.close()  # closing twice is fine


def test_snapshots_are_isolated_from_later_writes(db: KV) -> None:
    snap = db.snapshot()
    db.put(b"a", b"A2")
    db.delete(b"b")
    db.put(b"aa", b"new")
    with db.write_batch(transaction=True) as wb:
        wb.put(b"\xff\x01", b"x")
        wb.delete(b"c")
    assert snap.get(b"a") == b"A" and snap.get(b"b") == b"B" and snap.get(b"aa") is None
    assert snap.get(b"aa", b"d") == b"d"
    assert dict(snap.iterator()) == ITEMS
    assert keys(snap, prefix=b"\xff", reverse=True) == [b"\xff\xff", b"\xff\x00", b"\xff"]
    it = snap.iterator(prefix=b"a", include_value=False)
    later = db.snapshot()
    db.put(b"ab", b"AB2")
    snap.close()
    snap.close()  # closing twice is fine
    with pytest.raises(RuntimeError):
        snap.get(b"a")
    assert list(it) == [b"a", b"ab", b"abc"]  # an iterator outlives its snapshot
    with later as s:
        assert s.get(b"ab") == b"AB" and s.get(b"a") == b"A2"
    with pytest.raises(RuntimeError):  # the with-block closed it
        s.get(b"a")
    assert db.get(b"ab") == b"AB2"


# -- batches ----------------------------------------------------------------------------------

def test_a_batch_applies_its_ops_in_order_when_the_block_ends(db: KV) -> None:
    with db.write_batch(sync=True) as wb:
        wb.put(b"k", b"1")
        wb.delete(b"k")
        wb.put(b"m", b"1")
        wb.put(b"m", b"2")
        wb.delete(b"a")
        assert db.get(b"m") is None  # not visible before the batch is written
    assert db.get(b"k") is None and db.get(b"m") == b"2" and db.get(b"a") is None


def test_an_aborted_transaction_batch_writes_nothing(db: KV) -> None:
    with pytest.raises(Boom), db.write_batch(transaction=True) as wb:
        wb.put(b"x", b"1")
        wb.delete(b"a")
        raise Boom
    assert db.get(b"x") is None and db.get(b"a") == b"A"
    assert dict(db.iterator()) == ITEMS


def test_an_aborted_plain_batch_writes_the_ops_made_before_the_exception(db: KV) -> None:
    """plyvel's default (transaction=False) batch is written even when the block raises."""
    with pytest.raises(Boom), db.write_batch() as wb:
        wb.put(b"x", b"1")
        wb.delete(b"a")
        raise Boom
    assert db.get(b"x") == b"1" and db.get(b"a") is None


# -- closing ----------------------------------------------------------------------------------

def test_a_closed_database_refuses_everything(db: KV) -> None:
    it = db.iterator()
    assert not db.closed
    db.close()
    assert db.closed
    for call in (lambda: db.get(b"a"), lambda: db.put(b"a", b"1"), lambda: db.delete(b"a"),
                 lambda: db.iterator(), lambda: db.write_batch(), lambda: db.snapshot(),
                 lambda: next(it)):
        with pytest.raises(RuntimeError):
            call()
    db.close()  # closing twice is fine


# -- the model --------------------------------------------------------------------------------

def prefix_end(prefix: bytes) -> bytes | None:
    p = prefix.rstrip(b"\xff")
    return p[:-1] + bytes([p[-1] + 1]) if p else None


def model_iter(model: dict[bytes, bytes], prefix: bytes | None = None,
               start: bytes | None = None, stop: bytes | None = None,
               include_start: bool = True, include_stop: bool = False, reverse: bool = False,
               include_key: bool = True, include_value: bool = True) -> list[Any]:
    """What a plyvel iterator yields from a dict (no seeks)."""
    if prefix is not None:
        start, stop, include_start, include_stop = prefix, prefix_end(prefix), True, False
    ks = [k for k in sorted(model)
          if (start is None or k > start or (k == start and include_start))
          and (stop is None or k < stop or (k == stop and include_stop))]
    if reverse:
        ks.reverse()
        if ks and ks[0] == start:
            ks = []  # plyvel quirk: see test_reverse_ranges
    if include_key and include_value:
        return [(k, model[k]) for k in ks]
    return [k if include_key else model[k] if include_value else None for k in ks]


key_st = st.lists(st.sampled_from([b"\x00", b"a", b"b", b"\xff"]), max_size=3).map(b"".join)
value_st = st.binary(max_size=3)
ops_st = st.lists(st.tuples(key_st, st.one_of(st.none(), value_st)), max_size=6)


@st.composite
def iter_args(draw: st.DrawFn) -> dict[str, Any]:
    kw: dict[str, Any] = {"reverse": draw(st.booleans()), "include_key": draw(st.booleans()),
                          "include_value": draw(st.booleans())}
    if draw(st.integers(0, 3)) == 0:
        kw["prefix"] = draw(key_st)
    else:
        kw["start"] = draw(st.one_of(st.none(), key_st))
        kw["stop"] = draw(st.one_of(st.none(), key_st))
        kw["include_start"], kw["include_stop"] = draw(st.booleans()), draw(st.booleans())
    return kw


class BackendsVsModel(RuleBasedStateMachine):
    """Random writes, batches, reads, iterations, seeks, open iterators and snapshots on
    MemoryKV, a ScratchKV over a LevelDB snapshot, a ScratchKV over a ScratchKV's snapshot
    over a MemoryKV, and real LevelDB: every read against a dict model (seek scripts, whose
    answers plyvel's logic defines, against LevelDB's)."""

    @initialize(base=st.dictionaries(key_st, value_st, max_size=6))
    def setup(self, base: dict[bytes, bytes]) -> None:
        self._dir = tempfile.TemporaryDirectory()
        self.base_content = base
        self.base = open_leveldb(Path(self._dir.name) / "base", base)
        self.real = open_plyvel(Path(self._dir.name) / "real", base)
        memory, under = MemoryKV(), MemoryKV()
        for k, v in base.items():
            memory.put(k, v)
            under.put(k, v)
        self.base.put(b"late", b"x")  # after the snapshot: the scratch must not see it
        nested = ScratchKV(ScratchKV(under.snapshot()).snapshot())
        self.base.delete(b"late")
        self.dbs: list[Any] = [self.real, memory,
                               ScratchKV(self.base.snapshot(), owns_base=True), nested]
        self.model = dict(base)
        self.iters: list[tuple[list[Any], list[Any]]] = []
        self.snaps: list[tuple[list[Any], dict[bytes, bytes]]] = []

    def _apply(self, ops: list[tuple[bytes, bytes | None]]) -> None:
        for k, v in ops:
            if v is None:
                self.model.pop(k, None)
            else:
                self.model[k] = v

    @rule(k=key_st, v=value_st)
    def put(self, k: bytes, v: bytes) -> None:
        for db in self.dbs:
            db.put(k, v)
        self._apply([(k, v)])

    @rule(k=key_st)
    def delete(self, k: bytes) -> None:
        for db in self.dbs:
            db.delete(k)
        self._apply([(k, None)])

    @rule(ops=ops_st, transaction=st.booleans(), abort=st.booleans())
    def batch(self, ops: list[tuple[bytes, bytes | None]], transaction: bool,
              abort: bool) -> None:
        for db in self.dbs:
            with pytest.raises(Boom) if abort else nullcontext(), \
                    db.write_batch(transaction=transaction) as wb:
                for k, v in ops:
                    wb.delete(k) if v is None else wb.put(k, v)
                if abort:
                    raise Boom
        if not (abort and transaction):
            self._apply(ops)

    @rule(k=key_st)
    def get(self, k: bytes) -> None:
        for db in self.dbs:
            assert db.get(k) == self.model.get(k)
            assert db.get(k, b"?") == self.model.get(k, b"?")

    @rule(kw=iter_args())
    def iterate(self, kw: dict[str, Any]) -> None:
        expected = model_iter(self.model, **kw)
        for db in self.dbs:
            assert list(db.iterator(**kw)) == expected

    @rule(kw=iter_args(), script=st.lists(st.one_of(st.none(), key_st), max_size=8))
    def seek_script(self, kw: dict[str, Any], script: list[bytes | None]) -> None:
        runs = []
        for db in self.dbs:
            with db.iterator(**kw) as it:
                runs.append(steps(it, script))
        assert all(r == runs[0] for r in runs)

    @precondition(lambda self: len(self.iters) < 3)
    @rule(kw=iter_args())
    def open_iterator(self, kw: dict[str, Any]) -> None:
        self.iters.append(([db.iterator(**kw) for db in self.dbs], model_iter(self.model, **kw)))

    @precondition(lambda self: self.iters)
    @rule()
    def drain_iterator(self) -> None:
        its, expected = self.iters.pop(0)
        for it in its:
            assert list(it) == expected

    @precondition(lambda self: len(self.snaps) < 3)
    @rule()
    def take_snapshot(self) -> None:
        self.snaps.append(([db.snapshot() for db in self.dbs], dict(self.model)))

    @precondition(lambda self: self.snaps)
    @rule(k=key_st, kw=iter_args(), close=st.booleans())
    def read_snapshot(self, k: bytes, kw: dict[str, Any], close: bool) -> None:
        snaps, frozen = self.snaps[0]
        for s in snaps:
            assert s.get(k) == frozen.get(k)
            assert list(s.iterator(**kw)) == model_iter(frozen, **kw)
        if close:
            for s in snaps:
                s.close()
            self.snaps.pop(0)

    @invariant()
    def contents_match(self) -> None:
        for db in getattr(self, "dbs", []):
            assert list(db.iterator()) == sorted(self.model.items())

    def teardown(self) -> None:
        if hasattr(self, "dbs"):
            for db in self.dbs:
                db.close()
            assert dict(self.base.iterator()) == self.base_content  # never written
            self.base.close()
            self._dir.cleanup()


TestBackendsVsModel = BackendsVsModel.TestCase
TestBackendsVsModel.settings = settings(max_examples=150, stateful_step_count=40,
                                        deadline=None)


def test_a_scratch_layer_never_writes_its_base(tmp_path: Path) -> None:
    base = open_leveldb(tmp_path / "base", {b"k%03d" % i: b"v%d" % i for i in range(300)})
    before = list(base.iterator())
    scratch = ScratchKV(base.snapshot(), owns_base=True)
    for i in range(0, 600, 3):
        scratch.put(b"k%03d" % i, b"scratch")
        scratch.delete(b"k%03d" % (i + 1))
    for n in range(20):
        with scratch.write_batch(transaction=True, sync=True) as wb:
            for i in range(n, 300, 7):
                wb.put(b"k%03d" % i, b"batch%d" % n)
                wb.delete(b"k%03d" % (i + 2))
    with pytest.raises(Boom), scratch.write_batch() as wb:
        wb.put(b"k000", b"aborted")
        raise Boom
    assert scratch.get(b"k000") == b"aborted" and scratch.get(b"k599") is None
    assert list(scratch.iterator()) != before
    scratch.close()
    assert base.get(b"k000") == b"v0" and list(base.iterator()) == before
    base.close()
    reopened = plyvel.DB(str(tmp_path / "base"))
    assert list(reopened.iterator()) == before
    reopened.close()


class CountingBase:
    """A scratch layer's base that counts what the layer asks of it."""

    def __init__(self, snap: Any) -> None:
        self.snap, self.moves, self.gets = snap, 0, 0

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        self.gets += 1
        return self.snap.get(key, default)  # type: ignore[no-any-return]

    def raw_iterator(self) -> CountingCursor:
        return CountingCursor(self, self.snap.raw_iterator())

    def close(self) -> None:
        self.snap.close()


class CountingCursor:
    """A base cursor that counts its moves on its base."""

    def __init__(self, owner: CountingBase, cursor: Any) -> None:
        self._owner, self._c = owner, cursor

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._c, name)
        if name in ("seek", "seek_to_first", "seek_to_last", "next", "prev"):
            self._owner.moves += 1
        return attr


def test_scratch_reads_cost_what_they_visit_not_the_size_of_the_base(tmp_path: Path) -> None:
    n = 100_000
    base = plyvel.DB(str(tmp_path / "base"), create_if_missing=True)
    with base.write_batch() as wb:
        for i in range(n):
            wb.put(b"acct/%06d" % i, b"%d" % i)
    counting = CountingBase(base.snapshot())
    scratch = ScratchKV(counting, owns_base=True)  # type: ignore[arg-type]
    for i in range(0, n, 100):
        scratch.put(b"acct/%06d" % (i + 50), b"changed")
        scratch.delete(b"acct/%06d" % (i + 1))
    assert scratch.written_count == 2 * n // 100

    def cost(read: Any) -> tuple[Any, int]:
        counting.moves = counting.gets = 0
        out = read()
        return out, counting.moves + counting.gets

    def first(it: Any, m: int) -> list[Any]:
        with it:
            return [next(it) for _ in range(m)]

    assert cost(lambda: scratch.get(b"acct/050001")) == (None, 0)  # a tombstone: no base read
    assert cost(lambda: scratch.get(b"acct/050002")) == (b"50002", 1)
    keys10, c = cost(lambda: first(scratch.iterator(prefix=b"acct/", include_value=False), 10))
    assert keys10 == [b"acct/%06d" % i for i in (0, *range(2, 11))] and c < 20

    def seek_then(reverse: bool) -> list[Any]:
        it = scratch.iterator(prefix=b"acct/", reverse=reverse)
        it.seek(b"acct/050050")
        return first(it, 3)

    fwd, c = cost(lambda: seek_then(False))
    assert fwd == [(b"acct/050050", b"changed"), (b"acct/050051", b"50051"),
                   (b"acct/050052", b"50052")] and c < 10
    rev, c = cost(lambda: seek_then(True))
    assert [k for k, _ in rev] == [b"acct/050049", b"acct/050048", b"acct/050047"] and c < 10
    last, c = cost(lambda: first(scratch.iterator(reverse=True, include_value=False), 3))
    assert last == [b"acct/099999", b"acct/099998", b"acct/099997"] and c < 10
    with scratch.snapshot() as snap:  # a snapshot of the scratch layer copies nothing
        scratch.put(b"acct/000000", b"after")
        assert snap.get(b"acct/000000") == b"0" and scratch.get(b"acct/000000") == b"after"
    scratch.close()
    base.close()


def test_a_damaged_table_block_is_a_typed_failure_on_every_read_path(tmp_path: Path) -> None:
    """A flipped byte in a table file: every read through the LevelDB backend (get,
    iterator, seek, snapshot, a scratch layer over it) raises StoreDamaged, never a
    changed value, even after an earlier read met the block (plain plyvel caches an
    unchecked block and then serves the damage on every read)."""
    path = tmp_path / "db"
    values = {b"k%05d" % i: b"v" * 100 + b"%d" % i for i in range(2000)}
    db = LevelKV(str(path), create_if_missing=True)
    for k, v in values.items():
        db.put(k, v)
    db.compact_range()
    db.close()
    [table] = list(path.glob("*.ldb"))
    raw = bytearray(table.read_bytes())
    raw[len(raw) // 4] ^= 0x01
    table.write_bytes(bytes(raw))
    db = LevelKV(str(path))
    seen_bad: list[bytes] = []
    for k, v in values.items():
        try:
            if db.get(k) != v:
                seen_bad.append(k)
        except StoreDamaged as e:
            assert e.reason == "store_damaged" and "checksum" in str(e)
    assert seen_bad == []
    with pytest.raises(StoreDamaged):
        list(db.iterator())
    with pytest.raises(StoreDamaged):
        it = db.iterator()
        it.seek(b"k00000")
        list(it)
    snap = db.snapshot()
    with pytest.raises(StoreDamaged):
        [snap.get(k) for k in values]
    scratch = ScratchKV(db.snapshot(), owns_base=True)
    with pytest.raises(StoreDamaged):
        list(scratch.iterator())
    with pytest.raises(StoreDamaged):
        [scratch.get(k) for k in values]
    scratch.close()
    snap.close()
    db.close()


def test_the_stores_tables_carry_a_bloom_filter(tmp_path: Path) -> None:
    """A read of an absent key (every new order id) must not read and checksum table
    blocks: the store's LevelDB writes a bloom filter into each table it makes."""
    db = kv_level.open_leveldb(tmp_path / "s", True, kv_level.DEFAULT_LEVELDB_OPTIONS)
    with db.write_batch() as wb:
        for i in range(2000):
            wb.put(b"key%06d" % i, b"v" * 50)
    db.close()
    # Reopening turns the write-ahead log into a table file.
    kv_level.open_leveldb(tmp_path / "s", False, kv_level.DEFAULT_LEVELDB_OPTIONS).close()
    tables = list((tmp_path / "s").glob("*.ldb"))
    assert tables
    assert all(b"filter.leveldb.BuiltinBloomFilter2" in t.read_bytes() for t in tables)
