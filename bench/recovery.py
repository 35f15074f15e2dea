"""Recovery cost: rollback to a snapshot pin, snapshot creation, and the naive copy/restore.

For each state size (``--accounts``, default 100,000 and 1,000,000 funded accounts) a store is
built from a genesis in a temporary folder (``init_store``: the state tree in bulk), a
snapshot pin is created (``state.recovery.pins.create_pin``), then ``--blocks`` blocks of
transfers are produced on top of it: each block is applied (``apply_body``), its header signed
by the producer and committed (``commit``: one ``WriteBatch(transaction=True, sync=True)``
with its undo record), as the producer does. The store runs with ``sync=True`` throughout,
like a node.

The blocks' content is identical at every size: the same pre-signed transfers (same keys,
nonces, amounts, block times) among ``--active`` accounts that exist at every size (the other
accounts are funded filler addresses without keys). Only the state roots (and so the header
hashes) differ. So the keys a rollback rewrites differ only by the state tree's depth.

Measured per size:

(a) rollback to the pin: ``plan_rollback`` (without details, as the admin endpoint runs a
    real rollback: it reads only the target's undo record) + ``begin`` + ``run`` (chunks of
    blocks, each one synced batch writing every key once). The fork certificate is signed
    between plan and begin (the operators' job, not timed). Target: time at the largest size /
    time at the smallest <= 1.3.
(b) rollback speed in undone key writes per second (recorded changes undone / rollback
    time) against the raw LevelDB rate measured in the same run: the same (key, prior value)
    pairs, read from the undo records beforehand (untimed), written as puts/deletes into a
    fresh LevelDB in the same temporary folder, one ``WriteBatch(transaction=True, sync=True)``
    per undone block, in rollback order. Target: >= 40% of that raw rate. For diagnosis the
    same writes also go to a copy of the store at the head (same files, so the same
    compaction work ahead), and per-step times (``run``'s ``after_step``) and LevelDB's
    compaction totals (``leveldb.stats``) are printed: steps over 20 ms are write stalls.
(c) snapshot creation (``create_pin``, median of ``--pins`` pins at the same height; target
    < 10 ms at every size) and the disk a snapshot pins: the bytes of the undo records above
    the pin height (key + value, before LevelDB's compression), beside the data directory.
(d) reference, the naive alternative: stop, ``shutil.copytree`` the data directory at the pin
    (then fsync every copied file), and later restore it (``rmtree`` the live directory,
    ``copytree`` the copy back, fsync).
(e) replay throughput: after the rollback, every abandoned block is replayed as the producer
    does (``state.recovery.replay.assemble``: decode, signatures checked on every core, apply
    with the original block time; then signed and committed), and the head must come back to the
    pre-rollback state root. Baseline in the same run: normal production of the same blocks,
    i.e. the time the blocks took to build (apply, sign, commit) plus the time to check the
    same signatures on every core (what the mempool does before a block is built). Target:
    replay rate >= 0.7 of the production rate.
(f) rehearsal (``state.recovery.rehearsal.rehearse``, what ``admin rehearse`` runs): before the real
    rollback, the whole recovery to the pin (rollback, replay, compensation report with its
    counterfactual: a second rewind and replay) in a scratch copy-on-write layer over a
    snapshot of the store; the store must be byte for byte unchanged afterwards (state and
    tree digests) and the rehearsal must replay every transaction identically. Baseline in
    the same run: the real rollback (a) + replay (e).

After the rollback the bench checks that the head is the pinned block (height, hash, state
root), that the stored tree's root is the pin's state root, and that the state (``s``) and
state tree (``n``) keyspaces are byte for byte what they were at the pin (count + SHA-256 of
every key and value, taken right after the pin). ``--verify-root`` also recomputes the root
from the raw state (``state.recovery.verify.verify_store``, O(state)). After the naive restore the
reopened store's head must be the pin's head.

Usage: .venv/bin/python bench/recovery.py [--accounts 100000 1000000] [--blocks 1000]
       [--txs-per-block 100] [--active 4000] [--pins 5] [--verify-root] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from state.meta import next_era
from state.recovery.archive import Exclusions

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import plyvel  # noqa: E402

from chain.admin import ForkCertificate, sign_fork  # noqa: E402
from chain.block import Block, Header, sign_header  # noqa: E402
from chain.codec import decode  # noqa: E402
from chain.crypto import PrivateKey  # noqa: E402
from chain.tx import Transaction, Transfer, make_tx
from genesis.builder import DevnetKeys
from genesis.format import Genesis, GenesisAccount  # noqa: E402
from genesis.initial_store import init_store
from node.dev.local import make_genesis  # noqa: E402
from state.params import load_params  # noqa: E402
from state.recovery import pins, rehearsal, replay, rollback
from state.schema import STATE, TREE, UNDO, undo_key  # noqa: E402
from state.store import Head, Store
from state.transition import BlockOutcome, apply_body, commit, seal  # noqa: E402
from state.tree import StateTree

TARGET_REPLAY = 0.7
TARGET_SCALING = 1.3  # rollback time, largest state / smallest state
TARGET_RAW_FRACTION = 0.40  # undone key writes/s vs raw LevelDB batch writes/s
TARGET_PIN_MS = 10.0
BALANCE = 10**12
BLOCK_MS = 1000


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def fsync_tree(path: Path) -> None:
    for f in path.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def keyspace_digest(db: plyvel.DB, prefix: bytes) -> tuple[int, str]:
    """Count and SHA-256 of every (key, value) under ``prefix``, in key order."""
    h = hashlib.sha256()
    n = 0
    for k, v in db.iterator(prefix=prefix):
        h.update(len(k).to_bytes(4, "big"))
        h.update(k)
        h.update(len(v).to_bytes(4, "big"))
        h.update(v)
        n += 1
    return n, h.hexdigest()


def seed_key(tag: bytes, i: int) -> PrivateKey:
    return PrivateKey(hashlib.sha256(b"bench/recovery/" + tag + i.to_bytes(8, "big")).digest())


def make_keys(active: int) -> tuple[Genesis, DevnetKeys]:
    """Deterministic keys (producer, faucet, one operator, active accounts) and a template
    genesis with the active accounts; each size adds filler accounts to it."""
    g, _ = make_genesis(accounts=0, balance=BALANCE, chain_id="bench-recovery")
    keys = DevnetKeys(producer=seed_key(b"producer", 0), faucet=seed_key(b"faucet", 0),
                      operators=(seed_key(b"operator", 0),), oracles=(seed_key(b"oracle", 0),),
                      accounts=tuple(seed_key(b"acct", i) for i in range(active)))
    g = replace(
        g,
        producer=replace(g.producer, pub_key=keys.producer.public_key),
        faucet=replace(g.faucet, pub_key=keys.faucet.public_key),
        operators=tuple(replace(k, pub_key=p.public_key)
                        for k, p in zip(g.operators, keys.operators, strict=True)),
        oracles=tuple(replace(k, pub_key=p.public_key)
                      for k, p in zip(g.oracles, keys.oracles, strict=True)),
        accounts=tuple(GenesisAccount(k.public_key, BALANCE) for k in keys.accounts),
    )
    return g, keys


def genesis_of_size(template: Genesis, n_accounts: int) -> Genesis:
    """The template plus funded filler addresses (no keys) up to ``n_accounts`` accounts;
    the filler of a smaller size is a prefix of the filler of a larger one."""
    filler = n_accounts - len(template.accounts)
    if filler < 0:
        raise SystemExit(f"--accounts {n_accounts} is below --active {len(template.accounts)}")
    extra = tuple(GenesisAccount(hashlib.sha256(b"bench/recovery/filler" + i.to_bytes(8, "big"))
                                 .digest(), BALANCE) for i in range(filler))
    return replace(template, accounts=template.accounts + extra)


def presign(keys: DevnetKeys, chain_id: str, blocks: int, per_block: int, seed: int
            ) -> list[list[Transaction]]:
    """The transfers of every block: random sender and recipient among the active accounts."""
    rng = random.Random(seed)
    accts = keys.accounts
    nonces = [0] * len(accts)
    out = []
    for _ in range(blocks):
        txs = []
        for _ in range(per_block):
            s = rng.randrange(len(accts))
            r = rng.randrange(len(accts) - 1)
            r += r >= s
            txs.append(make_tx(accts[s], chain_id, nonces[s],
                               Transfer(accts[r].public_key, rng.randint(1, 10**6))))
            nonces[s] += 1
        out.append(txs)
    return out


def produce(store: Store, keys: DevnetKeys, txs: list[Transaction]) -> None:
    """Apply, sign and commit one block on the head, as the producer does."""
    head = store.head()
    assert head is not None
    params = load_params(store.overlay())
    height, t = head.height + 1, head.time + BLOCK_MS
    out = apply_body(store, params, height, t, txs)
    if any(r.code for r in out.results):
        raise RuntimeError(f"block {height}: a transfer failed: {out.results}")
    header = Header(params.chain_id, head.era, height, head.hash, t, out.tx_root,
                    out.results_root, out.state_root, keys.producer.public_key)
    block = Block(header, sign_header(keys.producer, header), tuple(tx.raw for tx in txs))
    raw = block.encode()
    commit(store, block, raw, txs, out)


@dataclass
class WriteRun:
    """Timed synced batches: per-batch seconds, keys, value bytes."""

    lat: list[float] = field(default_factory=list)
    keys: int = 0
    vbytes: int = 0
    compaction: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def secs(self) -> float:
        return sum(self.lat)


def compaction(db: plyvel.DB) -> tuple[float, float, float]:
    """LevelDB's cumulative compaction (seconds, MB read, MB written) since the DB opened."""
    tot = [0.0, 0.0, 0.0]
    for line in db.get_property(b"leveldb.stats").decode().splitlines()[3:]:
        parts = line.split()
        for i in range(3):
            tot[i] += float(parts[3 + i])
    return tot[0], tot[1], tot[2]


