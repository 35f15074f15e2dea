"""Shared test helpers; the local chain builders (genesis, homes, node processes) live in
node/dev/local.py, which benchmarks use too."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def rewrite_behind_the_chain(store_dir: Path, writes: list[tuple[bytes, bytes | None]],
                             *, tree_too: bool) -> None:
    """What a faulty maintenance step does to a stopped node's store: write state values
    (state keys, None deletes) straight into LevelDB, outside any block. With ``tree_too``
    it is a thorough one that also rewrites the state tree and the head's state root to
    match, so that every local consistency check passes (only a comparison with the root
    recorded before, or the signed header, shows it)."""
    from state.schema import META_HEAD, STATE, TREE
    from state.store import Store
    from state.tree import StateTree

    with Store(store_dir) as s:
        head = s.head()
        assert head is not None
        with s.db.write_batch(transaction=True) as wb:
            for k, v in writes:
                if v is None:
                    wb.delete(STATE + k)
                else:
                    wb.put(STATE + k, v)
            if tree_too:
                tree_ov = s.overlay(TREE)
                root = StateTree(tree_ov).apply(sorted(writes))
                for k, v in tree_ov.changes():
                    if v is None:
                        wb.delete(TREE + k)
                    else:
                        wb.put(TREE + k, v)
                wb.put(META_HEAD, replace(head, state_root=root).encode())
