"""Light clients against a follower give the same verified answers as against the producer.

A real producer and a real follower process (`appchain start --follow`), transfers
committed (one sent through the follower, which forwards it), the producer halted so the
head stays put, then the light client, which trusts only the genesis file, is run against
BOTH nodes' RPC: `appchain light account/get/header` as CLI subprocesses, and a verified
transaction through the library (the transaction's bytes are in the block whose light-
verified header commits to them in `tx_root`, and its result in `results_root`). Every
answer must be identical, and every one verified.

Then across a rollback: the producer's operators roll it back; the follower follows by the
fork certificate on its own, and a light client that had trusted the abandoned era's headers
*from the follower* follows the new era through the follower's `fork_certificate` RPC and
again agrees with one that reads the producer. Last, a follower that lies (its store
rewritten thoroughly, state tree and head state root included, so it starts and serves the
changed balance) is caught: its proof does not verify under the producer-signed state root.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from chain.block import Attr, Event, TxResult, results_root
from chain.crypto import sha256
from chain.merkle import merkle_root
from chain.tx import Transfer, make_tx
from genesis.format import Genesis
from node.client.admin_client import AdminClient
from node.client.light import LightClient
from node.client.rpc_client import AsyncRPCClient, RPCClient
from node.client.trust import LightClientError
from node.dev.local import make_genesis, make_home, running_node
from node.wire_json import b64, result_json
from state.records import Account
from state.schema import account_key
from tests.helpers import REPO, rewrite_behind_the_chain

BALANCE = 10**9
AMOUNT = 1_000
T = TypeVar("T")


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def status(url: str) -> dict[str, Any]:
    with RPCClient(url) as c:
        return c.call("status")  # type: ignore[no-any-return]


def height(url: str) -> int:
    return int(status(url)["sync_info"]["latest_block_height"])


def light_cli(genesis_file: Path, calls: list[tuple[str, list[str]]]
              ) -> list[subprocess.CompletedProcess[str]]:
    """`appchain light ARGS --genesis G --node URL` for each (url, args), run in parallel."""
    procs = [subprocess.Popen(
        [sys.executable, "-m", "node.cli", "light", *args, "--genesis", str(genesis_file),
         "--node", url], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for url, args in calls]
    out = []
    for p, (_, args) in zip(procs, calls, strict=True):
        try:
            stdout, stderr = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        out.append(subprocess.CompletedProcess(args, p.returncode, stdout, stderr))
    return out


def same_cli_answers(genesis_file: Path, urls: tuple[str, str],
                     commands: list[list[str]]) -> list[dict[str, Any]]:
    """Each command against both nodes: both verified, both answers identical."""
    runs = light_cli(genesis_file, [(u, c) for c in commands for u in urls])
    answers = []
    for i, cmd in enumerate(commands):
        p, f = runs[2 * i], runs[2 * i + 1]
        for r in (p, f):
            assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        ap, af = json.loads(p.stdout), json.loads(f.stdout)
        assert ap["verified"] is True
        assert ap == af, (cmd, ap, af)
        answers.append(ap)
    return answers


def light_client(g: Genesis) -> LightClient:
    """A client trusting only ``g``; its RPC connection is set by each :func:`run_light`."""
    async def make() -> LightClient:
        async with AsyncRPCClient("http://127.0.0.1:1") as rpc:  # (never called)
            return LightClient(g, rpc)
    return trio.run(make)


def run_light(lc: LightClient, url: str, work: Callable[[LightClient], Awaitable[T]]) -> T:
    """``await work(lc)`` under trio, with ``lc`` talking to ``url`` (a client kept across
    runs keeps what it trusts; only its connection is new)."""
    async def go() -> T:
        async with AsyncRPCClient(url) as rpc:
            lc.rpc = rpc
            return await work(lc)
    return trio.run(go)


async def verified_tx(lc: LightClient, tx_hash: bytes) -> dict[str, Any]:
    """The transaction and its result, proven: its bytes are leaf ``index`` of the block
    whose light-verified header's ``tx_root`` commits to them, and its result a leaf of the
    same header's ``results_root``. Any mismatch fails the test: the node lied."""
    rpc = lc.rpc
    ans = await rpc.call("tx", hash=tx_hash.hex())
    h, index = int(ans["height"]), int(ans["index"])
    th = await lc.header(h)
    assert th.signed is not None
    header = th.signed.header
    blk = await rpc.call("block", height=str(h))
    assert blk["block_id"]["hash"] == th.hash.hex()
    txs = [base64.b64decode(t) for t in blk["block"]["data"]["txs"]]
    assert merkle_root(txs) == header.tx_root, "tx_root"
    raw = base64.b64decode(ans["tx"])
    assert txs[index] == raw and sha256(raw) == tx_hash
    res = await rpc.call("block_results", height=str(h))

    def events(js: list[dict[str, Any]]) -> tuple[Event, ...]:
        return tuple(Event(e["type"], tuple(Attr(a["key"], a["value"])
                                            for a in e["attributes"])) for e in js)

    results = [TxResult(r["code"], r["log"], events(r["events"])) for r in res["txs_results"]]
    end = events(res["end_block_events"])
    leaves = results + ([TxResult(0, "", end)] if end else [])
    assert results_root(leaves) == header.results_root, "results_root"
    assert result_json(results[index]) == ans["tx_result"]
    return {"hash": tx_hash.hex(), "height": h, "index": index, "tx": ans["tx"],
            "result": ans["tx_result"], "block_hash": th.hash.hex(),
            "header": header.to_obj()}