def delta(a: tuple[float, float, float], b: tuple[float, float, float]
          ) -> tuple[float, float, float]:
    return b[0] - a[0], b[1] - a[1], b[2] - a[2]


def fmt_compaction(c: tuple[float, float, float]) -> str:
    return f"compaction {c[0]:.1f} s, read {c[1]:,.0f} MB, wrote {c[2]:,.0f} MB"


def undo_pairs(store: Store, from_height: int, to_height: int
               ) -> Iterator[list[tuple[bytes, bytes | None]]]:
    """The (key, prior) pairs of each undo record, from ``from_height`` down."""
    for h in range(from_height, to_height, -1):
        raw = store.db.get(undo_key(h))
        assert raw is not None
        yield [(k, v) for k, v in decode(raw, 1 << 30)["prior"]]


def raw_writes(store: Store, from_height: int, to_height: int, path: Path) -> WriteRun:
    """Write the undo records' (key, prior) pairs into the LevelDB at ``path`` (created if
    missing), one ``WriteBatch(transaction=True, sync=True)`` per block in rollback order.
    Only the writes are timed (reading and decoding the undo records is not)."""
    db = plyvel.DB(str(path), create_if_missing=True)
    out = WriteRun()
    c0 = compaction(db)
    try:
        for prior in undo_pairs(store, from_height, to_height):
            out.keys += len(prior)
            out.vbytes += sum(len(v) for _, v in prior if v is not None)
            t0 = time.perf_counter()
            with db.write_batch(transaction=True, sync=True) as wb:
                for k, v in prior:
                    if v is None:
                        wb.delete(k)
                    else:
                        wb.put(k, v)
            out.lat.append(time.perf_counter() - t0)
        out.compaction = delta(c0, compaction(db))
    finally:
        db.close()
        shutil.rmtree(path)
    return out


