"""A follower forwards ``broadcast_tx_*`` to its producer and answers with the producer's
answer (real processes, real TCP): commits are readable on the follower when it answers,
refusals come back with the producer's code, batches go as one batch, and a producer that is
gone is a typed 1017 saying whether anything was sent."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from chain.tx import Transfer, make_tx
from node.client.rpc_client import RPCCallError, RPCClient
from node.dev.local import make_genesis, make_home, running_node
from node.p2p.follower import producer_rpc_url
from node.wire_json import b64


def wait_for(pred: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def refusal(url: str, method: str, tx: bytes) -> dict[str, Any]:
    doc = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                "params": {"tx": b64(tx)}}, timeout=60).json()
    assert "error" in doc, doc
    return doc["error"]  # type: ignore[no-any-return]


def test_a_follower_forwards_transactions_and_answers_with_the_producers_answer(
        tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=3)
    p = make_home(tmp_path / "p", g, keys.producer, block_interval_ms=50)
    f = make_home(tmp_path / "f", g, None)
    a, b = keys.accounts[0], keys.accounts[1]
    with running_node(p) as pn, running_node(f, follow=pn.p2p) as fn, \
            RPCClient(fn.url) as fc, RPCClient(pn.url) as pc:
        wait_for(lambda: fc.call("status")["follower"]["producer_rpc"] == pn.url,
                 "the follower to learn the producer's RPC from its hello")
        # commit through the follower: the producer's result, and already readable here
        tx = make_tx(a, g.chain_id, 0, Transfer(b.public_key, 10))
        res = fc.call("broadcast_tx_commit", tx=b64(tx.raw))
        assert res["hash"] == tx.hash.hex() and res["tx_result"]["code"] == 0, res
        on_follower = fc.call("tx", hash=tx.hash.hex())
        assert on_follower["height"] == res["height"]
        assert pc.call("tx", hash=tx.hash.hex())["height"] == res["height"]
        # the producer's refusals come back as they are: a used nonce, bytes that are no tx
        again = make_tx(a, g.chain_id, 0, Transfer(b.public_key, 11))
        err = refusal(fn.url, "broadcast_tx_sync", again.raw)
        assert err["code"] == 1006 and err["data"] == {"reason": "nonce_too_low"}, err
        assert refusal(fn.url, "broadcast_tx_commit", b"\x00" * 8)["code"] == 1001
        # a batch goes on as one batch, in order (one sender's consecutive nonces)
        txs = [make_tx(a, g.chain_id, n, Transfer(b.public_key, 1)) for n in range(1, 6)]
        batch = [{"jsonrpc": "2.0", "id": i, "method": "broadcast_tx_sync",
                  "params": {"tx": b64(t.raw)}} for i, t in enumerate(txs)]
        batch.append({"jsonrpc": "2.0", "id": 99, "method": "broadcast_tx_sync",
                      "params": {"tx": b64(again.raw)}})
        answers = httpx.post(fn.url, json=batch, timeout=60).json()
        by_id = {d["id"]: d for d in answers}
        assert [by_id[i]["result"]["hash"] for i in range(5)] == [t.hash.hex() for t in txs]
        assert by_id[99]["error"]["code"] == 1006
        last = txs[-1].hash.hex()
        wait_for(lambda: _found(fc, last), "the batch to be committed and reach the follower")
        st = fc.call("status")["follower"]
        assert st["txs_forwarded"] == str(1 + 2 + 6) and st["forward_failures"] == "0", st
        acct = pc.call("account", address=a.public_key.hex())
        assert acct["next_nonce"] == "6", acct
        # the producer goes away: a typed refusal that says nothing was sent
        assert pn.terminate() == 0
        late = make_tx(a, g.chain_id, 6, Transfer(b.public_key, 1))
        err = refusal(fn.url, "broadcast_tx_sync", late.raw)
        assert err["code"] == 1017, err
        assert err["data"]["reason"] == "producer_unreachable" and err["data"]["sent"] is False
        assert err["data"]["hash"] == late.hash.hex()
        assert fc.call("status")["follower"]["forward_failures"] == "1"
        assert fc.call("health") is not None  # and the follower itself goes on serving


def _found(c: RPCClient, h: str) -> bool:
    try:
        c.call("tx", hash=h)
    except RPCCallError:
        return False
    return True


def test_the_producer_rpc_url_a_follower_uses() -> None:
    assert producer_rpc_url("http://127.0.0.1:26657", "10.0.0.5") == "http://127.0.0.1:26657"
    # a producer listening on every interface is reached where its peer port was reached
    assert producer_rpc_url("http://0.0.0.0:26657", "10.0.0.5") == "http://10.0.0.5:26657"
    assert producer_rpc_url("http://[::]:26657", "fd00::1") == "http://[fd00::1]:26657"
    for bad in ("", "ftp://x:1", "http://x", "http://x:0", "http://x:1/path", "x:1"):
        assert producer_rpc_url(bad, "10.0.0.5") == "", bad
