"""Followers against the producer: catch-up rate, commit-to-commit latency, RSS per node.

1. ``appchain devnet`` (its own load generator: quotes, takes, failing post-only orders,
   cancels, TP/SL, leveraged traders, liquidations, funding) produces ``--blocks`` blocks at
   ``--block-interval-ms`` while a **live follower** (``appchain start --follow``) follows it
   over the peer protocol. The producer's rate is its blocks over the span of their header
   times; the live follower's ``status.follower.latency_ms`` gives p50/p99 of (its commit
   time - the block's header time), the same machine's clock.
2. The devnet stops its producer; the producer is started again (same peer port, now
   producing empty blocks) and a **fresh follower** starts from the genesis: the time until
   it holds the devnet's last block gives its catch-up rate over the same blocks (import:
   signature, linkage, re-execution, every root, commit with fsync). Baseline in the same
   run: the producer's rate. Target: catch-up >= 1.5 x production.
3. A third follower starts with ``--state-sync`` (the producer's state, checked against its
   signed header, then blocks): its time to the same head against the block-by-block one.
4. RSS (VmRSS) of the producer and both followers at the end.

Usage: .venv/bin/python bench/follower.py [--blocks 2000] [--block-interval-ms 50] [--tps 150]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chain.block import Block  # noqa: E402
from genesis.format import load_genesis  # noqa: E402
from node.client.rpc_client import RPCClient  # noqa: E402
from node.config import Home  # noqa: E402
from node.dev.local import NodeProcess, make_home  # noqa: E402
from state.store import Store  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TARGET = 1.5


def status(url: str) -> dict[str, Any]:
    with RPCClient(url) as c:
        return c.call("status")  # type: ignore[no-any-return]


def height(url: str) -> int:
    return int(status(url)["sync_info"]["latest_block_height"])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.02)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=2000)
    ap.add_argument("--block-interval-ms", type=int, default=50)
    ap.add_argument("--tps", type=int, default=150)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="follower-bench-") as d:
        root = Path(d) / "devnet"
        devnet = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "devnet", "--home", str(root), "--blocks",
             str(args.blocks), "--block-interval-ms", str(args.block_interval_ms), "--port",
             "0", "--tps", str(args.tps), "--accounts", "12", "--funding-interval-ms", "2000",
             "--oracle-period-ms", "200", "--oracle-sharp-every", "8"], cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        p2p = root / "node0" / "data" / "p2p_address"
        wait(p2p.exists, 120, "the devnet's producer")
        peer = p2p.read_text().strip()
        g = load_genesis(root / "genesis" / "genesis.json")
        live = NodeProcess(make_home(Path(d) / "live", g, None), follow=peer)
        try:
            if devnet.wait(timeout=args.blocks * args.block_interval_ms / 1000 * 5 + 300):
                raise SystemExit(f"devnet failed ({devnet.returncode})")
            with Store(root / "node0" / "data" / "store") as s:
                head = s.head()
                assert head is not None
                top = head.height
                first = Block.decode_block(s.block_bytes(1) or b"").header.time
                last = Block.decode_block(s.block_bytes(top) or b"").header.time
                txs = sum(len(Block.decode_block(s.block_bytes(h) or b"").txs)
                          for h in range(1, top + 1))
            prod_rate = (top - 1) / max(0.001, (last - first) / 1000)
            # The live follower's figures over the loaded blocks (it may still lack the last
            # one or two, which the devnet's producer committed as it stopped).
            lat = status(live.url)["follower"]["latency_ms"]
            h0 = Home(root / "node0")
            cfg = h0.load_config()
            h0.write_config(replace(cfg, p2p=replace(cfg.p2p, laddr=f"tcp://{peer}")))
            producer = NodeProcess(h0)
            try:
                wait(lambda: height(live.url) >= top, 120, "the live follower")
                fresh_home = make_home(Path(d) / "fresh", g, None)
                t0 = time.monotonic()
                fresh = NodeProcess(fresh_home, follow=peer)
                try:
                    wait(lambda: height(fresh.url) >= top, 3600, "the fresh follower")
                    catch_s = time.monotonic() - t0
                    rss = {"producer": rss_mib(producer.proc.pid),
                           "live follower": rss_mib(live.proc.pid),
                           "fresh follower": rss_mib(fresh.proc.pid)}
                finally:
                    fresh.terminate()
                # State sync: a fresh follower from the producer's state instead of blocks.
                t0 = time.monotonic()
                synced = NodeProcess(make_home(Path(d) / "synced", g, None), follow=peer,
                                     state_sync=True, start_timeout=600)
                try:
                    wait(lambda: height(synced.url) >= top, 600, "the state-synced follower")
                    sync_s = time.monotonic() - t0
                finally:
                    synced.terminate()
            finally:
                producer.terminate()
        finally:
            live.terminate()
            if devnet.poll() is None:
                devnet.kill()
    catch_rate = top / catch_s
    ratio = catch_rate / prod_rate
    print(f"blocks                     : {top:,} of the devnet's load ({txs:,} txs)")
    print(f"producer rate              : {prod_rate:,.1f} blocks/s "
          f"(block interval {args.block_interval_ms} ms)")
    print(f"fresh follower catch-up    : {catch_rate:,.1f} blocks/s ({catch_s:.1f} s, from "
          "process start, over TCP)")
    print(f"catch-up / production      : {ratio:.2f}   (target >= {TARGET})")
    print(f"state sync to the head     : {sync_s:.1f} s (vs {catch_s:.1f} s replaying every "
          f"block: {catch_s / sync_s:.1f}x faster)")
    print(f"live follower latency      : p50 {lat['p50']} ms, p99 {lat['p99']} ms over "
          f"{lat['blocks']} blocks (follower commit - block header time)")
    print("RSS                        : " + ", ".join(f"{k} {v:,.0f} MiB"
                                                      for k, v in rss.items()))
    print(json.dumps({"blocks": top, "txs": txs, "producer_blocks_per_s": round(prod_rate, 2),
                      "catchup_blocks_per_s": round(catch_rate, 2), "ratio": round(ratio, 2),
                      "state_sync_s": round(sync_s, 1), "block_sync_s": round(catch_s, 1),
                      "latency_ms": lat, "rss_mib": {k: round(v) for k, v in rss.items()}}))
    print("RESULT: " + ("OK" if ratio >= TARGET else "BELOW TARGET"))


if __name__ == "__main__":
    main()