def undo_breakdown(store: Store, from_height: int, to_height: int) -> dict[str, int]:
    """Undo records above the pin: bytes and keys by keyspace, and distinct keys."""
    out = {"s_keys": 0, "s_bytes": 0, "n_keys": 0, "n_bytes": 0, "other_keys": 0,
           "distinct": 0}
    seen: set[bytes] = set()
    for prior in undo_pairs(store, from_height, to_height):
        for k, v in prior:
            ks = {STATE: "s", TREE: "n"}.get(k[:1], "other")
            out[f"{ks}_keys"] += 1
            if ks != "other":
                out[f"{ks}_bytes"] += len(k) + len(v or b"")
            seen.add(k)
    out["distinct"] = len(seen)
    return out


def latency(lat: list[float], stall_s: float = 0.02) -> str:
    """Median / p99 / max of per-batch times (ms), and the time in batches over 20 ms."""
    x = sorted(lat)
    stalls = [v for v in x if v > stall_s]
    return (f"batch ms median {statistics.median(x) * 1e3:.1f}, p99"
            f" {x[min(len(x) - 1, int(len(x) * 0.99))] * 1e3:.0f}, max {x[-1] * 1e3:.0f};"
            f" {len(stalls)} over {stall_s * 1e3:.0f} ms = {sum(stalls):.2f} s")


