"""Node memory across repeated identical floods: RSS after each flood and after idle.

A real node runs as a child process (`appchain start`, sync=True, real LevelDB, RPC on a free
loopback port). Each flood sends ``--txs`` pre-signed transfers from ``--accounts`` funded
accounts as JSON-RPC batches of 100 ``broadcast_tx_sync`` from ``--clients`` concurrent
clients (the path of ``bench/throughput.py --http``), then waits until the node has committed
all of them. At that commit and ``--settle`` seconds later the node's resident set is read
(``VmRSS`` of /proc/<pid>/status, and its anonymous part ``RssAnon``); after the last flood
it is read again after ``--idle`` seconds with nothing to do.

Baseline in the same run: ``--compare`` runs the same floods twice on two fresh nodes, first
with the memory bounds off (``[memory] malloc_arena_max = 0``, ``malloc_trim_interval_ms =
0``, LevelDB cache and write buffer as before issue 11), then with the configured defaults,
and prints the ratio of the two. Linux only (reads /proc).

Usage: .venv/bin/python bench/memory.py [--floods 6] [--txs 20000] [--accounts 2000]
       [--idle 10] [--compare] [--unbounded] [--set storage.write_buffer_mb=64 ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chain.crypto import PrivateKey  # noqa: E402
from chain.tx import Transfer, make_tx  # noqa: E402
from node.client.rpc_client import AsyncRPCClient, RPCCallError  # noqa: E402
from node.config import Home  # noqa: E402
from node.dev.local import NodeProcess, make_genesis, make_home  # noqa: E402
from node.wire_json import b64  # noqa: E402


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile (KiB) and Threads of a process, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "Threads"):
            out[key] = int(rest.split()[0])
    return out


def presign(keys: list[PrivateKey], chain_id: str, floods: int, n: int) -> list[list[bytes]]:
    """``floods`` floods of ``n`` transfers each; sender i % len(keys), nonces continue."""
    nonces = [0] * len(keys)
    out: list[list[bytes]] = []
    for _ in range(floods):
        flood: list[bytes] = []
        for i in range(n):
            s = i % len(keys)
            to = keys[(s + 1) % len(keys)].public_key
            flood.append(make_tx(keys[s], chain_id, nonces[s], Transfer(to, 1)).raw)
            nonces[s] += 1
        out.append(flood)
    return out


async def committed_total(c: AsyncRPCClient, url: str) -> int:
    text = (await c._http.get(url.rstrip("/") + "/metrics")).text
    for line in text.splitlines():
        if line.startswith("appchain_txs_committed_total "):
            return int(float(line.split()[1]))
    return 0


async def flood(url: str, raws: list[bytes], n_senders: int, clients: int) -> float:
    """Send one flood and wait until all of it is committed; seconds taken."""
    lanes: list[list[str]] = [[] for _ in range(clients)]
    for i, raw in enumerate(raws):
        lanes[(i % n_senders) % clients].append(b64(raw))
    refused: list[Any] = []

    async def lane(items: list[str]) -> None:
        async with AsyncRPCClient(url, timeout=60) as c:
            for i in range(0, len(items), 100):
                answers = await c.call_batch(
                    [("broadcast_tx_sync", {"tx": t}) for t in items[i:i + 100]])
                refused.extend(a for a in answers if isinstance(a, RPCCallError))

    async with AsyncRPCClient(url) as c:
        base = await committed_total(c, url)
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for items in lanes:
                nursery.start_soon(lane, items)
        if refused:
            raise RuntimeError(f"{len(refused)} transactions refused, first: {refused[0]}")
        with trio.fail_after(300):
            while await committed_total(c, url) - base < len(raws):  # noqa: ASYNC110 - remote
                await trio.sleep(0.05)
        return time.perf_counter() - t0


@dataclass
class Run:
    label: str
    after: list[dict[str, int]]
    idle: dict[str, int]
    start: dict[str, int]
    seconds: list[float]


def run_floods(label: str, home: Home, floods: list[list[bytes]], n_senders: int,
               clients: int, settle_s: float, idle_s: float) -> Run:
    proc = NodeProcess(home)
    try:
        pid = proc.proc.pid
        time.sleep(1.0)  # let start-up settle
        start = proc_status(pid)
        print(f"[{label}] node pid {pid}: start RSS {start['VmRSS'] / 1024:,.0f} MiB",
              flush=True)
        after: list[dict[str, int]] = []
        secs: list[float] = []
        for k, raws in enumerate(floods, 1):
            secs.append(trio.run(flood, proc.url, raws, n_senders, clients))
            at_commit = proc_status(pid)
            time.sleep(settle_s)  # the node's own after-work (a heap trim) runs
            st = proc_status(pid)
            after.append(st)
            print(f"[{label}] flood {k}: {len(raws)} txs in {secs[-1]:.1f} s, RSS at commit "
                  f"{at_commit['VmRSS'] / 1024:,.0f} MiB, {settle_s:.0f} s later "
                  f"{st['VmRSS'] / 1024:,.0f} MiB (anon {st['RssAnon'] / 1024:,.0f}, "
                  f"threads {st['Threads']})", flush=True)
        time.sleep(idle_s)
        idle = proc_status(pid)
        print(f"[{label}] idle {idle_s:.0f} s: RSS {idle['VmRSS'] / 1024:,.0f} MiB "
              f"(anon {idle['RssAnon'] / 1024:,.0f})", flush=True)
    finally:
        code = proc.terminate()
        if code != 0:
            print(proc.log()[-3000:])
            raise RuntimeError(f"node exited with {code}")
    return Run(label, after, idle, start, secs)


def unbounded(home: Home) -> None:
    """Switch the node's memory bounds off (the behaviour before issue 11)."""
    cfg = home.load_config()
    home.write_config(replace(cfg, memory=replace(
        cfg.memory, malloc_arena_max=0, malloc_trim_interval_ms=0),
        storage=replace(cfg.storage, cache_mb=8, write_buffer_mb=64)))


