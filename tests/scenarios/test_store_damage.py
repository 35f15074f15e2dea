"""A damaged store is never served: flipped bytes in LevelDB's write-ahead log or in a table
file of a stopped node refuse the start with one ``Error:`` line naming the damage, and a
damaged block outside the checked tail is answered with a typed error, never changed bytes
(state/kv_level.py, state/recovery/chain_check.py). A state value rewritten in the raw store
under an unchanged tree is never served nor built on (state/checked_state.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import plyvel
import pytest

from chain.tx import Transfer
from node.client.admin_client import AdminClient
from node.client.rpc_client import RPCCallError, RPCClient
from node.config import Home
from node.dev.local import make_genesis, make_home, running_node
from state import schema
from state.records import Account
from state.schema import account_key
from state.store import Store
from tests.harness.rpc_chain import Chain, admin_url
from tests.helpers import REPO, rewrite_behind_the_chain


def start_refused(home: Home) -> str:
    """Start the node in a subprocess; it must exit 1 with exactly one ``Error:`` line (and
    no traceback). Returns that line. (A node that starts instead times out: a failure.)"""
    r = subprocess.run([sys.executable, "-m", "node.cli", "start", "--home", str(home.root)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out, out
    errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, out
    return errors[0]


def chain_with_transfers(tmp_path: Path, n: int) -> tuple[Home, list[int]]:
    """A node that committed ``n`` transfers (one per block, most likely), then stopped
    cleanly: the heights of the blocks holding them."""
    g, keys = make_genesis(accounts=2, balance=10**9)
    home = make_home(tmp_path / "node", g, keys.producer, block_interval_ms=30)
    a, b = keys.accounts
    heights = []
    with running_node(home) as node, RPCClient(node.url) as c:
        ch = Chain(c, g.chain_id)
        for i in range(n):
            heights.append(int(ch.commit(a, Transfer(b.public_key, 1 + i))["height"]))
        assert node.terminate() == 0
    return home, heights


def flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))


def files_holding(store_dir: Path, pattern: bytes, suffixes: tuple[str, ...]
                  ) -> list[tuple[Path, int]]:
    return [(p, p.read_bytes().find(pattern)) for p in sorted(store_dir.iterdir())
            if p.suffix in suffixes and pattern in p.read_bytes()]


def test_a_flipped_byte_in_the_write_ahead_log_refuses_the_start(tmp_path: Path) -> None:
    """The commit batch of a block in the middle, still only in the log (the node stopped
    with its recent writes there): one flipped byte in it. LevelDB without paranoid checks
    drops that batch and replays the rest (a hole: block, results, undo record and tx index
    gone); here the open is refused, naming the damage."""
    home, heights = chain_with_transfers(tmp_path, 8)
    middle = heights[3]
    assert middle < heights[-1]
    key = schema.block_key(middle)
    [(log_file, at)] = files_holding(home.store_dir, key, (".log",))
    assert not files_holding(home.store_dir, key, (".ldb", ".sst"))  # only in the log
    flip(log_file, at + len(key) + 40)  # inside the block's value, in that batch's record
    line = start_refused(home)
    assert "damaged" in line and "checksum mismatch" in line, line
    assert "restore" in line and "OPERATIONS.md" in line, line


def compact_uncompressed(store_dir: Path) -> None:
    """Move everything from the log into table files, stored without compression so that a
    block's bytes can be found in them (a maintenance tool would do the same compaction)."""
    db = plyvel.DB(str(store_dir), compression=None)
    db.compact_range()
    db.close()


