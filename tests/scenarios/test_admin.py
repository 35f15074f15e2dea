"""The operator endpoint against a real node process: every refusal, halt/resume, snapshots,
maintenance windows, and a rollback that the next block continues in a new era."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from chain.admin import AdminEnvelope, OperatorSignature
from chain.crypto import PrivateKey
from chain.tx import OperatorCall, Transfer, make_tx
from genesis.builder import build_devnet
from genesis.format import parse_time
from node.client.admin_client import AdminClient
from node.client.rpc_client import RPCCallError, RPCClient
from node.dev.local import make_genesis, make_home, running_node
from node.wire_json import b64


def admin_url(home_root: Path) -> str:
    return (home_root / "data" / "admin_address").read_text().strip()


def wait_height(c: RPCClient, h: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = int(c.call("status")["sync_info"]["latest_block_height"])
        if got >= h:
            return got
        time.sleep(0.02)
    raise TimeoutError(f"height {h} not reached")


def refused(fn) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(RPCCallError) as e:
        fn()
    return e.value.code, (e.value.data or {}).get("reason", "")


def test_every_refused_envelope_has_its_own_error(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=2, operators=3, threshold=2)
    op1, op2, op3 = keys.operators
    home = make_home(tmp_path / "n", g, keys.producer, block_interval_ms=50)
    stranger = PrivateKey.generate()
    with running_node(home) as n:
        url = admin_url(home.root)
        good = AdminClient(url, [op1, op2])
        one = AdminClient(url, [op1])
        now = time.time_ns() // 1_000_000
        env = good.envelope("snapshot_list", {})
        assert good.send(env)["snapshots"] == []
        cases = {
            "malformed": lambda: good.rpc.call("admin", envelope=base64.b64encode(
                b"\x93junk").decode()),
            "wrong_chain": lambda: good.send(good.envelope("snapshot_list", {},
                                                           chain_id="other-chain")),
            "unsigned": lambda: good.send(good.envelope("snapshot_list", {}, keys=[])),
            "unknown_key": lambda: good.send(good.envelope("snapshot_list", {},
                                                           keys=[op1, stranger])),
            "bad_signature": lambda: good.send(AdminEnvelope(env.command, (
                env.signatures[0], OperatorSignature(op2.public_key, b"\x00" * 64)))),
            "under_threshold": lambda: one.run("snapshot_list"),
            "expired": lambda: good.send(good.envelope("snapshot_list", {},
                                                       issued_at=now - 3_600_000)),
            "not_yet_valid": lambda: good.send(good.envelope("snapshot_list", {},
                                                             issued_at=now + 3_600_000)),
            "replayed": lambda: good.send(env),
            "unknown_command": lambda: good.run("launch_missiles"),
            "bad_args": lambda: good.run("halt", {}),
        }
        codes = {}
        for reason, fn in cases.items():
            code, got = refused(fn)
            assert got == reason, (reason, got)
            codes[reason] = code
        assert len(set(codes.values())) == len(codes)  # distinct codes
        # The same operator signing twice does not make two signatures.
        assert refused(lambda: good.send(good.envelope("snapshot_list", {},
                                                       keys=[op1, op1])))[1] == \
            "under_threshold"
        # A non-operator key can do nothing at all.
        for cmd, args in (("halt", {"reason": "x"}), ("resume", {}),
                          ("snapshot_create", {"label": "x"}), ("audit", {}),
                          ("rollback", {"to_height": "1", "dry_run": "true"})):
            assert refused(lambda c=cmd, a=args: AdminClient(url, [stranger]).run(c, a))[1] == \
                "unknown_key"
        with RPCClient(n.url) as c:
            assert c.call("status")["halted"] is None
        # Every signed attempt is in the audit log with its reason, one entry each; those no
        # threshold of operators signed are counted in summary entries (the first at once,
        # the rest when the endpoint stops).
        log = good.run("audit", {"limit": "1000"})["entries"]
        reasons = [e.get("reason") for e in log if e["outcome"] == "refused"]
        signed = ("expired", "not_yet_valid", "replayed", "unknown_command", "bad_args")
        for reason in signed:
            assert reasons.count(reason) == 1, reason
        unauthenticated = set(cases) - set(signed)
        assert not unauthenticated & set(reasons)
        assert log[0]["outcome"] == "ok" and log[0]["command"] == "snapshot_list"
        assert log[1]["reason"] == "unauthenticated" and log[1]["reasons"] == {"malformed": "1"}
        good.close()
        one.close()
        assert n.terminate() == 0
    journal = [json.loads(line) for line in
               (home.root / "data" / "audit.jsonl").read_text().splitlines()]
    counted: Counter[str] = Counter()
    for e in journal:
        if e.get("reason") == "unauthenticated":
            counted.update(e["reasons"])
    assert counted == {"malformed": 1, "wrong_chain": 1, "unsigned": 1, "unknown_key": 6,
                       "bad_signature": 1, "under_threshold": 2}


def test_halt_snapshot_maintenance_and_rollback(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=2, balance=10**9)
    a, b = keys.accounts
    home = make_home(tmp_path / "n", g, keys.producer, block_interval_ms=40)
    with running_node(home) as n, RPCClient(n.url) as c, \
            AdminClient(admin_url(home.root), list(keys.operators)) as adm:
        for i in range(3):
            t = make_tx(a, g.chain_id, i, Transfer(b.public_key, 10 + i))
            assert c.call("broadcast_tx_commit", tx=b64(t.raw))["tx_result"]["code"] == 0
        snap = adm.run("snapshot_create", {"label": "before"})
        pinned = int(snap["height"])
        later = []
        for i in range(3, 6):
            t = make_tx(a, g.chain_id, i, Transfer(b.public_key, 100))
            later.append(t)
            assert c.call("broadcast_tx_commit", tx=b64(t.raw))["tx_result"]["code"] == 0
        # Scheduled halt: production stops exactly at that height.
        h = int(c.call("status")["sync_info"]["latest_block_height"])
        out = adm.run("halt", {"reason": "upgrade", "at_height": str(h + 3)})
        assert out["halted"] is False and c.call("status")["halt_scheduled"] is not None
        wait_height(c, h + 3)
        deadline = time.monotonic() + 10
        while c.call("status")["halted"] is None and time.monotonic() < deadline:
            time.sleep(0.02)
        st = c.call("status")
        assert st["halted"]["reason"] == "upgrade" and st["halted"]["by"].startswith(
            "operators:")
        assert int(st["sync_info"]["latest_block_height"]) == h + 3
        time.sleep(0.2)  # bounded check that nothing more is produced
        assert int(c.call("status")["sync_info"]["latest_block_height"]) == h + 3
        # While halted, reads work and new transactions get the halted error.
        t = make_tx(a, g.chain_id, 6, Transfer(b.public_key, 1))
        with pytest.raises(RPCCallError) as e:
            c.call("broadcast_tx_sync", tx=b64(t.raw))
        assert e.value.code == 1011
        assert c.call("account", address=a.public_key.hex())["nonce"] == "6"
        # Rollback to the snapshot: dry run lists the abandoned transactions.
        dry = adm.rollback("bad upgrade", to_snapshot="before", dry_run=True)
        listed = {x["hash"] for x in dry["plan"]["txs"]}
        assert {t.hash.hex() for t in later} <= listed
        assert dry["plan"]["state_root"] == snap["state_root"]
        # Not without a reason-matching certificate; not from a running chain (checked below).
        code, reason = refused(lambda: adm.run("rollback", {"to_snapshot": "before",
                                                            "reason": "x",
                                                            "certificate": "00"}))
        assert reason == "bad_args"
        done = adm.rollback("bad upgrade", to_snapshot="before")
        assert int(done["height"]) == pinned and done["next_era"] == "1"
        st = c.call("status")
        assert int(st["sync_info"]["latest_block_height"]) == pinned
        assert st["sync_info"]["latest_app_hash"] == snap["state_root"]
        assert st["sync_info"]["next_era"] == "1"
        assert c.call("account", address=a.public_key.hex())["nonce"] == "3"
        # Resume: the next block starts era 1 and links to the pinned block.
        adm.run("resume")
        wait_height(c, pinned + 1)
        blk = c.call("block", height=pinned + 1)["block"]["header"]
        assert blk["era"] == "1" and blk["prev_hash"] == snap["block_hash"]
        # Maintenance: begin pins and halts; end verifies and resumes.
        mb = adm.run("maintenance_begin", {"reason": "disk swap"})
        assert mb["snapshot"]["label"].startswith("pre-maintenance-")
        assert c.call("status")["halted"]["check"] == "maintenance"
        assert refused(lambda: adm.run("resume"))[1] == "refused"
        me = adm.run("maintenance_end")
        assert me["verification"]["ok"] is True and c.call("status")["halted"] is None
        # A rollback while running is refused.
        assert refused(lambda: adm.rollback("x", to_height=1))[1] == "refused"
        assert n.terminate() == 0


def test_recovery_with_a_threshold_of_three_and_a_stale_pin(tmp_path: Path) -> None:
    """Three operators must sign everything: the fork certificate and the reopening operator
    transaction travel as long arguments. A pin whose block a rollback abandoned is refused."""
    g, keys = make_genesis(accounts=2, balance=10**9, operators=3, threshold=3, markets=True)
    a, b = keys.accounts
    home = make_home(tmp_path / "n", g, keys.producer, block_interval_ms=40)
    with running_node(home) as n, RPCClient(n.url) as c, \
            AdminClient(admin_url(home.root), list(keys.operators)) as adm:
        wait_height(c, 3)
        adm.run("snapshot_create", {"label": "early"})
        early = int(adm.run("snapshot_show", {"label": "early"})["height"])
        for i in range(2):
            t = make_tx(a, g.chain_id, i, Transfer(b.public_key, 7))
            assert c.call("broadcast_tx_commit", tx=b64(t.raw))["tx_result"]["code"] == 0
        adm.run("halt", {"reason": "drill"})
        reason = "drill: " + "x" * 300
        done = adm.rollback(reason, to_height=early - 1)
        assert done["next_era"] == "1"
        # The pin's block was abandoned: rolling back "to" it would pick the wrong block.
        out = adm.resume()
        assert out["reopen"]["code"] == 0, out
        st = c.call("market", symbol="BTC-USD-PERP")["state"]
        assert st["mode"] == "post-only" and st["liquidation_wait"] == "3"
        wait_height(c, early + 2)
        adm.run("halt", {"reason": "drill 2"})
        with pytest.raises(RPCCallError) as e:
            adm.rollback("again", to_snapshot="early")
        assert e.value.data["reason"] == "refused" and "abandoned" in e.value.message
        assert n.terminate() == 0


def _metric(text: str, name: str, reason: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{reason="{reason}"}} '):
            return float(line.split()[-1])
    return 0.0


def test_a_flood_of_unsigned_envelopes_is_counted_not_audited(tmp_path: Path) -> None:
    """Issue 11 finding 9: 1,000 unsigned envelopes each appended a synced audit entry with
    its arguments (store 46 KB -> 25.6 MB). Now: counted, rate-limited, one summary entry
    per interval, and the operators are not locked out by the flood from their own
    address."""
    g, keys = make_genesis(accounts=2, operators=2, threshold=2)
    home = make_home(tmp_path / "n", g, keys.producer, block_interval_ms=100)
    journal = home.root / "data" / "audit.jsonl"
    with running_node(home) as n, AdminClient(admin_url(home.root), list(keys.operators)) as adm:
        fat = {f"k{i:02d}": "x" * 1000 for i in range(60)}  # ~60 KB of arguments each
        spam = base64.b64encode(adm.envelope("halt", fat, keys=[]).encode()).decode()
        got: Counter[str] = Counter()
        with httpx.Client(base_url=admin_url(home.root), timeout=30) as http:
            for i in range(1000):
                r = http.post("/", json={"jsonrpc": "2.0", "id": i, "method": "admin",
                                         "params": {"envelope": spam}})
                got[r.json()["error"]["data"]["reason"]] += 1
                if i == 500:  # mid-flood, from the same address: the operators get through
                    assert adm.run("snapshot_list")["snapshots"] == []
        assert sum(got.values()) == 1000
        assert got["unsigned"] >= 100 and got["rate_limited"] >= 500, got
        entries = adm.run("audit", {"limit": "1000"})["entries"]
        assert len(entries) <= 3, entries  # a summary, snapshot_list, maybe one more summary
        assert sum(int(e.get("count", "0")) for e in entries) <= 1000
        assert journal.stat().st_size < 20_000
        metrics = httpx.get(n.url.rstrip("/") + "/metrics", timeout=30).text
        name = "appchain_admin_unauthenticated_refused_total"
        assert _metric(metrics, name, "unsigned") == got["unsigned"]
        assert _metric(metrics, name, "rate_limited") == got["rate_limited"]
        assert n.terminate() == 0
    summaries = [json.loads(line) for line in journal.read_text().splitlines()]
    counted: Counter[str] = Counter()
    for e in summaries:
        if e.get("reason") == "unauthenticated":
            counted.update(e["reasons"])
    assert counted == got


def test_operator_commands_are_dated_by_the_chain_clock_not_the_wall_clock(
        tmp_path: Path) -> None:
    """Issue 11 finding 9: an operator transaction dated 10 years ahead was accepted through
    the public RPC. Now the chain takes a command issued within [block time - 1 h, block time
    + 5 min]; the client dates it for the block it goes in, which also works when the
    chain's clock is far from the wall clock (as during a recovery: here the chain's clock
    is months ahead, from its genesis time)."""
    future = "2027-06-01T00:00:00Z"
    g, keys = build_devnet("test-chain", future, parse_time(future)[1], accounts=2,
                           balance=10**9, operators=2, threshold=2)
    home = make_home(tmp_path / "n", g, keys.producer, block_interval_ms=50)
    with running_node(home) as n, RPCClient(n.url) as c, \
            AdminClient(admin_url(home.root), list(keys.operators)) as adm:
        wait_height(c, 2)
        bt = int(adm.rpc.call("admin_info")["operator_block_time_ms"])
        assert bt > time.time_ns() // 1_000_000 + 86_400_000  # the chain's clock is ahead
        out = adm.operator_tx("cancel_orders", {"keep": ""})
        assert out["code"] == 0 and out["summary"].endswith(": ok")
        adm.run("halt", {"reason": "drill"})
        out = adm.operator_tx("market_mode", {"market": "*", "mode": "post-only"})
        assert out["code"] == 0, out
        # Dated by the wall clock, the endpoint refuses it (the chain would fail it).
        stale = adm.signed_operator_tx("cancel_orders", {"keep": ""},
                                       block_time_ms=time.time_ns() // 1_000_000)
        assert refused(lambda: adm.run("operator_tx", {"tx": stale.hex()}))[1] == "expired"
        adm.run("resume")
        # Through the public RPC, ten years ahead: included, and fails on chain.
        op = keys.operators[0]
        nonce = int(adm.rpc.call("admin_info", address=op.public_key.hex())["next_nonce"])
        env = adm.envelope("cancel_orders", {"keep": ""}, issued_at=bt + 10 * 365 * 86_400_000)
        t = make_tx(op, g.chain_id, nonce, OperatorCall(env.encode()))
        r = c.call("broadcast_tx_commit", tx=b64(t.raw))["tx_result"]
        assert r["code"] == 2 and "ms after the block time" in r["log"], r
        assert n.terminate() == 0