def override(home: Home, settings: list[str]) -> None:
    """Apply ``section.key=value`` settings (integers or true/false) to the home's config."""
    cfg = home.load_config()
    for item in settings:
        name, _, text = item.partition("=")
        section, _, key = name.partition(".")
        value: object = {"true": True, "false": False}.get(text, None)
        value = int(text) if value is None else value
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{key: value})})
    home.write_config(cfg)


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f}"


def report(r: Run) -> None:
    rss = [a["VmRSS"] for a in r.after]
    print(f"\n{r.label}: RSS MiB after each flood: " + " ".join(mib(x) for x in rss)
          + f"; idle {mib(r.idle['VmRSS'])}; start {mib(r.start['VmRSS'])}")
    if len(rss) >= 2:
        print(f"{r.label}: flood {len(rss)} / flood 2 = {rss[-1] / rss[1]:.2f}; "
              f"growth flood 2 -> {len(rss)}: {mib(rss[-1] - rss[1])} MiB; "
              f"idle / flood 2 = {r.idle['VmRSS'] / rss[1]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--floods", type=int, default=6)
    ap.add_argument("--txs", type=int, default=20_000, help="transactions per flood")
    ap.add_argument("--accounts", type=int, default=2_000)
    ap.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds idle after the floods")
    ap.add_argument("--settle", type=float, default=6.0,
                    help="seconds after a flood's commit before RSS is read (the node trims "
                         "its heap at most every memory.malloc_trim_interval_ms, 5 s)")
    ap.add_argument("--block-interval-ms", type=int, default=200)
    ap.add_argument("--compare", action="store_true",
                    help="first run the same floods with the memory bounds off (baseline)")
    ap.add_argument("--unbounded", action="store_true",
                    help="only the run with the memory bounds off")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a config setting for the bounded run (repeatable)")
    args = ap.parse_args()

    g, keys = make_genesis(accounts=args.accounts, balance=10**12, chain_id="bench")
    print(f"pre-signing {args.floods} floods of {args.txs} transfers ...", flush=True)
    floods = presign(list(keys.accounts), g.chain_id, args.floods, args.txs)
    modes = ["unbounded", "bounded"] if args.compare else (
        ["unbounded"] if args.unbounded else ["bounded"])
    runs: list[Run] = []
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix="appchain-bench-mem-") as d:
            home = make_home(Path(d) / "node", g, keys.producer, sync=True,
                             block_interval_ms=args.block_interval_ms,
                             mempool_size=max(100_000, args.txs + 1))
            if mode == "unbounded":
                unbounded(home)
            else:
                override(home, args.set)
            runs.append(run_floods(mode, home, floods, args.accounts, args.clients,
                                   args.settle, args.idle))
    for r in runs:
        report(r)
    if len(runs) == 2:
        a, b = runs
        print(f"\nbounded / unbounded RSS after flood {args.floods}: "
              f"{b.after[-1]['VmRSS'] / a.after[-1]['VmRSS']:.2f}; idle: "
              f"{b.idle['VmRSS'] / a.idle['VmRSS']:.2f}; mean flood seconds "
              f"{sum(a.seconds) / len(a.seconds):.1f} (unbounded) vs "
              f"{sum(b.seconds) / len(b.seconds):.1f} (bounded)")


if __name__ == "__main__":
    main()