def test_a_flipped_byte_in_a_table_file_refuses_the_start_and_is_never_served(
        tmp_path: Path) -> None:
    home, heights = chain_with_transfers(tmp_path, 6)
    compact_uncompressed(home.store_dir)
    damaged = heights[2]
    with Store(home.store_dir) as s:
        raw = s.block_bytes(damaged)
        before = [s.block_bytes(h) for h in heights]
        head = s.head()
    assert raw is not None and head is not None
    [(table, at)] = files_holding(home.store_dir, raw, (".ldb", ".sst"))
    assert not files_holding(home.store_dir, raw, (".log",))  # only in the table
    flip(table, at + len(raw) // 2)  # inside the block's stored bytes
    line = start_refused(home)
    # (LevelDB checks 4 KiB table blocks: the blocks sharing that one are named with it)
    first = int(line.split("damaged at height ", 1)[1].split(":")[0])
    ranges = line.split("problems at heights ", 1)[1].split(")")[0] if "problems at" in line \
        else str(first)
    named = {h for r in ranges.split(", ") for lo, _, hi in [r.partition("-")]
             for h in range(int(lo), int(hi or lo) + 1)}
    assert damaged in named, line
    assert "checksum mismatch" in line and "restore" in line, line
    # Outside the checked tail (check_tail_blocks = 0), the node starts, and the damaged
    # block is answered with a typed error, never its changed bytes.
    cfg = home.load_config()
    home.write_config(replace(cfg, storage=replace(cfg.storage, check_tail_blocks=0)))
    with running_node(home) as node, RPCClient(node.url) as c:
        with pytest.raises(RPCCallError) as e:
            c.call("block", height=damaged)
        assert e.value.code == 1040 and e.value.data == {"reason": "store_damaged"}
        for h, b in zip(heights, before, strict=True):  # each one whole or refused
            try:
                got = c.call("block", height=h)["block"]
            except RPCCallError as e:
                assert e.code == 1040 and e.data == {"reason": "store_damaged"}
                continue
            assert got["header"]["height"] == str(h) and h != damaged
            assert b is not None
        deadline = time.monotonic() + 20  # the status is served and new blocks follow
        while int(c.call("status")["sync_info"]["latest_block_height"]) <= head.height:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert node.terminate() == 0


def test_a_balance_rewritten_in_the_raw_store_is_never_served_nor_built_on(
        tmp_path: Path) -> None:
    """Finding 4: a balance written into the store of a stopped node outside the blocks
    (the tree, and so the head's root, unchanged). Not served: the RPC answers 1040
    ``stored_state`` and the producer halts naming the key; resume and start are refused
    while the value differs; once the value is repaired both work and blocks follow."""
    g, keys = make_genesis(accounts=2, balance=1_000_000)
    home = make_home(tmp_path / "node", g, keys.producer, block_interval_ms=30)
    a, b = keys.accounts
    ops = list(keys.operators)
    with running_node(home) as node, RPCClient(node.url) as c:
        Chain(c, g.chain_id).commit(a, Transfer(b.public_key, 10))
        assert node.terminate() == 0
    key = account_key(a.public_key)
    with Store(home.store_dir) as s:
        good = s.state_get(key)
    assert good is not None
    forged = replace(Account.decode(good), balance=10**15)
    rewrite_behind_the_chain(home.store_dir, [(key, forged.encode())], tree_too=False)
    with running_node(home) as node, RPCClient(node.url) as c:
        with pytest.raises(RPCCallError) as e:
            c.call("account", address=a.public_key.hex())
        assert e.value.code == 1040 and e.value.data == {"reason": "stored_state"}
        assert str(10**15) not in e.value.message
        with pytest.raises(RPCCallError) as q:
            c.call("query", data=key.hex())
        assert q.value.code == 1040
        halted = c.call("status")["halted"]
        assert halted is not None and halted["check"] == "stored_state", halted
        assert halted["evidence"]["keys"][0]["key"] == key.hex()
        height = int(c.call("status")["sync_info"]["latest_block_height"])
        with pytest.raises(RPCCallError):  # halted: nothing is admitted, nothing built
            Chain(c, g.chain_id).commit(b, Transfer(a.public_key, 5))
        with AdminClient(admin_url(home.root), ops) as adm:
            for args in ({}, {"force": "true"}):
                with pytest.raises(RPCCallError) as r:
                    adm.run("resume", args)
                assert "still differs from the committed state tree" in r.value.message
        assert int(c.call("status")["sync_info"]["latest_block_height"]) == height
        assert node.terminate() == 0
    line = start_refused(home)
    assert "still differs" in line and "acct/" + a.public_key.hex() in line, line
    rewrite_behind_the_chain(home.store_dir, [(key, good)], tree_too=False)  # repaired
    with running_node(home) as node, RPCClient(node.url) as c:
        with AdminClient(admin_url(home.root), ops) as adm:
            adm.run("resume", {})
        acct = c.call("account", address=a.public_key.hex())
        assert acct["balance"] == str(Account.decode(good).balance)
        Chain(c, g.chain_id).commit(b, Transfer(a.public_key, 5))
        deadline = time.monotonic() + 20
        while int(c.call("status")["sync_info"]["latest_block_height"]) <= height:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert node.terminate() == 0
