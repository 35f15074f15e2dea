"""State commitment cost: root update per block, proof size and proof verification time.

For each state size (``--keys``), the tree is built in bulk (one ``apply`` of every key on an
empty tree), then ``--blocks`` blocks of ``--changes`` net changes each are applied (80%
overwrites of existing keys, 10% new keys, 10% deletes). Measured per block: the time of
``StateTree.apply`` (key and value hashing, node reads, rehashing the dirty paths, node
writes). Proofs: the canonical encoded size of proofs for existing and absent keys, and the
time of ``chain.stateproof.check_proof`` per proof (plus strict decoding).

The tree stores 4 binary levels per store entry (see ``state/tree.py``); "stored groups" is
the number of store entries, "reads/block" the LevelDB gets one block's ``apply`` makes.

Node stores: an in-memory dict, and (``--leveldb``) LevelDB via plyvel in a temporary folder,
with the block's node writes buffered and flushed in one ``WriteBatch(transaction=True)`` as
the node's block overlay will do (``sync=False`` here: in the node the fsync is shared with
the block's commit, which is measured in ``bench/throughput.py``).

LevelDB runs once per ``--cache-mb`` block-cache size: 8 MiB is plyvel's default (the node's
store today, so most node reads miss the cache); larger caches are warmed by one scan first,
as a long-running node's would be.

Usage: .venv/bin/python bench/commitment.py [--keys 100000 1000000] [--blocks 20]
       [--changes 1000] [--leveldb [--cache-mb 8 512]]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import plyvel  # noqa: E402

from chain.stateproof import check_proof, decode_proof  # noqa: E402
from state.tree import StateTree
from state.tree_groups import DictNodeStore

TARGET_UPDATE_MS = 50.0  # per block of 1,000 changed keys, at 1,000,000 keys
TARGET_PROOF_BYTES = 1024  # at 1,000,000 keys
TARGET_VERIFY_MS = 1.0

_MISSING = object()


class LevelDBNodeStore:
    """Nodes in LevelDB; a block's writes are buffered and flushed in one atomic batch."""

    def __init__(self, db: plyvel.DB) -> None:
        self.db = db
        self.pending: dict[bytes, bytes | None] = {}
        self.reads = 0  # LevelDB gets since the last flush
        self.reads_per_block: list[int] = []
        self.bytes_per_block: list[int] = []

    def get(self, node_key: bytes) -> bytes | None:
        v = self.pending.get(node_key, _MISSING)
        if v is _MISSING:
            self.reads += 1
            return self.db.get(node_key)  # type: ignore[no-any-return]
        return v  # type: ignore[return-value]

    def put(self, node_key: bytes, value: bytes) -> None:
        self.pending[node_key] = value

    def delete(self, node_key: bytes) -> None:
        self.pending[node_key] = None

    def flush(self) -> None:
        self.reads_per_block.append(self.reads)
        self.reads = 0
        with self.db.write_batch(transaction=True) as wb:
            for k, v in self.pending.items():
                if v is None:
                    wb.delete(k)
                else:
                    wb.put(k, v)
        self.bytes_per_block.append(sum(len(v) for v in self.pending.values() if v is not None))
        self.pending.clear()


def key_of(i: int) -> bytes:
    return b"acct/" + i.to_bytes(8, "big")


def value_of(rng: random.Random) -> bytes:
    return rng.randbytes(48)


def make_blocks(n_keys: int, blocks: int, changes: int, seed: int) -> list[list[tuple[bytes,
                                                                                 bytes | None]]]:
    """Blocks of sorted net changes over keys 0..n_keys-1 (new keys from n_keys upward)."""
    rng = random.Random(seed)
    live = n_keys
    out = []
    for _ in range(blocks):
        net: dict[bytes, bytes | None] = {}
        while len(net) < changes:
            r = rng.random()
            if r < 0.8:
                net[key_of(rng.randrange(n_keys))] = value_of(rng)
            elif r < 0.9:
                net[key_of(live)] = value_of(rng)
                live += 1
            else:
                net[key_of(rng.randrange(n_keys))] = None
        out.append(sorted(net.items()))
    return out


