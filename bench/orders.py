"""Orders placed and matched per second through the whole node path, against ed25519 verify.

Like ``bench/throughput.py`` (same pipeline, same baseline), but the load is trading on
BTC-USD-PERP: pre-signed orders from many funded accounts go through the real ``Node`` (no
HTTP) on a real LevelDB with ``sync=True``: decode, signature check (thread pool, every
core), mempool admission, then the producer applies (matching in the state machine), signs
and commits full blocks (``--block-txs``).

Two phases, each through the same pipeline:

1. **Book** (timed separately, not the headline): ``--book`` resting limit orders (at least
   10,000), half bids and half asks, on ``--levels`` price levels per side starting one tick
   from the oracle price (60,000 USD) and going outwards.
2. **Mixed stream** (the headline figure): ``--orders`` transactions, of which about 60% are
   limit orders near the touch (half ``gtc``, half ``post_only``, never crossing: they rest),
   25% market orders (``ioc``, worst price 5% through the oracle) that match the touch, and
   15% cancels of book orders known to rest: ones from phase 1 deep in the book (beyond
   ``--near`` levels) which the market orders never reach.

Every transaction's result is read back from the committed blocks: placed (order tx with
code 0), fills (``fill`` events), rested, cancelled (cancel tx with code 0) and failures by
code. Baseline in the same run: single-core ed25519 verifications per second (libsodium via
PyNaCl) over the mixed stream's transactions, measured as in ``bench/throughput.py``.

Identity: the keys are derived from ``--seed``, so one command signs the same transactions
in every run and the blocks hold the same transactions (the mempool reaps in arrival order).
The printed digest covers the open orders (``ord/``, ``book/``, ``aord/``) and every
transaction's stored result; it leaves out the blocks' own end-of-block results, whose
funding event counts the funding intervals since the genesis time by the wall clock. Those,
and every state root, are what ``--import-blocks`` checks: it re-imports blocks saved by
``--save-blocks`` into a fresh store with ``state/transition.import_block``, which refuses
any block whose recomputed state, results or tx root differs from its header.

Usage: .venv/bin/python bench/orders.py [--orders 60000] [--book 12000] [--accounts 2000]
       [--profile]   (cProfile of the producer's apply over the mixed stream)
       [--save-blocks FILE]   (pickle genesis + blocks to re-import with import_block)
       .venv/bin/python bench/orders.py --import-blocks FILE   (re-import, check every root)
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import pstats
import random
import resource
import sys
import tempfile
from collections import Counter
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throughput import run_pipeline, verify_rate  # noqa: E402
from chain.block import TxResult  # noqa: E402
from chain.crypto import PrivateKey  # noqa: E402
from chain.tx import CancelOrder, PlaceOrder, decode_tx, make_tx
from node.dev.local import make_genesis, make_home  # noqa: E402
from node.node import Node, open_node

TARGET_OPS = 5_000
TARGET_RATIO = 0.2
MARKET = "BTC-USD-PERP"
ORACLE = 60_000 * 10**6  # the devnet genesis oracle price (micro-USDC per BTC)
TICK = 100_000  # $0.10
STEP = 10_000  # 0.0001 BTC


def seeded_genesis(accounts: int, seed: int):  # type: ignore[no-untyped-def]
    """``make_genesis`` with keys derived from ``seed`` instead of fresh random ones, so
    the same command signs the same transactions in every run."""
    counter = iter(range(1 << 62))
    orig = PrivateKey.generate

    def derived(cls: type[PrivateKey]) -> PrivateKey:
        return cls(hashlib.sha256(b"bench/orders %d %d" % (seed, next(counter))).digest())

    PrivateKey.generate = classmethod(derived)  # type: ignore[assignment,method-assign]
    try:
        return make_genesis(accounts=accounts, balance=10**12, chain_id="bench",
                            markets=True)
    finally:
        PrivateKey.generate = orig  # type: ignore[method-assign]


def import_blocks(path: str) -> None:
    """Re-import saved blocks into a fresh store; ``import_block`` checks every root."""
    import pickle
    import time

    from genesis.initial_store import init_store
    from state.store import Store
    from state.transition import import_block

    with open(path, "rb") as f:
        saved = pickle.load(f)  # noqa: S301 - a file this bench wrote
    with tempfile.TemporaryDirectory(prefix="appchain-bench-import-") as d:
        store = Store(Path(d) / "db")
        try:
            init_store(store, saved["genesis"])
            t0 = time.perf_counter()
            for raw in saved["blocks"]:
                import_block(store, raw, verify_txs=False)  # raises on any root mismatch
            secs = time.perf_counter() - t0
            head = store.head()
            assert head is not None
            dig = hashlib.sha256()
            for k, v in store.iter_state():
                dig.update(k + b"\0" + v)
        finally:
            store.close()
    print(f"imported {len(saved['blocks'])} blocks in {secs:.2f} s (apply, tree, commit; "
          f"no signatures): every root matches")
    print(f"head {head.height}: state root {head.state_root.hex()}, full state digest "
          f"{dig.hexdigest()[:16]}")


class Signer:
    """Pre-signs transactions, each account's nonces in order."""

    def __init__(self, keys: list, chain_id: str) -> None:
        self.keys = keys
        self.chain_id = chain_id
        self.nonces = [0] * len(keys)

    def sign(self, i: int, payload: object) -> bytes:
        raw = make_tx(self.keys[i], self.chain_id, self.nonces[i], payload).raw  # type: ignore
        self.nonces[i] += 1
        return raw


