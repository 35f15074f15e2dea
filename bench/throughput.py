"""Steady-state transfer throughput through the whole node path, against ed25519 verify speed.

Blocks are built full (``--block-txs``, the node's default 10,000) as a producer at steady
state with a block interval matched to the load would; a block waits until that many
transactions are admitted, while admission of the next ones continues.

Path measured: pre-signed transaction bytes -> decode -> signature check (on a thread pool,
both cores) -> mempool admission -> producer: apply, sign, commit with fsync -> mempool
cleanup. Everything runs in one process through the real ``Node`` (no HTTP), on a real
LevelDB in a temporary folder. Baseline in the same run: single-core ed25519 verifications
per second (libsodium via PyNaCl) over the same transactions.

Usage: .venv/bin/python bench/throughput.py [--txs 100000] [--accounts 2000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import nacl.bindings
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio.lowlevel

from chain.tx import Transfer, make_tx
from node.dev.local import make_genesis, make_home  # noqa: E402
from node.mempool import MempoolReject  # noqa: E402
from node.node import Node, open_node

TARGET_TPS = 10_000
TARGET_RATIO = 0.35


def presign(keys: list, chain_id: str, n: int) -> list[bytes]:
    out: list[bytes] = []
    nonces = [0] * len(keys)
    for i in range(n):
        s = i % len(keys)
        to = keys[(s + 1) % len(keys)].public_key
        out.append(make_tx(keys[s], chain_id, nonces[s], Transfer(to, 1)).raw)
        nonces[s] += 1
    return out


def verify_rate(raws: list[bytes]) -> float:
    """Single-core ed25519 verifications per second over the same transactions."""
    from chain.tx import decode_tx

    txs = [decode_tx(r) for r in raws[:20_000]]
    items = [(t.sig + t.signed_bytes(), t.sender) for t in txs]
    t0 = time.perf_counter()
    for sm, pk in items:
        nacl.bindings.crypto_sign_open(sm, pk)
    return len(items) / (time.perf_counter() - t0)


async def run_pipeline(node: Node, raws: list[bytes], chunk: int) -> tuple[float, int]:
    """Admit in chunks while the producer commits blocks; returns (seconds, committed)."""
    total = len(raws)
    committed = 0
    done_admitting = trio.Event()

    async def admit() -> None:
        for i in range(0, total, chunk):
            res = await node.intake.submit_many(raws[i:i + chunk])
            bad = [r for r in res if isinstance(r, MempoolReject)]
            if bad:
                raise RuntimeError(f"{len(bad)} rejected, first: {bad[0].message}")
            await trio.lowlevel.checkpoint()
        done_admitting.set()

    async def produce() -> None:
        nonlocal committed
        # Steady state at the target rate: with a block interval sized to the load, each
        # block is full. So build a block once a full one is waiting (or the input is done).
        full = node.cfg.producer.max_txs_per_block
        while committed < total:
            if len(node.mempool) < full and not (done_admitting.is_set() and len(node.mempool)):
                await trio.sleep(0.001)
                continue
            before = node.head.height
            await node.produce_block()
            blk = node.store.block(node.head.height)
            assert node.head.height == before + 1 and blk is not None
            committed += len(blk.txs)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(admit)
        nursery.start_soon(produce)
    return time.perf_counter() - t0, committed


async def run_http(url: str, raws: list[bytes], n_senders: int, clients: int
                   ) -> tuple[float, int]:
    """Send every transaction as JSON-RPC batches over HTTP; wait until all are committed."""
    from node.client.rpc_client import AsyncRPCClient, RPCCallError
    from node.wire_json import b64

    # Transaction i comes from sender i % n_senders: give each client whole senders so
    # each sender's nonces reach the node in order.
    lanes: list[list[str]] = [[] for _ in range(clients)]
    for i, raw in enumerate(raws):
        lanes[(i % n_senders) % clients].append(b64(raw))
    refused = 0

    async def lane(items: list[str]) -> None:
        nonlocal refused
        async with AsyncRPCClient(url, timeout=60) as c:
            for i in range(0, len(items), 100):
                answers = await c.call_batch(
                    [("broadcast_tx_sync", {"tx": t}) for t in items[i:i + 100]])
                refused += sum(isinstance(a, RPCCallError) for a in answers)

    async def committed(c: AsyncRPCClient) -> int:
        text = (await c._http.get(url.rstrip("/") + "/metrics")).text
        for line in text.splitlines():
            if line.startswith("appchain_txs_committed_total "):
                return int(float(line.split()[1]))
        return 0

    async with AsyncRPCClient(url) as c:
        base = await committed(c)
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for items in lanes:
                nursery.start_soon(lane, items)
        if refused:
            raise RuntimeError(f"{refused} transactions refused")
        with trio.fail_after(300):
            while (n := await committed(c) - base) < len(raws):  # noqa: ASYNC110 - remote
                await trio.sleep(0.01)
        return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--txs", type=int, default=100_000)
    ap.add_argument("--accounts", type=int, default=2_000)
    ap.add_argument("--chunk", type=int, default=2_000, help="admission batch size")
    ap.add_argument("--block-txs", type=int, default=10_000,
                    help="max transactions per block (the node default)")
    ap.add_argument("--http", action="store_true",
                    help="also measure through JSON-RPC over HTTP against a node subprocess")
    ap.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    args = ap.parse_args()

    g, keys = make_genesis(accounts=args.accounts, balance=10**12, chain_id="bench")
    print(f"pre-signing {args.txs} transfers from {args.accounts} accounts ...", flush=True)
    raws = presign(list(keys.accounts), g.chain_id, args.txs)
    vrate = verify_rate(raws)
    with tempfile.TemporaryDirectory(prefix="appchain-bench-") as d:
        home = make_home(Path(d) / "node", g, keys.producer, sync=True,
                         max_txs_per_block=args.block_txs, mempool_size=args.txs + 1)
        node = open_node(home)
        try:
            secs, committed = trio.run(run_pipeline, node, raws, args.chunk)
            blocks = node.head.height
        finally:
            node.close()
        du = sum(f.stat().st_size for f in (Path(d) / "node").rglob("*") if f.is_file())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    http_tps = None
    if args.http:
        from node.dev.local import NodeProcess

        raws_http = presign(list(keys.accounts), g.chain_id, args.txs)
        with tempfile.TemporaryDirectory(prefix="appchain-bench-http-") as d:
            home = make_home(Path(d) / "node", g, keys.producer, sync=True,
                             block_interval_ms=200, max_txs_per_block=args.block_txs,
                             mempool_size=args.txs + 1)
            proc = NodeProcess(home)
            try:
                hsecs, hn = trio.run(run_http, proc.url, raws_http, args.accounts,
                                     args.clients)
            finally:
                proc.terminate()
        http_tps = hn / hsecs
    tps = committed / secs
    ratio = tps / vrate
    print(f"cores available            : {os.cpu_count()}")
    print(f"transfers committed        : {committed} in {blocks} blocks (sync=True)")
    print(f"end-to-end throughput      : {tps:,.0f} transfers/s   (target >= {TARGET_TPS:,})")
    print(f"single-core ed25519 verify : {vrate:,.0f} verifications/s")
    print(f"ratio throughput / verify  : {ratio:.2f}   (target >= {TARGET_RATIO})")
    if http_tps is not None:
        print(f"over JSON-RPC/HTTP         : {http_tps:,.0f} transfers/s   (node subprocess, "
              f"{args.clients} clients, batches of 100)")
    print(f"peak RSS (in-process run)  : {peak_mb:,.0f} MiB")
    print(f"data directory             : {du / 2**20:,.1f} MiB")
    ok = tps >= TARGET_TPS and ratio >= TARGET_RATIO
    print("RESULT:", "meets targets" if ok else "BELOW TARGET")


if __name__ == "__main__":
    main()