def run_blocks(tree: StateTree, blocks: list, flush: object = None) -> tuple[list[float],
                                                                           list[float]]:
    """Per-block apply times and (LevelDB) flush times, in ms."""
    apply_ms, flush_ms = [], []
    for b in blocks:
        gc.collect()
        t0 = time.perf_counter()
        tree.apply(b)
        t1 = time.perf_counter()
        if flush is not None:
            flush()  # type: ignore[operator]
        t2 = time.perf_counter()
        apply_ms.append((t1 - t0) * 1e3)
        flush_ms.append((t2 - t1) * 1e3)
    return apply_ms, flush_ms


def proof_figures(tree: StateTree, n_keys: int, samples: int) -> dict[str, float]:
    """Proof sizes for existing and absent keys; absence verification time."""
    rng = random.Random(99)
    cases = []
    for _ in range(samples):
        k = key_of(rng.randrange(n_keys))
        cases.append((k, tree.prove(k)))
    absent = [(b"none/" + i.to_bytes(8, "big"), None) for i in range(samples)]
    present_sizes = [len(p.encode()) for _, p in cases]
    absent_proofs = [(k, tree.prove(k)) for k, _ in absent]
    absent_sizes = [len(p.encode()) for _, p in absent_proofs]
    root = tree.root
    encoded = [p.encode() for _, p in absent_proofs]
    t0 = time.perf_counter()
    for (k, p) in absent_proofs:
        check_proof(root, k, None, p)
    t_abs = (time.perf_counter() - t0) / len(absent_proofs) * 1e3
    t0 = time.perf_counter()
    for (k, _), raw in zip(absent_proofs, encoded, strict=True):
        check_proof(root, k, None, decode_proof(raw))
    t_abs_dec = (time.perf_counter() - t0) / len(absent_proofs) * 1e3
    return {
        "present_mean": statistics.fmean(present_sizes),
        "present_max": max(present_sizes),
        "absent_mean": statistics.fmean(absent_sizes),
        "absent_max": max(absent_sizes),
        "depth_mean": statistics.fmean(p.depth for _, p in cases),
        "verify_absent_ms": t_abs,
        "verify_absent_decode_ms": t_abs_dec,
    }


def inclusion_verify_ms(tree: StateTree, state_values: dict[bytes, bytes], samples: int) -> float:
    """Mean check_proof time for inclusion proofs of keys whose values we know."""
    keys = list(state_values)[:samples]
    proofs = [tree.prove(k) for k in keys]
    root = tree.root
    t0 = time.perf_counter()
    for k, p in zip(keys, proofs, strict=True):
        check_proof(root, k, state_values[k], p)
    return (time.perf_counter() - t0) / len(keys) * 1e3


