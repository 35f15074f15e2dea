"""State reads that are checked against the committed state tree before they are served.

Why: a value rewritten in the raw store without the tree (a faulty maintenance step, a
damaged disk) leaves the tree's root, and so the head, unchanged; the root checks at start
and resume pass and, unchecked, the value would be served to clients, and built on by every
block that reads it without writing it. Each state value read through
:class:`CheckedStateReader` is hashed and compared with the value hash of its leaf in the
same snapshot's tree (one path walk, ~log16(n) group reads); a mismatch raises
:class:`StoredValueMismatch` (reason ``stored_state``) instead of answering.

Prefix walks (order book, positions) iterate keys only and read each value with ``get``, so
every value they serve is checked as well.
"""

from __future__ import annotations

from collections.abc import Iterable

from chain.stateproof import value_hash
from state import schema
from state.invariants import printable_key
from state.kv import KVReader
from state.kv_iteration import KVIterator
from state.overlay import Overlay
from state.store_errors import CorruptValue
from state.tree import StateTree


def key_text(key: bytes) -> str:
    """A state key for people (the same text as a guard's ``stored_state`` evidence)."""
    return printable_key(key)


class StoredValueMismatch(CorruptValue):
    """A stored state value is not what the committed state tree holds for its key: the
    store was changed outside the blocks. Never served, never built on."""

    reason = "stored_state"

    def __init__(self, key: bytes, tree_hash: bytes | None, stored_hash: bytes | None
                 ) -> None:
        super().__init__(f"the stored value of {key_text(key)} differs from the committed "
                         "state tree (written outside a block?); it is not served")
        self.key = key
        self.tree_hash = tree_hash
        self.stored_hash = stored_hash

    def evidence(self) -> dict[str, object]:
        """What a ``stored_state`` halt records (the shape of the producer's own)."""
        return {"keys": [{"key": self.key.hex(), "key_text": key_text(self.key),
                          "tree_value_hash": None if self.tree_hash is None
                          else self.tree_hash.hex(),
                          "stored_value_hash": None if self.stored_hash is None
                          else self.stored_hash.hex()}],
                "count": "1"}


def check_value(tree: StateTree, key: bytes, raw: bytes | None) -> None:
    """Raise :class:`StoredValueMismatch` unless ``raw`` (a state value, None: absent) is
    what ``tree`` commits to for ``key``."""
    want = tree.value_hash_of(key)
    got = None if raw is None else value_hash(raw)
    if want != got:
        raise StoredValueMismatch(key, want, got)


class CheckedStateReader:
    """A :class:`~state.kv.KVReader` over a snapshot whose state values are checked against
    that snapshot's tree on every ``get`` (other keyspaces pass through)."""

    __slots__ = ("_snap", "_tree")

    def __init__(self, snap: KVReader) -> None:
        self._snap = snap
        self._tree = StateTree(Overlay(snap, schema.TREE))

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        raw = self._snap.get(key)
        if key[:1] == schema.STATE:
            check_value(self._tree, key[1:], raw)
        return default if raw is None else raw

    def iterator(self, prefix: bytes | None = None, start: bytes | None = None,
                 stop: bytes | None = None, include_start: bool = True,
                 include_stop: bool = False, reverse: bool = False, include_key: bool = True,
                 include_value: bool = True, fill_cache: bool = True) -> KVIterator:
        """The snapshot's iterator (its values unchecked: walks read values by ``get``)."""
        return self._snap.iterator(prefix=prefix, start=start, stop=stop,
                                   include_start=include_start, include_stop=include_stop,
                                   reverse=reverse, include_key=include_key,
                                   include_value=include_value, fill_cache=fill_cache)


def mismatched_keys(snap: KVReader, keys: Iterable[bytes]) -> list[StoredValueMismatch]:
    """Which of these state keys' stored values differ from the committed tree: what a
    ``stored_state`` halt named, re-checked before resuming or starting."""
    tree = StateTree(Overlay(snap, schema.TREE))
    out = []
    for k in keys:
        try:
            check_value(tree, k, snap.get(schema.STATE + k))
        except StoredValueMismatch as e:
            out.append(e)
    return out
