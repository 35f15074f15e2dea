"""Halt and snapshot 20 times while transactions keep arriving: every pin's state root is
its block header's, and no transaction the node accepted is lost."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from chain.tx import Transfer, make_tx
from node.client.admin_client import AdminClient
from node.client.rpc_client import RPCCallError, RPCClient
from node.dev.local import make_genesis, make_home, running_node
from node.wire_json import b64


def test_twenty_halts_and_snapshots_under_load(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=6, balance=10**9)
    home = make_home(tmp_path / "n", g, keys.producer, block_interval_ms=20)
    accepted: list[str] = []
    refused_halted = [0]
    stop = threading.Event()

    with running_node(home) as n:
        def load() -> None:
            nonces = dict.fromkeys(range(len(keys.accounts)), 0)
            with RPCClient(n.url) as c:
                i = 0
                while not stop.is_set():
                    k = i % len(keys.accounts)
                    key = keys.accounts[k]
                    to = keys.accounts[(k + 1) % len(keys.accounts)].public_key
                    t = make_tx(key, g.chain_id, nonces[k], Transfer(to, 1 + i % 7))
                    try:
                        c.call("broadcast_tx_sync", tx=b64(t.raw))
                    except RPCCallError as e:
                        assert e.code == 1011, e  # halted: the only refusal expected
                        refused_halted[0] += 1
                        time.sleep(0.002)
                        continue  # same nonce again later
                    accepted.append(t.hash.hex())
                    nonces[k] += 1
                    i += 1

        th = threading.Thread(target=load, daemon=True)
        th.start()
        with RPCClient(n.url) as c, AdminClient(
                (home.root / "data" / "admin_address").read_text().strip(),
                list(keys.operators)) as adm:
            pins = []
            for i in range(20):
                time.sleep(0.03)  # let a block or two of load land
                h = adm.run("halt", {"reason": f"drill {i}"})
                assert h["halted"] is True
                snap = adm.run("snapshot_create", {"label": f"drill-{i}"})
                pins.append(snap)
                assert c.call("status")["halted"] is not None
                adm.run("resume")
            stop.set()
            th.join(30)
            for snap in pins:
                header = c.call("header", height=int(snap["height"]))["header"]
                assert header["state_root"] == snap["state_root"]
            assert len({p["height"] for p in pins}) >= 2  # the chain moved between drills
            # Everything accepted commits (the mempool kept it through every halt).
            deadline = time.monotonic() + 60
            while c.call("num_unconfirmed_txs")["n_txs"] not in (0, "0") and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
            missing = []
            for h_ in accepted:
                try:
                    c.call("tx", hash=h_)
                except RPCCallError:
                    missing.append(h_)
            assert missing == []
        assert len(accepted) > 100
        assert refused_halted[0] > 0  # the load really ran into the halts
        assert n.terminate() == 0
