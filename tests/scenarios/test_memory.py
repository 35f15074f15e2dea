"""Native memory of a real node process across repeated identical floods of transactions:
with the arena cap and heap trimming (``[memory]``) and a small memtable, the resident set
after the sixth flood is back near the second's, instead of climbing with each flood."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from chain.tx import Transfer, make_tx
from node.client.rpc_client import AsyncRPCClient, RPCCallError
from node.config import ConfigError, MemoryConfig, parse_config
from node.dev.local import make_genesis, make_home, running_node
from node.memory import Trimmer, limit_arenas, trim
from node.wire_json import b64

FLOODS = 6
FLOOD_TXS = 8_000
ACCOUNTS = 400
WRITE_BUFFER_MB = 4
MARGIN_KIB = (2 * WRITE_BUFFER_MB + 8) * 1024
"""Two memtables' worth plus 8 MiB: generous next to the ~30 MiB a node without the
bounds gains over these floods (bench/memory.py, bench/RESULTS.md "Issue 11: memory")."""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def committed(c: AsyncRPCClient) -> int:
    text = (await c._http.get(c.url.rstrip("/") + "/metrics")).text
    for line in text.splitlines():
        if line.startswith("appchain_txs_committed_total "):
            return int(float(line.split()[1]))
    return 0


async def send_flood(url: str, raws: list[bytes]) -> None:
    """Batches of 100 broadcast_tx_sync from two clients; returns once all are committed."""
    lanes = [[b64(r) for i, r in enumerate(raws) if (i % ACCOUNTS) % 2 == k] for k in (0, 1)]

    async def lane(items: list[str]) -> None:
        async with AsyncRPCClient(url, timeout=60) as c:
            for i in range(0, len(items), 100):
                answers = await c.call_batch(
                    [("broadcast_tx_sync", {"tx": t}) for t in items[i:i + 100]])
                assert not [a for a in answers if isinstance(a, RPCCallError)]

    async with AsyncRPCClient(url) as c:
        base = await committed(c)
        async with trio.open_nursery() as nursery:
            for items in lanes:
                nursery.start_soon(lane, items)
        with trio.fail_after(120):
            while await committed(c) - base < len(raws):  # noqa: ASYNC110 - remote
                await trio.sleep(0.05)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_rss_flat_across_floods(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=ACCOUNTS, balance=10**12)
    home = make_home(tmp_path / "node", g, keys.producer, block_interval_ms=100)
    cfg = home.load_config()
    home.write_config(replace(
        cfg, storage=replace(cfg.storage, write_buffer_mb=WRITE_BUFFER_MB),
        memory=MemoryConfig(malloc_arena_max=2, malloc_trim_interval_ms=300)))
    senders = list(keys.accounts)
    nonces = [0] * ACCOUNTS
    floods: list[list[bytes]] = []
    for _ in range(FLOODS):
        flood = []
        for i in range(FLOOD_TXS):
            s = i % ACCOUNTS
            flood.append(make_tx(senders[s], g.chain_id, nonces[s],
                                 Transfer(senders[(s + 1) % ACCOUNTS].public_key, 1)).raw)
            nonces[s] += 1
        floods.append(flood)
    rss: list[int] = []
    with running_node(home) as n:
        for flood in floods:
            trio.run(send_flood, n.url, flood)
            time.sleep(1.0)  # several trim intervals: the node has trimmed after the flood
            rss.append(rss_kib(n.proc.pid))
        assert n.proc.poll() is None
    assert rss[-1] <= rss[1] + MARGIN_KIB, f"RSS KiB after each flood: {rss}"


def test_memory_settings_parse_and_are_checked() -> None:
    cfg = parse_config({"memory": {"malloc_arena_max": 0, "malloc_trim_interval_ms": 0},
                        "storage": {"cache_mb": 4, "write_buffer_mb": 8,
                                    "max_open_files": 200}})
    assert cfg.memory == MemoryConfig(0, 0)
    assert (cfg.storage.cache_mb, cfg.storage.write_buffer_mb,
            cfg.storage.max_open_files) == (4, 8, 200)
    for doc, words in (({"memory": {"malloc_arena_max": -1}}, "memory.malloc_arena_max"),
                       ({"storage": {"write_buffer_mb": 2048}}, "at most 1024"),
                       ({"storage": {"cache_mb": 0}}, "storage.cache_mb must be positive"),
                       ({"memory": {"trim": 1}}, "unknown setting memory.trim")):
        with pytest.raises(ConfigError, match=words):
            parse_config(doc)


def test_trimmer_runs_only_after_work_and_not_too_often() -> None:
    t = Trimmer(0.0)
    assert not t.enabled  # interval 0: off
    t = Trimmer(3600.0)
    assert not t.due(True)  # the interval has not passed since it was made
    t = Trimmer(1e-9)
    if t.enabled:  # glibc
        assert not t.due(False)  # nothing happened: no trim
        time.sleep(0.001)
        assert t.due(True)
        t.run()
        assert t.trims == 1
        assert isinstance(trim(), bool)
        assert limit_arenas(0) is False  # 0 leaves glibc's default alone