def limit(side: str, ticks_out: int, size_steps: int, tif: str = "gtc") -> PlaceOrder:
    """A limit order ``ticks_out`` ticks away from the oracle on its own side (never crosses
    while the other side stays beyond the oracle price)."""
    price = ORACLE - ticks_out * TICK if side == "buy" else ORACLE + ticks_out * TICK
    return PlaceOrder(MARKET, side, "limit", tif, price, size_steps * STEP, False, 0)


def book_orders(signer: Signer, rng: random.Random, n: int, levels: int
                ) -> tuple[list[bytes], list[int]]:
    """``n`` resting limit orders over ``levels`` levels per side; returns (raws, level of
    each) so the deep ones can be cancelled later."""
    raws, lvls = [], []
    n_acc = len(signer.keys)
    for j in range(n):
        side = "buy" if j % 2 == 0 else "sell"
        lvl = 1 + (j // 2) % levels
        raws.append(signer.sign(j % n_acc, limit(side, lvl, rng.randint(1, 20))))
        lvls.append(lvl)
    return raws, lvls


def mixed_orders(signer: Signer, rng: random.Random, n: int, cancellable: list[tuple[int, int]],
                 near: int) -> tuple[list[bytes], Counter[str]]:
    """The mixed stream: ~60% limit near the touch, ~25% market, ~15% cancels."""
    raws: list[bytes] = []
    kinds: Counter[str] = Counter()
    n_acc = len(signer.keys)
    rng.shuffle(cancellable)
    for j in range(n):
        r = rng.random()
        if r < 0.15 and cancellable:
            acc, oid = cancellable.pop()
            raws.append(signer.sign(acc, CancelOrder(MARKET, oid)))
            kinds["cancel"] += 1
            continue
        acc = j % n_acc
        side = rng.choice(("buy", "sell"))
        if r < 0.40:
            worst = ORACLE * 105 // 100 if side == "buy" else ORACLE * 95 // 100
            worst -= worst % TICK
            raws.append(signer.sign(acc, PlaceOrder(MARKET, side, "market", "ioc", worst,
                                                    rng.randint(1, 20) * STEP, False, 0)))
            kinds["market"] += 1
        else:
            tif = "gtc" if rng.random() < 0.5 else "post_only"
            raws.append(signer.sign(acc, limit(side, rng.randint(1, near), rng.randint(1, 20),
                                               tif)))
            kinds["limit"] += 1
    return raws, kinds


def tally(node: Node, first: int, last: int) -> tuple[Counter[str], list[tuple[int, bytes, int]]]:
    """Counts over blocks ``first..last`` and every (order id, owner, level) that rested."""
    c: Counter[str] = Counter()
    rested: list[tuple[int, bytes, int]] = []
    for h in range(first, last + 1):
        blk = node.store.block(h)
        assert blk is not None  # h is at or below the committed head
        results = node.store.results(h) or []
        for tx_raw, res_raw in zip(blk.txs, results, strict=False):
            tx = decode_tx(tx_raw)
            res = TxResult.decode(res_raw)
            p = tx.payload
            if isinstance(p, PlaceOrder):
                c[f"{p.kind}_tx"] += 1
                if res.code:
                    c[f"{p.kind}_failed_code_{res.code}"] += 1
                    continue
                c["placed"] += 1
                for ev in res.events:
                    c[f"event_{ev.type}"] += 1
                    if ev.type == "order_rested":
                        d = ev.as_dict()
                        price = int(d["price"])
                        lvl = abs(price - ORACLE) // TICK
                        rested.append((int(d["order"]), tx.sender, lvl))
            elif isinstance(p, CancelOrder):
                c["cancel_tx"] += 1
                if res.code:
                    c[f"cancel_failed_code_{res.code}"] += 1
                else:
                    c["cancelled"] += 1
    return c, rested


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=60_000, help="mixed-stream transactions")
    ap.add_argument("--book", type=int, default=12_000, help="resting orders built first")
    ap.add_argument("--levels", type=int, default=1_000, help="book price levels per side")
    ap.add_argument("--near", type=int, default=20,
                    help="new limit orders go 1..NEAR ticks from the oracle; cancels take "
                         "book orders beyond 10*NEAR ticks")
    ap.add_argument("--accounts", type=int, default=2_000)
    ap.add_argument("--chunk", type=int, default=2_000, help="admission batch size")
    ap.add_argument("--block-txs", type=int, default=10_000,
                    help="max transactions per block (the node default)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--save-blocks", metavar="FILE",
                    help="pickle the genesis and every block, to re-import them elsewhere "
                         "(state/transition.import_block checks every root)")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the mixed stream's producer apply; print the top entries")
    ap.add_argument("--import-blocks", metavar="FILE",
                    help="only re-import blocks saved by --save-blocks and check every root")
    args = ap.parse_args()
    if args.import_blocks:
        import_blocks(args.import_blocks)
        return
    if args.book < 10_000:
        print("note: the issue asks for a book of at least 10,000 resting orders")

    rng = random.Random(args.seed)
    g, keys = seeded_genesis(args.accounts, args.seed)
    keylist = list(keys.accounts)
    index_of = {k.public_key: i for i, k in enumerate(keylist)}
    signer = Signer(keylist, g.chain_id)
    print(f"pre-signing a book of {args.book} orders from {args.accounts} accounts ...",
          flush=True)
    book_raws, _ = book_orders(signer, rng, args.book, args.levels)

    with tempfile.TemporaryDirectory(prefix="appchain-bench-orders-") as d:
        home = make_home(Path(d) / "node", g, keys.producer, sync=True,
                         max_txs_per_block=args.block_txs,
                         mempool_size=max(args.orders, args.book) + 1)
        node = open_node(home)
        try:
            h0 = node.head.height
            book_secs, n_book = trio.run(run_pipeline, node, book_raws, args.chunk)
            h1 = node.head.height
            bc, rested = tally(node, h0 + 1, h1)
            resting = bc["event_order_rested"]
            deep = [(index_of[owner], oid) for oid, owner, lvl in rested
                    if lvl > 10 * args.near]
            print(f"book: {resting} resting orders in {h1 - h0} blocks, "
                  f"{n_book / book_secs:,.0f} orders/s; {len(deep)} deep ones to cancel",
                  flush=True)
            if resting < args.book:
                raise SystemExit(f"only {resting} of {args.book} book orders rested: {bc}")

            print(f"pre-signing {args.orders} mixed transactions ...", flush=True)
            raws, kinds = mixed_orders(signer, rng, args.orders, deep, args.near)
            vrate = verify_rate(raws)
            prof = cProfile.Profile() if args.profile else None
            if prof is not None:
                import state.transition as tr

                orig = tr.apply_body

                def profiled(*a, **kw):  # type: ignore[no-untyped-def]
                    prof.enable()
                    try:
                        return orig(*a, **kw)
                    finally:
                        prof.disable()

                import node.node as nn
                nn.apply_body = profiled  # type: ignore[attr-defined]
            secs, committed = trio.run(run_pipeline, node, raws, args.chunk)
            h2 = node.head.height
            mc, _ = tally(node, h1 + 1, h2)
            book_left = sum(1 for _ in node.store.iter_state(b"ord/"))
            dig = hashlib.sha256()
            for pfx in (b"ord/", b"book/", b"aord/"):  # time-independent (no funding)
                for k, v in node.store.iter_state(pfx):
                    dig.update(k + b"\0" + v)
            for h in range(1, h2 + 1):  # transactions' results (not the block's own)
                blk_h = node.store.block(h)
                for r in (node.store.results(h) or [])[:len(blk_h.txs) if blk_h else 0]:
                    dig.update(r)
            digest = dig.hexdigest()[:16]
            blocks = [len(node.store.results(h) or []) for h in range(1, h2 + 1)]
            if args.save_blocks:
                import pickle

                with open(args.save_blocks, "wb") as f:
                    pickle.dump({"genesis": g, "blocks": [node.store.block_bytes(h) for h in
                                                          range(1, h2 + 1)]}, f)
        finally:
            node.close()
        du = sum(f.stat().st_size for f in (Path(d) / "node").rglob("*") if f.is_file())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ops = committed / secs
    fills = mc["event_fill"]
    ratio = ops / vrate
    print(f"cores available            : {os.cpu_count()}")
    print(f"book built                 : {resting:,} resting orders in {book_secs:.1f} s "
          f"({n_book / book_secs:,.0f} orders/s)")
    print(f"mixed stream               : {committed:,} txs in {h2 - h1} blocks (sync=True): "
          f"{kinds['limit']:,} limit, {kinds['market']:,} market, {kinds['cancel']:,} cancel")
    print(f"  placed / rested / fills  : {mc['placed']:,} / {mc['event_order_rested']:,} / "
          f"{fills:,}  (cancel txs done {mc['cancelled']:,}; resting orders cancelled "
          f"by matching: {mc['event_order_cancelled']:,})")
    failed = {k: v for k, v in mc.items() if "failed" in k}
    print(f"  failed                   : {failed or 'none'}")
    print(f"  book after               : {book_left:,} open orders")
    print(f"end-to-end orders          : {ops:,.0f} orders/s   (target >= {TARGET_OPS:,})")
    print(f"fills                      : {fills / secs:,.0f} fills/s")
    print(f"single-core ed25519 verify : {vrate:,.0f} verifications/s")
    print(f"ratio orders / verify      : {ratio:.2f}   (target >= {TARGET_RATIO})")
    print(f"peak RSS                   : {peak_mb:,.0f} MiB")
    print(f"data directory             : {du / 2**20:,.1f} MiB")
    print(f"orders+results digest      : {digest}  (same blocks -> same digest)")
    print(f"txs per block              : {blocks}")
    ok = ops >= TARGET_OPS and ratio >= TARGET_RATIO
    print("RESULT:", "meets targets" if ok else "BELOW TARGET")
    if prof is not None:
        st = pstats.Stats(prof)
        st.sort_stats("cumulative").print_stats(35)
        st.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