def bench_size(n_keys: int, args: argparse.Namespace) -> None:
    print(f"\n== {n_keys:,} keys ==")
    rng = random.Random(n_keys)
    t0 = time.perf_counter()
    initial = [(key_of(i), value_of(rng)) for i in range(n_keys)]
    store = DictNodeStore()
    tree = StateTree(store)
    tree.apply(initial)
    build_s = time.perf_counter() - t0
    records = sum((len(v) - 2) // 65 for v in store.data.values())
    print(f"bulk build: {build_s:.1f} s, {len(store.data):,} stored groups"
          f" ({records:,} binary nodes)")
    known = dict(initial[: args.samples])
    del initial

    blocks = make_blocks(n_keys, args.blocks, args.changes, seed=n_keys + 1)
    leveldb_dir = None
    db = None
    if args.leveldb:
        # Copy the built tree into LevelDB before the dict store moves on.
        leveldb_dir = tempfile.TemporaryDirectory(prefix="commitment-bench-")
        db = plyvel.DB(leveldb_dir.name, create_if_missing=True)
        t0 = time.perf_counter()
        items = sorted(store.data.items())
        for i in range(0, len(items), 200_000):
            with db.write_batch(transaction=True) as wb:
                for k, v in items[i:i + 200_000]:
                    wb.put(k, v)
        del items
        print(f"LevelDB load: {time.perf_counter() - t0:.1f} s")

    apply_ms, _ = run_blocks(tree, blocks)
    for b in blocks:  # keep the sample of known values current for inclusion proofs
        for key, val in b:
            if key in known:
                if val is None:
                    del known[key]
                else:
                    known[key] = val
    report_blocks("dict", n_keys, args.changes, apply_ms)

    pf = proof_figures(tree, n_keys, args.samples)
    inc_ms = inclusion_verify_ms(tree, known, args.samples)
    ok_size = "met" if pf["present_max"] <= TARGET_PROOF_BYTES else "NOT met"
    print(f"proof size (inclusion): mean {pf['present_mean']:.0f} B, max {pf['present_max']} B"
          f" (mean depth {pf['depth_mean']:.1f}); target <= {TARGET_PROOF_BYTES} B: {ok_size}")
    print(f"proof size (absence):   mean {pf['absent_mean']:.0f} B, max {pf['absent_max']} B")
    worst = max(inc_ms, pf["verify_absent_ms"], pf["verify_absent_decode_ms"])
    ok_v = "met" if worst < TARGET_VERIFY_MS else "NOT met"
    print(f"verify: inclusion {inc_ms * 1e3:.0f} us, absence {pf['verify_absent_ms'] * 1e3:.0f}"
          f" us, decode+verify {pf['verify_absent_decode_ms'] * 1e3:.0f} us;"
          f" target < {TARGET_VERIFY_MS:g} ms: {ok_v}")
    del tree, store
    gc.collect()

    if db is not None:
        assert leveldb_dir is not None
        db.close()
        for run, mb in enumerate(args.cache_mb):
            # Fresh changes per run (same values again would hash to an unchanged tree).
            ldb_blocks = make_blocks(n_keys, args.blocks, args.changes, seed=n_keys + 2 + run)
            db = plyvel.DB(leveldb_dir.name, lru_cache_size=mb << 20)
            warm = ""
            if mb > 8:
                for _ in db.iterator(fill_cache=True):  # a long-running node's cache is warm
                    pass
                warm = ", warmed"
            ltree_store = LevelDBNodeStore(db)
            ltree = StateTree(ltree_store)
            apply_ms, flush_ms = run_blocks(ltree, ldb_blocks, ltree_store.flush)
            report_blocks(f"LevelDB, {mb} MiB block cache{warm}", n_keys, args.changes,
                          apply_ms, flush_ms)
            reads = statistics.median(ltree_store.reads_per_block)
            kib = statistics.median(ltree_store.bytes_per_block) / 1024
            print(f"  LevelDB reads/block: median {reads:,.0f};"
                  f" bytes written/block: median {kib:,.0f} KiB")
            db.close()
        leveldb_dir.cleanup()


def report_blocks(name: str, n_keys: int, changes: int, apply_ms: list[float],
                  flush_ms: list[float] | None = None) -> None:
    med = statistics.median(apply_ms)
    target = ""
    if n_keys >= 1_000_000 and changes == 1000:
        target = f"; target < {TARGET_UPDATE_MS:g} ms: " + (
            "met" if med < TARGET_UPDATE_MS else "NOT met")
    line = (f"root update [{name}], {changes:,} changed keys/block: median {med:.1f} ms,"
            f" max {max(apply_ms):.1f} ms over {len(apply_ms)} blocks{target}")
    if flush_ms is not None:
        line += f"; batch write median {statistics.median(flush_ms):.1f} ms"
    print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--blocks", type=int, default=20)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--leveldb", action="store_true", help="also run on LevelDB (plyvel)")
    ap.add_argument("--cache-mb", type=int, nargs="+", default=[8, 512],
                    help="LevelDB block cache sizes to run with (8 = plyvel's default)")
    args = ap.parse_args()
    for n in args.keys:
        bench_size(n, args)


if __name__ == "__main__":
    main()