@dataclass
class Figures:
    accounts: int
    build_s: float = 0.0
    blocks_s: float = 0.0
    pin_ms: list[float] | None = None
    dir_at_pin: int = 0
    dir_at_head: int = 0
    undo_bytes: int = 0
    undo_records: int = 0
    keys_undone: int = 0
    plan_s: float = 0.0
    begin_s: float = 0.0
    run_s: float = 0.0
    step_lat: list[float] = field(default_factory=list)
    fresh: WriteRun = field(default_factory=WriteRun)
    copy: WriteRun = field(default_factory=WriteRun)
    undo: dict[str, int] = field(default_factory=dict)
    compaction: tuple[float, float, float] = (0.0, 0.0, 0.0)
    copy_s: float = 0.0
    copy_fsync_s: float = 0.0
    restore_s: float = 0.0
    restore_fsync_s: float = 0.0
    checks: list[str] | None = None
    profile: str = ""
    physical: int = 0
    replay_s: float = 0.0
    replay_txs: int = 0
    verify_s: float = 0.0
    produced_txs: int = 0
    rehearsal_s: float = 0.0
    rehearsal_report_s: float = 0.0

    @property
    def rollback_s(self) -> float:
        return self.plan_s + self.begin_s + self.run_s


def bench_size(n_accounts: int, template: Genesis, keys: DevnetKeys,
               blocks: list[list[Transaction]], args: argparse.Namespace) -> Figures:
    print(f"\n== {n_accounts:,} accounts ==", flush=True)
    fig = Figures(n_accounts)
    g = genesis_of_size(template, n_accounts)
    with tempfile.TemporaryDirectory(prefix="recovery-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        live = root / "data" / "store"
        store = Store(live, sync=True)
        t0 = time.perf_counter()
        init_store(store, g)
        fig.build_s = time.perf_counter() - t0
        del g
        gc.collect()
        print(f"genesis state built (init_store, sync=True): {fig.build_s:.1f} s", flush=True)

        # (d) the naive snapshot: stop, copy the data directory.
        store.close()
        fig.dir_at_pin = du(live)
        backup = root / "backup" / "store"
        t0 = time.perf_counter()
        shutil.copytree(live, backup)
        fig.copy_s = time.perf_counter() - t0
        fsync_tree(backup)
        fig.copy_fsync_s = time.perf_counter() - t0
        store = Store(live, sync=True)

        # (c) the pin, and what identifies the state at it.
        pin_ms = []
        pin = None
        for i in range(args.pins):
            t0 = time.perf_counter()
            p = pins.create_pin(store, f"bench-{i}", int(time.time() * 1000),
                                (keys.operators[0].public_key,))
            pin_ms.append((time.perf_counter() - t0) * 1e3)
            pin = pin or p
        assert pin is not None
        fig.pin_ms = pin_ms
        t0 = time.perf_counter()
        at_pin = {ks: keyspace_digest(store.db, ks) for ks in (STATE, TREE)}
        print(f"pin {pin.label} at height {pin.height}: {statistics.median(pin_ms):.2f} ms"
              f" (median of {len(pin_ms)}); digest of state {at_pin[STATE][0]:,} keys and tree"
              f" {at_pin[TREE][0]:,} groups: {time.perf_counter() - t0:.1f} s", flush=True)

        # The blocks since the snapshot.
        t0 = time.perf_counter()
        for i, txs in enumerate(blocks):
            produce(store, keys, txs)
            if (i + 1) % max(1, len(blocks) // 4) == 0:
                print(f"  {i + 1} blocks, {time.perf_counter() - t0:.1f} s", flush=True)
        fig.blocks_s = time.perf_counter() - t0
        head = store.head()
        assert head is not None
        print(f"{len(blocks)} blocks of {len(blocks[0]) if blocks else 0} transfers"
              f" produced and committed (sync=True): {fig.blocks_s:.1f} s", flush=True)

        # (c) what the pin holds on disk: the undo records above it.
        for k, v in store.db.iterator(prefix=UNDO):
            if int.from_bytes(k[1:], "big") > pin.height:
                fig.undo_bytes += len(k) + len(v)
                fig.undo_records += 1
        fig.dir_at_head = du(live)

        # (f) the rehearsal of the whole recovery, in a scratch copy, before anything is done.
        fig.rehearsal_s, fig.rehearsal_report_s = rehearse_once(store, keys, pin.height)
        print(f"rehearsal (rollback + replay + report, scratch copy): {fig.rehearsal_s:.2f} s"
              f" (of which the compensation report with its counterfactual "
              f"{fig.rehearsal_report_s:.2f} s); the store is unchanged", flush=True)

        # (b) baseline: the same writes, raw.
        fig.undo = undo_breakdown(store, head.height, pin.height)
        u = fig.undo
        print(f"undo records above the pin: {fig.undo_records} records, {mib(fig.undo_bytes)};"
              f" state keys {u['s_keys']:,} ({mib(u['s_bytes'])}), tree groups"
              f" {u['n_keys']:,} ({mib(u['n_bytes'])}), other {u['other_keys']:,};"
              f" distinct keys {u['distinct']:,}; data dir {mib(fig.dir_at_head)}", flush=True)

        # (b) baselines: the same writes, raw: into a fresh LevelDB, and into a copy of the
        # store at the head (same files, so the same compaction work ahead of it).
        store.close()
        shutil.copytree(live, root / "copy")
        store = Store(live, sync=True)
        fig.fresh = raw_writes(store, head.height, pin.height, root / "fresh")
        print(f"raw baseline, fresh LevelDB: {fig.fresh.keys:,} keys"
              f" ({mib(fig.fresh.vbytes)} of values) in {len(fig.fresh.lat)} synced batches:"
              f" {fig.fresh.secs:.2f} s; {latency(fig.fresh.lat)};"
              f" {fmt_compaction(fig.fresh.compaction)}", flush=True)
        fig.copy = raw_writes(store, head.height, pin.height, root / "copy")
        print(f"raw baseline, copy of the store: {fig.copy.secs:.2f} s;"
              f" {latency(fig.copy.lat)}; {fmt_compaction(fig.copy.compaction)}", flush=True)
        gc.collect()

        # (a) the rollback.
        prof = cProfile.Profile() if args.profile else None
        if prof is not None:
            prof.enable()
        c0 = compaction(store.db)
        t0 = time.perf_counter()
        plan = rollback.plan_rollback(store, pin.height, details=False)
        fig.plan_s = time.perf_counter() - t0
        if prof is not None:
            prof.disable()
        chain_id = load_params(store.overlay()).chain_id
        cert = sign_fork(ForkCertificate(chain_id, plan.new_era,
                                         plan.from_height, plan.to_height, plan.target.hash,
                                         plan.target.state_root, "bench"),
                         list(keys.operators), 1).encode()
        if prof is not None:
            prof.enable()
        steps = fig.step_lat
        last = [0.0]

        def after_step(_: object) -> None:
            now = time.perf_counter()
            steps.append(now - last[0])
            last[0] = now

        t0 = time.perf_counter()
        record = rollback.begin(store, plan, cert, "bench", [keys.operators[0].public_key],
                                int(time.time() * 1000))
        t1 = last[0] = time.perf_counter()
        new_head = rollback.run(store, record, after_step)
        t2 = time.perf_counter()
        fig.compaction = delta(c0, compaction(store.db))
        if prof is not None:
            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(14)
            fig.profile = buf.getvalue()
        fig.begin_s, fig.run_s = t1 - t0, t2 - t1
        u = fig.undo
        fig.keys_undone = u["s_keys"] + u["n_keys"] + u["other_keys"]
        fig.physical = u["distinct"]
        print(f"rollback {plan.from_height} -> {plan.to_height}:"
              f" {plan.from_height - plan.to_height} blocks,"
              f" {fig.keys_undone:,}"
              f" keys: plan {fig.plan_s:.2f} s + begin {fig.begin_s * 1e3:.1f} ms + run"
              f" {fig.run_s:.2f} s = {fig.rollback_s:.2f} s; steps: {latency(steps)};"
              f" {fmt_compaction(fig.compaction)} (this DB, during the rollback)", flush=True)

        # Checks.
        checks = []
        assert (new_head.height, new_head.hash, new_head.state_root) == \
            (pin.height, pin.block_hash, pin.state_root), "head is not the pinned block"
        checks.append("head = pin (height, hash, state root)")
        assert store.head() == new_head
        assert StateTree(store.overlay(TREE)).root == pin.state_root
        checks.append("stored tree root = pin state root")
        for ks, name in ((STATE, "state"), (TREE, "tree")):
            got = keyspace_digest(store.db, ks)
            assert got == at_pin[ks], f"{name} keyspace differs from the pin"
        checks.append(f"state ({at_pin[STATE][0]:,} keys) and tree ({at_pin[TREE][0]:,} groups)"
                      " byte-identical to the pin (count + SHA-256)")
        assert rollback.operation(store) is None
        assert next_era(store, new_head) == plan.new_era
        checks.append(f"operation finished, next era {plan.new_era}")
        if args.verify_root:
            from state.recovery.verify import verify_store

            t0 = time.perf_counter()
            rep = verify_store(store)
            assert rep.ok and rep.recomputed_root == pin.state_root, rep.problems
            checks.append(f"root recomputed from raw state = pin ({time.perf_counter() - t0:.1f}"
                          " s)")
        # (e) replay the abandoned blocks on the restored state.
        t0 = time.perf_counter()
        fig.replay_txs = replay_all(store, keys, pin.height)
        fig.replay_s = time.perf_counter() - t0
        after = store.head()
        assert after is not None and after.state_root == head.state_root, \
            "replay did not come back to the pre-rollback state"
        checks.append("replay: same state root as before the rollback")
        fig.produced_txs = sum(len(b) for b in blocks)
        fig.verify_s = verify_all([t.raw for b in blocks for t in b])
        print(f"replay: {fig.replay_txs:,} txs in {fig.replay_s:.2f} s"
              f" ({fig.replay_txs / fig.replay_s:,.0f} tx/s); production of the same blocks"
              f" {fig.blocks_s:.2f} s + signature checks on every core {fig.verify_s:.2f} s",
              flush=True)
        print("checks: " + "; ".join(checks), flush=True)
        fig.checks = checks
        store.close()

        # (d) the naive restore: replace the live directory with the copy.
        t0 = time.perf_counter()
        shutil.rmtree(live)
        shutil.copytree(backup, live)
        fig.restore_s = time.perf_counter() - t0
        fsync_tree(live)
        fig.restore_fsync_s = time.perf_counter() - t0
        with Store(live, create=False) as restored:
            h = restored.head()
            assert h is not None and (h.height, h.hash) == (pin.height, pin.block_hash)
        print(f"naive: copy {fig.copy_s:.2f} s ({fig.copy_fsync_s:.2f} s with fsync),"
              f" restore {fig.restore_s:.2f} s ({fig.restore_fsync_s:.2f} s with fsync);"
              " restored head = pin", flush=True)
    return fig


def replay_all(store: Store, keys: DevnetKeys, fork_height: int) -> int:
    """Replay every archived block of era 0 as the producer does (``run_replay``: fates and
    the record in each block's batch); returns the txs included."""
    params = load_params(store.overlay())
    record = replay.begin_record(store, 0, Exclusions(), [], 0)

    def seal_block(txs: list[Transaction], t: int, meta: list[tuple[bytes, bytes | None]],
                   outcome: BlockOutcome) -> Head:
        return seal(store, params, keys.producer, txs, t, outcome, meta)

    fates = replay.run_replay(store, params, record, seal_block, fork_height=fork_height)
    assert all(f.fate == "identical" for f in fates)
    return len(fates)


def rehearse_once(store: Store, keys: DevnetKeys, to_height: int) -> tuple[float, float]:
    """(f): seconds for the whole rehearsal, and for its compensation report alone."""
    from state.recovery import compensation

    before = {ks: keyspace_digest(store.db, ks) for ks in (STATE, TREE)}
    plan = rollback.plan_rollback(store, to_height, details=False)
    chain_id = load_params(store.overlay()).chain_id
    cert = sign_fork(ForkCertificate(chain_id, plan.new_era, plan.from_height, plan.to_height,
                                     plan.target.hash, plan.target.state_root, "rehearsal"),
                     list(keys.operators), 1).encode()
    timed: list[float] = []
    real_build = compensation.build_report

    def build_timed(st: Store, era: int) -> dict[str, object]:
        t0 = time.perf_counter()
        try:
            return real_build(st, era)
        finally:
            timed.append(time.perf_counter() - t0)

    rehearsal.build_report = build_timed  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        res = rehearsal.rehearse(store, rehearsal.RehearsalPlan(to_height, cert, "rehearsal",
                                                                None))
        secs = time.perf_counter() - t0
    finally:
        rehearsal.build_report = real_build  # type: ignore[assignment]
    assert res.summary["identical"] == res.summary["total"] > 0, res.summary
    after = {ks: keyspace_digest(store.db, ks) for ks in (STATE, TREE)}
    assert after == before, "the rehearsal changed the store"
    return secs, timed[0]


def verify_all(raws: list[bytes]) -> float:
    """Seconds to decode and signature-check ``raws`` on every core (the mempool's work)."""
    from concurrent.futures import ThreadPoolExecutor

    from chain.tx import decode_tx

    def check(part: list[bytes]) -> None:
        for r in part:
            decode_tx(r).verify_signature()

    workers = os.cpu_count() or 1
    chunk = -(-len(raws) // workers)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(check, [raws[i:i + chunk] for i in range(0, len(raws), chunk)]))
    return time.perf_counter() - t0


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def rate(f: Figures, run: WriteRun) -> float:
    """Rollback key writes/s as a fraction of ``run``'s raw key writes/s."""
    return f.keys_undone / f.rollback_s / (run.keys / run.secs)


def report(figs: list[Figures], args: argparse.Namespace) -> None:
    print(f"\n== Summary ({args.blocks:,} blocks x {args.txs_per_block} transfers since the pin,"
          f" {args.active:,} active accounts) ==")
    rows: list[tuple[str, Callable[[Figures], str]]] = [
        ("genesis build (init_store)", lambda f: f"{f.build_s:.1f} s"),
        ("blocks since pin: build", lambda f: f"{f.blocks_s:.1f} s"),
        ("keys undone", lambda f: f"{f.keys_undone:,}"),
        ("  distinct keys among them", lambda f: f"{f.undo['distinct']:,}"),
        ("(a) rollback total", lambda f: f"{f.rollback_s:.2f} s"),
        ("  plan (target only)", lambda f: f"{f.plan_s:.2f} s"),
        ("  begin", lambda f: f"{f.begin_s * 1e3:.1f} ms"),
        ("  run", lambda f: f"{f.run_s:.2f} s"),
        ("  steps over 20 ms (time)", lambda f: f"{sum(x > 0.02 for x in f.step_lat)}"
                                               f" ({sum(x for x in f.step_lat if x > 0.02):.1f}"
                                               " s)"),
        ("  compaction during (s / MB)", lambda f: f"{f.compaction[0]:.1f} /"
                                                  f" {sum(f.compaction[1:]):,.0f}"),
        ("(b) rollback keys/s", lambda f: f"{f.keys_undone / f.rollback_s:,.0f}"),
        ("  physical writes (distinct keys)", lambda f: f"{f.physical:,}"),
        ("  raw, fresh DB keys/s", lambda f: f"{f.fresh.keys / f.fresh.secs:,.0f}"),
        ("  raw, fresh DB MiB/s", lambda f: f"{f.fresh.vbytes / 2**20 / f.fresh.secs:,.1f}"),
        ("  rollback / raw fresh", lambda f: f"{rate(f, f.fresh):.2f}"),
        ("  raw, store copy keys/s", lambda f: f"{f.copy.keys / f.copy.secs:,.0f}"),
        ("  rollback / raw copy", lambda f: f"{rate(f, f.copy):.2f}"),
        ("  raw copy compaction (s / MB)", lambda f: f"{f.copy.compaction[0]:.1f} /"
                                                     f" {sum(f.copy.compaction[1:]):,.0f}"),
        ("(c) pin create median/max", lambda f: f"{statistics.median(f.pin_ms or [0]):.2f} /"
                                                f" {max(f.pin_ms or [0]):.2f} ms"),
        ("  undo bytes pinned", lambda f: mib(f.undo_bytes)),
        ("  of which tree groups", lambda f: mib(f.undo["n_bytes"])),
        ("  data dir at pin", lambda f: mib(f.dir_at_pin)),
        ("  data dir at head", lambda f: mib(f.dir_at_head)),
        ("(d) naive copy (+fsync)", lambda f: f"{f.copy_s:.2f} s ({f.copy_fsync_s:.2f} s)"),
        ("(e) replay tx/s", lambda f: f"{f.replay_txs / f.replay_s:,.0f}"),
        ("  production tx/s", lambda f: f"{f.produced_txs / (f.blocks_s + f.verify_s):,.0f}"),
        ("  replay / production", lambda f: f"{replay_ratio(f):.2f}"),
        ("  naive restore (+fsync)", lambda f: f"{f.restore_s:.2f} s"
                                              f" ({f.restore_fsync_s:.2f} s)"),
        ("(f) rehearsal (scratch copy)", lambda f: f"{f.rehearsal_s:.2f} s"),
        ("  of which compensation report", lambda f: f"{f.rehearsal_report_s:.2f} s"),
        ("  real rollback + replay", lambda f: f"{f.rollback_s + f.replay_s:.2f} s"),
        ("  rehearsal / real recovery", lambda f: f"{rehearsal_ratio(f):.2f}"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"{'':{w}} | " + " | ".join(f"{f.accounts:>15,}" for f in figs))
    for name, fn in rows:
        print(f"{name:{w}} | " + " | ".join(f"{fn(f):>15}" for f in figs))

    ok = True
    small, large = min(figs, key=lambda f: f.accounts), max(figs, key=lambda f: f.accounts)
    if small is not large:
        ratio = large.rollback_s / small.rollback_s
        met = ratio <= TARGET_SCALING
        ok &= met
        print(f"target (a) rollback time {large.accounts:,} / {small.accounts:,} accounts:"
              f" {ratio:.2f} (<= {TARGET_SCALING}): {'met' if met else 'NOT met'}"
              f" [keys undone ratio {large.keys_undone / small.keys_undone:.2f}]")
    else:
        print("target (a): needs two sizes")
    for f in figs:
        frac = rate(f, f.fresh)
        met = frac >= TARGET_RAW_FRACTION
        ok &= met
        print(f"target (b) at {f.accounts:,}: rollback {frac:.0%} of the raw LevelDB rate"
              f" (fresh DB) (>= {TARGET_RAW_FRACTION:.0%}): {'met' if met else 'NOT met'}"
              f" [{rate(f, f.copy):.0%} of the same writes on a copy of the store]")
    pin_med = [statistics.median(f.pin_ms or [0]) for f in figs]
    met = max(pin_med) < TARGET_PIN_MS
    ok &= met
    print(f"target (c) snapshot creation < {TARGET_PIN_MS:g} ms at every size: "
          + ", ".join(f"{m:.2f} ms" for m in pin_med) + f": {'met' if met else 'NOT met'}")
    for f in figs:
        r = replay_ratio(f)
        met = r >= TARGET_REPLAY
        ok &= met
        print(f"target (e) at {f.accounts:,}: replay {r:.2f} of production (>= "
              f"{TARGET_REPLAY}): {'met' if met else 'NOT met'}")
    for f in figs:
        print(f"(f) at {f.accounts:,}: rehearsal {f.rehearsal_s:.2f} s, "
              f"{rehearsal_ratio(f):.2f}x the real rollback + replay (no target; the "
              "rehearsal also computes the compensation report and its counterfactual)")
    print("RESULT:", "meets targets" if ok else "BELOW TARGET")


def rehearsal_ratio(f: Figures) -> float:
    return f.rehearsal_s / (f.rollback_s + f.replay_s)


def replay_ratio(f: Figures) -> float:
    return (f.replay_txs / f.replay_s) / (f.produced_txs / (f.blocks_s + f.verify_s))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--blocks", type=int, default=1000)
    ap.add_argument("--txs-per-block", type=int, default=100)
    ap.add_argument("--active", type=int, default=4000,
                    help="accounts that send and receive (the same at every size)")
    ap.add_argument("--pins", type=int, default=5, help="pins created (timed) at the pin height")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default=None, help="parent of the temporary data directories")
    ap.add_argument("--verify-root", action="store_true",
                    help="also recompute the state root from the raw state after the rollback")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the rollback (plan + begin + run) at each size")
    args = ap.parse_args()
    t_start = time.perf_counter()
    template, keys = make_keys(args.active)
    t0 = time.perf_counter()
    blocks = presign(keys, template.chain_id, args.blocks, args.txs_per_block, args.seed)
    print(f"pre-signed {args.blocks * args.txs_per_block:,} transfers among {args.active:,}"
          f" accounts: {time.perf_counter() - t0:.1f} s", flush=True)
    figs = [bench_size(n, template, keys, blocks, args) for n in sorted(args.accounts)]
    if args.profile:
        for f in figs:
            print(f"\n-- profile of the rollback at {f.accounts:,} accounts (tottime) --")
            print(f.profile)
    report(figs, args)
    print(f"total run time: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