def test_light_clients_get_the_same_verified_answers_from_a_follower(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=3, balance=BALANCE, operators=3, threshold=2)
    a, b, c = keys.accounts
    ph = make_home(tmp_path / "p", g, keys.producer, block_interval_ms=50)
    fh = make_home(tmp_path / "f", g, None)
    gfile = ph.genesis_file
    with running_node(ph) as pn, running_node(fh, follow=pn.p2p) as fn, AdminClient(
            (ph.data_dir / "admin_address").read_text().strip(),
            list(keys.operators[:2])) as adm:
        urls = (pn.url, fn.url)
        wait_for(lambda: height(fn.url) >= 2, "the follower to sync")
        sent: list[tuple[bytes, int]] = []  # (hash, height)
        with RPCClient(pn.url) as pc, RPCClient(fn.url) as fc:
            for i in range(3):
                tx = make_tx(a, g.chain_id, i, Transfer(b.public_key, AMOUNT))
                r = pc.call("broadcast_tx_commit", tx=b64(tx.raw))
                assert r["tx_result"]["code"] == 0, r
                sent.append((tx.hash, int(r["height"])))
            tx = make_tx(b, g.chain_id, 0, Transfer(c.public_key, 7 * AMOUNT))
            r = fc.call("broadcast_tx_commit", tx=b64(tx.raw))  # forwarded to the producer
            assert r["tx_result"]["code"] == 0, r
            sent.append((tx.hash, int(r["height"])))
        adm.run("halt", {"reason": "compare"})  # the head stays put from here on
        top = height(pn.url)
        wait_for(lambda: height(fn.url) == top, "the follower at the producer's head")
        assert status(fn.url)["halted"] is None  # (the producer is halted, not the follower)
        first = sent[0][1]

        # -- era 0: the CLI, which verifies every header from the genesis, on both nodes ----
        acct_a, acct_b, acct_a_then, raw_c, hdr, hdr_top = same_cli_answers(gfile, urls, [
            ["account", a.public_key.hex()],
            ["account", b.public_key.hex()],
            ["account", a.public_key.hex(), "--height", str(first)],
            ["get", account_key(c.public_key).hex()],
            ["header", str(first)],
            ["header"],
        ])
        assert (acct_a["balance"], acct_a["nonce"]) == (str(BALANCE - 3 * AMOUNT), "3")
        assert acct_a["height"] == str(top)
        assert acct_b["balance"] == str(BALANCE + 3 * AMOUNT - 7 * AMOUNT)
        assert acct_a_then["nonce"] == "1" and acct_a_then["height"] == str(first)
        assert Account.decode(base64.b64decode(raw_c["value"])).balance == BALANCE + 7 * AMOUNT
        assert hdr["height"] == str(first) and hdr["header"]["era"] == "0"
        assert hdr_top["height"] == str(top)

        # -- a verified transaction, through the library, on both nodes ----------------------
        lcs = (light_client(g), light_client(g))
        for h, _ in sent:
            got = [run_light(lc, u, partial(verified_tx, tx_hash=h))
                   for lc, u in zip(lcs, urls, strict=True)]
            assert got[0] == got[1], got
            assert got[0]["result"]["code"] == 0
        for lc, u in zip(lcs, urls, strict=True):  # both now trust era-0 headers up to top
            assert run_light(lc, u, lambda lc: lc.header()).height == top
            assert lcs[0].trusted[top] == lc.trusted[top]

        # -- across a rollback: the follower follows by certificate, so does its light client
        fork_at = first - 1  # the three transfers of a and the one of b are abandoned
        adm.rollback("light drill", to_height=fork_at)
        adm.resume()
        wait_for(lambda: height(pn.url) >= top + 3, "the producer's new era to pass top")
        adm.run("halt", {"reason": "compare era 1"})
        top1 = height(pn.url)
        wait_for(lambda: height(fn.url) == top1 and status(fn.url)["sync_info"]["era"] == "1",
                 "the follower on era 1 at the producer's head")
        assert status(fn.url)["follower"]["rollbacks"] == "1"
        with RPCClient(pn.url) as pc, RPCClient(fn.url) as fc:
            cert = pc.call("fork_certificate", era="1")
            assert fc.call("fork_certificate", era="1") == cert  # the follower serves it too
        heads = [run_light(lc, u, lambda lc: lc.header())
                 for lc, u in zip(lcs, urls, strict=True)]
        assert heads[0] == heads[1] and heads[0].era == 1 and heads[0].height == top1
        for lc in lcs:  # followed through the certificate, the abandoned headers dropped
            assert lc.trusted[fork_at + 1].era == 1 and lc.trusted[fork_at].era == 0
        got1 = [run_light(lc, u, lambda lc: lc.account(a.public_key))
                for lc, u in zip(lcs, urls, strict=True)]
        assert got1[0] == got1[1]
        assert got1[0][0].nonce == 0 and got1[0][0].balance == BALANCE  # transfers undone
        # A fresh CLI run crosses the era change from the genesis, on both nodes.
        acct1, hdr1 = same_cli_answers(gfile, urls, [
            ["account", a.public_key.hex()], ["header", str(fork_at + 1)]])
        assert (acct1["nonce"], acct1["height"]) == ("0", str(top1))
        assert hdr1["header"]["era"] == "1"

        # -- a follower that lies is caught ---------------------------------------------------
        assert fn.terminate() == 0
        rewrite_behind_the_chain(fh.store_dir, [(account_key(a.public_key), Account(
            BALANCE + 10**6, 0).encode())], tree_too=True)
        with running_node(fh, follow=pn.p2p) as liar:
            with RPCClient(liar.url) as lc_rpc:  # a plain read believes it
                ans = lc_rpc.call("query", path="/key", data=account_key(a.public_key).hex(),
                                  prove=False)
            assert Account.decode(base64.b64decode(ans["response"]["value"])).balance == \
                BALANCE + 10**6
            r_liar, r_honest = light_cli(gfile, [(liar.url, ["account", a.public_key.hex()]),
                                                 (pn.url, ["account", a.public_key.hex()])])
            assert r_liar.returncode == 1, r_liar.stdout
            assert "light client refused: proof:" in r_liar.stderr, r_liar.stderr
            assert r_honest.returncode == 0 and json.loads(r_honest.stdout) == acct1
            with pytest.raises(LightClientError) as e:
                run_light(lcs[1], liar.url, lambda lc: lc.account(a.public_key))
            assert e.value.check == "proof", e.value
            assert liar.terminate() == 0
        assert pn.terminate() == 0
