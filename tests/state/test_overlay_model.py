"""Model tests of the Overlay's ordered reads, walks, checkpoints and released marks against
a plain set (the book walk's memo, skipped runs and journal are optimizations that must not
change what a walk sees)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state.store import Head, Store

ZERO = bytes(32)


def head(h: int) -> Head:
    return Head(h, ZERO, ZERO, 0, h)


def key(i: int) -> bytes:
    return (b"book/X/a" if i % 2 else b"book/X/b") + i.to_bytes(2, "big")


@settings(max_examples=150, deadline=None)
@given(
    committed=st.sets(st.integers(0, 40), max_size=15),
    ops=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "put",
                    "del",
                    "mark",
                    "revert",
                    "query",
                    "walk",
                    "step",
                    "live",
                    "written",
                    "delcur",
                ]
            ),
            st.integers(-1, 41),
        ),
        max_size=80,
    ),
)
def test_model(
    tmp_path_factory: pytest.TempPathFactory, committed: set[int], ops: list[tuple[str, int]]
) -> None:
    s = Store(tmp_path_factory.mktemp("m") / "db", sync=False)
    try:
        ov = s.overlay()
        for i in committed:
            ov.put(key(i), b"v")
        s.init_genesis(ZERO, "c", [ov], head(0))
        ov = s.overlay()
        model = {key(i) for i in committed}
        written: dict[bytes, bool] = {}
        marks: list[tuple[int, set[bytes], dict[bytes, bool]]] = []
        walks: dict[bytes, tuple[Iterator[bytes], bytes] | None] = {}  # prefix -> (gen, last)
        for op, i in ops:
            if op == "put" and i >= 0:
                ov.put(key(i), b"w")
                model.add(key(i))
                written[key(i)] = True
            elif op == "del" and i >= 0:
                ov.delete(key(i))
                model.discard(key(i))
                written[key(i)] = True
            elif op == "mark":
                marks.append((ov.checkpoint(), set(model), dict(written)))
            elif op == "revert" and marks:
                m, snap, w = marks.pop()
                ov.revert(m)
                model = snap
                written = w
            elif op == "query":
                for prefix in (b"book/X/a", b"book/X/b", b"book/X/"):
                    after = b"" if i < 0 else key(i)
                    want = min(
                        (k for k in model if k > after and k.startswith(prefix)), default=None
                    )
                    assert ov.first_key_after(prefix, after) == want
            elif op == "walk":
                prefix = b"book/X/a" if i % 2 else b"book/X/b"
                g = ov.walk_ordered(prefix)
                first = next(g, None)
                want = min((k for k in model if k.startswith(prefix)), default=None)
                assert first == want
                walks[prefix] = (g, first) if first is not None else None
            elif op in ("step", "delcur"):
                prefix = b"book/X/a" if i % 2 else b"book/X/b"
                cur = walks.get(prefix)
                if cur:
                    g, last = cur
                    if op == "delcur" and last in model:
                        ov.delete(last)
                        model.discard(last)
                        written[last] = True
                    nxt = next(g, None)
                    want = min(
                        (k for k in model if k > last and k.startswith(prefix)), default=None
                    )
                    assert nxt == want, (nxt, want)
                    walks[prefix] = (g, nxt) if nxt is not None else None
            elif op == "live":
                for prefix in (b"book/X/a", b"book/X/b"):
                    assert ov.live_keys(prefix) == sorted(k for k in model if k.startswith(prefix))
            elif op == "written":
                for prefix in (b"book/X/a", b"book/X/b"):
                    assert ov.written_keys(prefix) == sorted(
                        k for k in written if k.startswith(prefix)
                    )
        for prefix in (b"book/X/a", b"book/X/b"):
            assert list(ov.iter_ordered(prefix)) == sorted(k for k in model if k.startswith(prefix))
            # the live index agrees with the writes
        assert ov._live == sorted(k for k, v in ov.writes.items() if v is not None)
    finally:
        s.close()


@settings(max_examples=150, deadline=None)
@given(
    committed=st.sets(st.integers(0, 20), max_size=8),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["put", "del", "mark", "revert", "release", "query"]),
            st.integers(0, 20),
        ),
        max_size=80,
    ),
)
def test_release_model(
    tmp_path_factory: pytest.TempPathFactory, committed: set[int], ops: list[tuple[str, int]]
) -> None:
    """Nested checkpoints with revert and release agree with a model of snapshots."""
    s = Store(tmp_path_factory.mktemp("r") / "db", sync=False)
    try:
        ov = s.overlay()
        for i in committed:
            ov.put(key(i), b"v")
        s.init_genesis(ZERO, "c", [ov], head(0))
        ov = s.overlay()
        model = {key(i): b"v" for i in committed}
        stack: list[tuple[int, dict[bytes, bytes]]] = []  # (mark, snapshot of model)
        n = 0
        for op, i in ops:
            n += 1
            if op == "put":
                v = b"w%d" % n
                ov.put(key(i), v)
                model[key(i)] = v
            elif op == "del":
                ov.delete(key(i))
                model.pop(key(i), None)
            elif op == "mark":
                stack.append((ov.checkpoint(), dict(model)))
            elif op == "revert" and stack:
                m, snap = stack[-1]  # revert to the innermost mark (it stays usable)
                ov.revert(m)
                model = dict(snap)
            elif op == "release" and stack:
                m, _ = stack.pop()
                ov.release(m)
            elif op == "query":
                for prefix in (b"book/X/a", b"book/X/b"):
                    assert list(ov.iter_ordered(prefix)) == sorted(
                        k for k in model if k.startswith(prefix)
                    )
            for k in set(model) | {key(j) for j in range(21)}:
                assert ov.get(k) == model.get(k)
        # unwind: every remaining mark still reverts exactly
        while stack:
            m, snap = stack.pop()
            ov.revert(m)
            model = dict(snap)
            for k in {key(j) for j in range(21)}:
                assert ov.get(k) == model.get(k)
        assert ov._live == sorted(k for k, v in ov.writes.items() if v is not None)
    finally:
        s.close()


def test_runs_directed(tmp_path: Path) -> None:
    s = Store(tmp_path / "db", sync=False)
    try:
        ov = s.overlay()

        def k(i: int) -> bytes:
            return b"book/X/a" + i.to_bytes(2, "big")

        for i in range(1, 11):
            ov.put(k(i), b"v")
        s.init_genesis(ZERO, "c", [ov], head(0))
        ov = s.overlay()
        for i in range(2, 9):
            ov.delete(k(i))
        assert list(ov.walk_ordered(b"book/X/a")) == [k(1), k(9), k(10)]
        assert ov._runs[b"book/X/a"] == (k(2), k(9))
        assert list(ov.walk_ordered(b"book/X/a")) == [k(1), k(9), k(10)]
        m = ov.checkpoint()
        ov.put(k(5), b"again")
        assert b"book/X/a" not in ov._runs
        assert list(ov.walk_ordered(b"book/X/a")) == [k(1), k(5), k(9), k(10)]
        ov.revert(m)
        assert list(ov.walk_ordered(b"book/X/a")) == [k(1), k(9), k(10)]
        ov.delete(k(9))
        g = ov.walk_ordered(b"book/X/a")
        assert next(g) == k(1)
        assert next(g) == k(10)
        assert ov._runs[b"book/X/a"] == (k(2), k(10))
        ov.delete(k(10))
        assert next(g, None) is None
        assert list(ov.walk_ordered(b"book/X/a")) == [k(1)]
        ov.put(k(3), b"new")
        assert list(ov.walk_ordered(b"book/X/a")) == [k(1), k(3)]
    finally:
        s.close()
