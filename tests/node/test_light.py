"""The light client against a real node, and against a malicious RPC server that tampers.

The malicious server is a real HTTP server on 127.0.0.1 (the node's own HTTP server,
node/api/http_server.py, in the test's own trio nursery) that forwards every JSON-RPC call
to the real node and rewrites the answers; the light client must refuse each forgery and
name the check that caught it.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from chain.block import ZERO_HASH, Header, SignedHeader, sign_header
from chain.crypto import PrivateKey
from chain.stateproof import decode_proof
from chain.tx import Transfer, make_tx
from genesis.builder import DevnetKeys
from genesis.format import Genesis
from genesis.state import chain_params
from node.api.http_server import HTTPLimits, HTTPRequest, HTTPResponse, HTTPServer, json_body
from node.client.light import LightClient
from node.client.rpc_client import AsyncRPCClient, RPCClient
from node.client.trust import (
    CHECKS,
    ERA_CHANGE_WITHOUT_CERTIFICATE,
    HeaderVerifier,
    LightClientError,
    TrustedHeader,
    TrustRoot,
)
from node.dev.local import make_genesis, make_home, running_node
from node.node import open_node
from node.serve import run_node
from node.wire_json import b64, signed_header_json
from state.params import PARAM_CHAIN
from state.records import Account
from state.schema import account_key
from tests.helpers import REPO

BALANCE = 1_000_000
WAIT_S = 20

Tamper = Callable[[str, dict[str, Any], Any], Any]


# -- a real node and a malicious proxy in front of it -------------------------------------------


@dataclass
class Proxy:
    """Forwards JSON-RPC to ``upstream``; ``tamper(method, params, result)`` rewrites results."""

    upstream: str
    http: httpx.AsyncClient
    tamper: Tamper | None = None
    batches: list[int] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: HTTPRequest) -> HTTPResponse:
        body = json.loads(request.body)
        reqs = body if isinstance(body, list) else [body]
        if isinstance(body, list):
            self.batches.append(len(body))
        resp = await self.http.post(self.upstream, json=body)
        doc = resp.json()
        by_id = {r.get("id"): r for r in reqs}
        for ans in doc if isinstance(doc, list) else [doc]:
            req = by_id.get(ans.get("id"))
            if req is not None and "result" in ans and self.tamper is not None:
                ans["result"] = self.tamper(req["method"], req.get("params") or {},
                                            copy.deepcopy(ans["result"]))
        return HTTPResponse(200, json_body(doc))


@dataclass
class Env:
    g: Genesis
    keys: DevnetKeys
    url: str  # the honest node
    proxy: Proxy
    rpc: AsyncRPCClient  # to the honest node
    evil: AsyncRPCClient  # to the malicious proxy
    nursery: trio.Nursery
    tx_heights: list[int] = field(default_factory=list)

    @property
    def payee(self) -> bytes:
        return self.keys.accounts[1].public_key

    async def height(self) -> int:
        return int((await self.rpc.call("status"))["sync_info"]["latest_block_height"])

    async def wait_height(self, h: int) -> int:
        with trio.fail_after(WAIT_S):
            while True:
                now = await self.height()
                if now >= h:
                    return now
                await trio.sleep(0.01)

    async def transfer(self, sender: PrivateKey, nonce: int, amount: int) -> int:
        t = make_tx(sender, self.g.chain_id, nonce, Transfer(self.payee, amount))
        res = await self.rpc.call("broadcast_tx_commit", tx=b64(t.raw))
        assert res["tx_result"]["code"] == 0, res
        return int(res["height"])


async def start_proxy(nursery: trio.Nursery, upstream: str, http: httpx.AsyncClient) -> Proxy:
    proxy = Proxy(upstream.rstrip("/") + "/", http)
    server = HTTPServer("proxy", proxy.handle, HTTPLimits(
        max_connections=64, header_timeout_s=WAIT_S, body_timeout_s=WAIT_S,
        idle_timeout_s=WAIT_S, max_body_bytes=16 * 1024 * 1024))
    proxy.url = await nursery.start(partial(server.serve, "127.0.0.1", 0))
    return proxy


@asynccontextmanager
async def running(path: Path, g: Genesis, producer: PrivateKey, interval_ms: int
                  ) -> AsyncIterator[str]:
    """An in-process producing node with RPC on 127.0.0.1; yields its URL."""
    home = make_home(path, g, producer, block_interval_ms=interval_ms)
    node = open_node(home)
    try:
        async with trio.open_nursery() as nursery:
            yield await nursery.start(run_node, node)
            nursery.cancel_scope.cancel()
    finally:
        node.close()


@asynccontextmanager
async def chain_env(tmp_path: Path, *, interval_ms: int = 30, transfers: bool = True,
                    markets: bool = False, balance: int = BALANCE) -> AsyncIterator[Env]:
    """A node with a few blocks and two committed transfers, and a proxy in front of it."""
    g, keys = make_genesis(accounts=3, balance=balance, markets=markets)
    async with running(tmp_path / "node", g, keys.producer, interval_ms) as url, \
            httpx.AsyncClient(timeout=WAIT_S) as http, trio.open_nursery() as nursery:
        proxy = await start_proxy(nursery, url, http)
        async with AsyncRPCClient(url, timeout=WAIT_S) as rpc, \
                AsyncRPCClient(proxy.url, timeout=WAIT_S) as evil:
            env = Env(g, keys, url, proxy, rpc, evil, nursery)
            await env.wait_height(2)
            if transfers:
                env.tx_heights.append(await env.transfer(keys.accounts[0], 0, 100))
                env.tx_heights.append(await env.transfer(keys.accounts[2], 0, 7))
            await env.wait_height((env.tx_heights or [0])[-1] + 2)
            yield env
        nursery.cancel_scope.cancel()


# -- honest node: everything verifies ---------------------------------------------------------


async def test_account_get_and_header_verify_at_latest_and_past_heights(tmp_path: Path
                                                                         ) -> None:
    async with chain_env(tmp_path) as env:
        lc = LightClient(env.g, env.rpc)
        acct, h = await lc.account(env.payee)
        assert h >= env.tx_heights[-1]
        assert acct == Account(BALANCE + 107, 0)
        node_view = await env.rpc.call("account", address=env.payee.hex())
        assert int(node_view["height"]) >= h and node_view["balance"] == str(BALANCE + 107)
        # Sender's nonce moved.
        sender, _ = await lc.account(env.keys.accounts[0].public_key, height=h)
        assert sender == Account(BALANCE - 100, 1)
        # A header: the node's own, verified.
        th = await lc.header(h)
        hdr = await env.rpc.call("header", height=h)
        assert th.hash.hex() == hdr["hash"] and th.height == h
        assert th.state_root.hex() == hdr["header"]["state_root"]
        # Any state key, e.g. the chain parameters written at genesis.
        value, h2 = await lc.get(PARAM_CHAIN, height=h)
        assert value == chain_params(env.g).encode() and h2 == h
        # Absence verifies too (the node proves the key is not there).
        missing = b"\x42" * 32
        assert await lc.get(account_key(missing), height=h) == (None, h)
        assert await lc.account(missing, height=h) == (Account(0, 0), h)
        # The latest height is read once by get(); the node may have moved on since.
        value, latest = await lc.get(b"no/such/key")
        assert value is None and latest >= h
        # Past heights, below what is already verified: before, between and after transfers.
        t1, t2 = env.tx_heights
        assert await lc.account(env.payee, height=t1 - 1) == (Account(BALANCE, 0), t1 - 1)
        if t2 > t1:
            assert await lc.account(env.payee, height=t1) == (Account(BALANCE + 100, 0), t1)
        assert await lc.account(env.payee, height=t2) == (Account(BALANCE + 107, 0), t2)
        # The genesis height: no block; the root is computed from the genesis file.
        g0 = env.g.initial_height - 1
        assert await lc.account(env.payee, height=g0) == (Account(BALANCE, 0), g0)
        genesis_header = await lc.header(g0)
        assert genesis_header.signed is None and genesis_header.hash == env.g.hash
        # A fresh client straight to a past height syncs only that far.
        lc2 = LightClient(env.g, env.rpc)
        assert await lc2.account(env.payee, height=t1) == (
            (Account(BALANCE + 100, 0) if t2 > t1 else Account(BALANCE + 107, 0)), t1)
        assert lc2.latest.height == t1


async def test_header_sync_uses_batches_of_at_most_100(tmp_path: Path) -> None:
    async with chain_env(tmp_path, interval_ms=2, transfers=False) as env:
        await env.wait_height(236)
        lc = LightClient(env.g, env.evil)  # the proxy without tampering: it counts batches
        th = await lc.header(230)
        assert th.height == 230
        assert env.proxy.batches == [100, 100, 30]
        await lc.header(235)
        assert env.proxy.batches[-1] == 5
        assert (await lc.get(PARAM_CHAIN, height=231))[1] == 231


# -- the malicious server: each forgery is refused, naming the check ---------------------------


def resigned(ans: dict[str, Any], key: PrivateKey | None = None, sig: bytes | None = None,
             **changes: Any) -> dict[str, Any]:
    """A header answer with ``changes`` applied, its canonical bytes re-encoded, and signed by
    ``key`` (or carrying ``sig``, or the original signature)."""
    sh = SignedHeader.decode(base64.b64decode(ans["canonical"]))
    h = replace(sh.header, **changes)
    s = sig if sig is not None else (sign_header(key, h) if key is not None else sh.sig)
    return signed_header_json(SignedHeader(h, s))


def json_only(ans: dict[str, Any], **changes: str) -> dict[str, Any]:
    ans["header"].update(changes)
    return ans


def flip(data: bytes, i: int = 0) -> bytes:
    return data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]


def on_header(height: int, fn: Callable[[dict[str, Any]], Any]) -> Tamper:
    def t(method: str, params: dict[str, Any], result: Any) -> Any:
        if method == "header" and int(params.get("height", -1)) == height:
            return fn(result)
        return result
    return t


def on_query(fn: Callable[[dict[str, Any]], Any]) -> Tamper:
    def t(method: str, params: dict[str, Any], result: Any) -> Any:
        return fn(result) if method == "query" else result
    return t


def with_response(**changes: Any) -> Callable[[dict[str, Any]], Any]:
    def f(result: dict[str, Any]) -> Any:
        result["response"].update(changes)
        return result
    return f


def altered_sibling(result: dict[str, Any]) -> Any:
    p = decode_proof(base64.b64decode(result["response"]["proof"]))
    assert p.siblings, "the test needs a proof with at least one sibling"
    p = replace(p, siblings=(flip(p.siblings[0], 31),) + p.siblings[1:])
    result["response"]["proof"] = b64(p.encode())
    return result


OTHER = PrivateKey.generate()
FORGED = b64(Account(10**15, 0).encode())


def header_cases(env: Env) -> list[tuple[str, Tamper, str]]:
    """(name, tamper, expected check) for forgeries of the header at height 2."""
    prod = env.keys.producer
    other_pub = OTHER.public_key
    return [
        ("state_root re-encoded, old signature",
         on_header(2, lambda a: resigned(a, state_root=b"\x01" * 32)), "signature"),
        ("height re-encoded, old signature",
         on_header(2, lambda a: resigned(a, height=3)), "signature"),
        ("signature altered",
         on_header(2, lambda a: resigned(a, sig=flip(bytes.fromhex(a["signature"]), 5))),
         "signature"),
        ("JSON state_root differs from canonical bytes",
         on_header(2, lambda a: json_only(a, state_root="ab" * 32)), "header_mismatch"),
        ("JSON hash differs from canonical bytes",
         on_header(2, lambda a: {**a, "hash": "cd" * 32}), "header_mismatch"),
        ("canonical bytes are garbage",
         on_header(2, lambda a: {**a, "canonical": b64(b"\x93\x01\x02")}), "response"),
        ("signed by another key, producer field kept",
         on_header(2, lambda a: resigned(a, OTHER)), "signature"),
        ("signed by another key naming itself producer",
         on_header(2, lambda a: resigned(a, OTHER, producer=other_pub)), "producer"),
        ("prev_hash altered, signed by a non-producer key",
         on_header(2, lambda a: resigned(a, OTHER, prev_hash=b"\x11" * 32)), "signature"),
        ("prev_hash altered, signed by the producer (equivocation)",
         on_header(2, lambda a: resigned(a, prod, prev_hash=b"\x11" * 32)), "linkage"),
        ("prev_hash zero, signed by the producer",
         on_header(2, lambda a: resigned(a, prod, prev_hash=ZERO_HASH)), "linkage"),
        ("height skips, signed by the producer",
         on_header(2, lambda a: resigned(a, prod, height=5)), "height"),
        ("time not after the previous block, signed by the producer",
         on_header(2, lambda a: resigned(a, prod, time=env.g.genesis_time_ms)), "time"),
        ("another chain id, signed by the producer",
         on_header(2, lambda a: resigned(a, prod, chain_id="other-chain")), "chain_id"),
        ("era change without a fork certificate",
         on_header(2, lambda a: resigned(a, prod, era=1)), "era"),
    ]


def query_cases(env: Env) -> list[tuple[str, Tamper, str]]:
    prod = env.keys.producer

    return [
        ("value altered", on_query(with_response(value=FORGED)), "proof"),
        ("proof sibling altered", on_query(altered_sibling), "proof"),
        ("proof missing", on_query(with_response(proof=None)), "proof"),
        ("proof not decodable", on_query(with_response(proof=b64(b"\xc1"))), "proof"),
        ("existing account claimed absent",
         on_query(with_response(value=None, exists=False)), "proof"),
        ("exists true with a null value", on_query(with_response(value=None, exists=True)),
         "value"),
        ("exists false with a value", on_query(with_response(exists=False)), "value"),
        ("value not base64", on_query(with_response(value="%%%")), "value"),
        ("answer for another key",
         on_query(with_response(key=account_key(b"\x01" * 32).hex())), "response"),
        ("answer for another height", on_query(with_response(height="1")), "response"),
        ("no signed header", on_query(lambda r: {**r, "signed_header": None}),
         "header_mismatch"),
        ("signed header re-signed by the producer with another state root",
         on_query(lambda r: {**r, "signed_header": resigned(r["signed_header"], prod,
                                                            state_root=b"\x05" * 32)}),
         "header_mismatch"),
        ("signed header JSON altered",
         on_query(lambda r: {**r, "signed_header": json_only(r["signed_header"],
                                                             height="1")}),
         "header_mismatch"),
    ]


async def expect_refusal(env: Env, tamper: Tamper, check: str, name: str) -> LightClientError:
    env.proxy.tamper = tamper
    lc = LightClient(env.g, env.evil)
    with pytest.raises(LightClientError) as ei:
        await lc.account(env.payee, height=env.tx_heights[-1] + 1)
    env.proxy.tamper = None
    err = ei.value
    assert err.check == check, (name, err.check, str(err))
    assert err.check in CHECKS
    return err


async def test_malicious_server_each_header_forgery_is_refused(tmp_path: Path) -> None:
    async with chain_env(tmp_path) as env:
        # The untampered proxy serves the truth, and the client accepts it.
        lc = LightClient(env.g, env.evil)
        assert (await lc.account(env.payee))[0] == Account(BALANCE + 107, 0)
        for name, tamper, check in header_cases(env):
            err = await expect_refusal(env, tamper, check, name)
            if name.startswith("era change"):
                assert err.reason == ERA_CHANGE_WITHOUT_CERTIFICATE
                assert ERA_CHANGE_WITHOUT_CERTIFICATE in str(err) or "fork certificate" in str(
                    err)


async def test_malicious_server_each_query_forgery_is_refused(tmp_path: Path) -> None:
    async with chain_env(tmp_path) as env:
        cases = query_cases(env)
        # A genuine, producer-signed header of another height in the answer.
        h = env.tx_heights[-1] + 1
        earlier = await env.rpc.call("header", height=h - 1)
        cases.append(("signed header of another height",
                      on_query(lambda r: {**r, "signed_header": earlier}), "header_mismatch"))
        for name, tamper, check in cases:
            err = await expect_refusal(env, tamper, check, name)
            if check == "proof" and name == "value altered":
                assert err.reason == "root_mismatch"


async def test_producer_equivocating_on_a_state_root_is_caught_by_the_proof(tmp_path: Path
                                                                            ) -> None:
    """The producer signs a second header with another state root and the server serves it
    consistently (header sync and query): headers verify, the proof does not."""
    async with chain_env(tmp_path) as env:
        h = env.tx_heights[-1] + 1
        real = await env.rpc.call("header", height=h)
        fake = resigned(real, env.keys.producer, state_root=b"\x07" * 32)

        def tamper(method: str, params: dict[str, Any], result: Any) -> Any:
            if method == "header" and int(params["height"]) == h:
                return fake
            if method == "query":
                return {**result, "signed_header": fake}
            return result

        env.proxy.tamper = tamper
        lc = LightClient(env.g, env.evil)
        assert (await lc.header(h)).state_root == b"\x07" * 32  # the header itself verifies
        with pytest.raises(LightClientError) as ei:
            await lc.account(env.payee, height=h)
        assert ei.value.check == "proof"


async def test_headers_from_another_chain_with_the_same_genesis_break_linkage(tmp_path: Path
                                                                              ) -> None:
    """A second node with the same genesis and producer key builds a different chain; a
    server that switches to its headers part way is caught by the hash linkage."""
    async with chain_env(tmp_path, transfers=False) as env, \
            running(tmp_path / "fork", env.g, env.keys.producer, 7) as fork_url, \
            AsyncRPCClient(fork_url, timeout=WAIT_S) as fork:
        with trio.fail_after(WAIT_S):
            while True:
                st = await fork.call("status")
                if int(st["sync_info"]["latest_block_height"]) >= 20:
                    break
                await trio.sleep(0.01)
        top = min(await env.wait_height(3), 20)
        split = None
        for h in range(1, top + 1):
            if (await env.rpc.call("header", height=h))["hash"] != (
                    await fork.call("header", height=h))["hash"]:
                split = h
                break
        assert split is not None and split < top, "the two chains never differed"
        fork_headers = {h: await fork.call("header", height=h) for h in range(split + 1, 21)}

        def tamper(method: str, params: dict[str, Any], result: Any) -> Any:
            h = int(params.get("height", -1))
            return fork_headers.get(h, result) if method == "header" else result

        env.proxy.tamper = tamper
        lc = LightClient(env.g, env.evil)
        with pytest.raises(LightClientError) as ei:
            await lc.header(split + 1)
        assert ei.value.check == "linkage", str(ei.value)
        # Headers up to the split were genuine and stay trusted.
        assert lc.latest.height == split


async def test_node_of_another_chain_is_refused(tmp_path: Path) -> None:
    async with chain_env(tmp_path, transfers=False) as env:
        other, _ = make_genesis(accounts=3, balance=BALANCE, chain_id="other-chain")
        with pytest.raises(LightClientError) as ei:
            await LightClient(other, env.rpc).account(env.payee)
        assert ei.value.check == "chain_id"
        # Same chain id, another genesis (another producer): the first header is refused.
        same_id, _ = make_genesis(accounts=3, balance=BALANCE)
        with pytest.raises(LightClientError) as ei:
            await LightClient(same_id, env.rpc).header(1)
        assert ei.value.check == "producer"


# -- the verifier alone: eras slot in through one hook ----------------------------------------


def test_verifier_era_hook_is_where_a_fork_certificate_slots_in() -> None:
    g, keys = make_genesis()
    trust = TrustRoot.from_genesis(g)
    anchor = trust.anchor()

    def signed(key: PrivateKey, **kw: Any) -> SignedHeader:
        fields: dict[str, Any] = dict(chain_id=g.chain_id, era=0, height=1, prev_hash=g.hash,
                      time=g.genesis_time_ms + 1, tx_root=ZERO_HASH, results_root=ZERO_HASH,
                      state_root=trust.state_root, producer=key.public_key)
        fields.update(kw)
        h = Header(**fields)
        return SignedHeader(h, sign_header(key, h))

    v = HeaderVerifier(trust)
    t1 = v.verify(anchor, signed(keys.producer))
    assert t1.height == 1 and t1.hash == t1.signed.header.hash  # type: ignore[union-attr]
    new_producer = PrivateKey.generate()
    era1 = signed(new_producer, era=1, height=2, prev_hash=t1.hash, time=t1.time + 1)
    with pytest.raises(LightClientError) as ei:
        v.verify(t1, era1, certificate=None)
    assert (ei.value.check, ei.value.reason) == ("era", ERA_CHANGE_WITHOUT_CERTIFICATE)

    class WithCertificates(HeaderVerifier):
        """What the recovery work will do: check the certificate, then learn the era."""

        def accept_era_change(self, prev: TrustedHeader, sh: SignedHeader,
                              certificate: object | None) -> None:
            if certificate != ("cert", sh.header.era, new_producer.public_key):
                super().accept_era_change(prev, sh, certificate)
            self.producers[sh.header.era] = new_producer.public_key

    v2 = WithCertificates(trust)
    t1 = v2.verify(anchor, signed(keys.producer))
    with pytest.raises(LightClientError):
        v2.verify(t1, era1)
    t2 = v2.verify(t1, era1, certificate=("cert", 1, new_producer.public_key))
    assert t2.era == 1 and t2.height == 2


# -- the CLI -----------------------------------------------------------------------------------


def cli_args(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "node.cli", *map(str, args)]


def test_cli_light_account_get_header_against_a_real_node_process(tmp_path: Path) -> None:
    import subprocess
    import time

    g, keys = make_genesis(accounts=3, balance=BALANCE)
    home = make_home(tmp_path / "node", g, keys.producer, block_interval_ms=30)
    payee = keys.accounts[1].public_key

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli_args(*args), cwd=REPO, capture_output=True, text=True,
                              timeout=60, env=dict(os.environ))

    with running_node(home) as n, RPCClient(n.url) as c:
        t = make_tx(keys.accounts[0], g.chain_id, 0, Transfer(payee, 25))
        res = c.call("broadcast_tx_commit", tx=b64(t.raw))
        tx_h = int(res["height"])
        deadline = time.monotonic() + WAIT_S
        while int(c.call("status")["sync_info"]["latest_block_height"]) < tx_h + 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        common: list[str | Path] = ["--genesis", home.genesis_file, "--node", n.url]
        r = run("light", "account", payee.hex(), *common)
        assert r.returncode == 0, r.stdout + r.stderr
        out = json.loads(r.stdout)
        assert out["verified"] is True and out["balance"] == str(BALANCE + 25)
        assert out["nonce"] == "0" and int(out["height"]) >= tx_h and out["exists"] is True
        assert len(out["state_root"]) == 64
        # At a past height (before the transfer) and the genesis height.
        r = run("light", "account", payee.hex(), *common, "--height", str(tx_h - 1))
        assert json.loads(r.stdout)["balance"] == str(BALANCE), r.stderr
        r = run("light", "account", keys.accounts[0].public_key.hex(), *common,
                "--height", "0")
        assert json.loads(r.stdout)["height"] == "0", r.stderr
        # Any key, present and absent.
        r = run("light", "get", account_key(payee).hex(), *common, "--height", str(tx_h))
        out = json.loads(r.stdout)
        assert Account.decode(bytes.fromhex(out["value_hex"])) == Account(BALANCE + 25, 0)
        r = run("light", "get", account_key(b"\x09" * 32).hex(), *common)
        out = json.loads(r.stdout)
        assert r.returncode == 0 and out["exists"] is False and out["value"] is None
        assert out["verified"] is True
        # A header.
        r = run("light", "header", str(tx_h), *common)
        out = json.loads(r.stdout)
        assert out["verified"] is True and out["header"]["height"] == str(tx_h)
        assert out["block_hash"] == c.call("header", height=tx_h)["hash"]
        # Usage errors and an unreachable node are clean too.
        r = run("light", "get", "zz", *common)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        r = run("light", "account", payee.hex(), "--genesis", home.genesis_file,
                "--node", "http://127.0.0.1:1")
        assert r.returncode == 1 and "Error:" in r.stderr and "Traceback" not in r.stderr
        assert n.terminate() == 0


async def test_cli_light_account_against_a_malicious_server_refuses_cleanly(tmp_path: Path
                                                                           ) -> None:
    async with chain_env(tmp_path) as env:
        gfile = tmp_path / "genesis.json"
        gfile.write_text(env.g.to_json())
        h = env.tx_heights[-1] + 1
        base: list[str | Path] = ["light", "account", env.payee.hex(), "--genesis", gfile, "--node",
                env.proxy.url, "--height", str(h)]
        cases = [("proof", on_query(with_response(value=FORGED))),
                 ("signature", on_header(2, lambda a: resigned(a, OTHER))),
                 ("linkage", on_header(2, lambda a: resigned(a, env.keys.producer,
                                                            prev_hash=b"\x22" * 32)))]
        for check, tamper in cases:
            env.proxy.tamper = tamper
            r = await trio.run_process(cli_args(*base), cwd=REPO, capture_stdout=True,
                                       capture_stderr=True, check=False)
            out, err = r.stdout.decode(), r.stderr.decode()
            assert r.returncode == 1, (check, out, err)
            assert "Traceback" not in out + err
            assert err.startswith(f"Error: light client refused: {check}: "), (check, err)
            assert out == ""
        env.proxy.tamper = None
        r = await trio.run_process(cli_args(*base), cwd=REPO, capture_stdout=True,
                                   capture_stderr=True, check=False)
        assert r.returncode == 0, r.stderr.decode()
        assert json.loads(r.stdout)["balance"] == str(BALANCE + 107)


async def test_height_above_the_node_head_is_refused_without_syncing(tmp_path: Path) -> None:
    async with chain_env(tmp_path, transfers=False) as env:
        lc = LightClient(env.g, env.evil)
        with pytest.raises(LightClientError) as ei:
            await lc.header(10**9)
        assert ei.value.check == "response" and "latest height" in ei.value.message
        assert env.proxy.batches == []  # nothing was fetched


# -- exchange state: positions, markets, orders ------------------------------------------------

BTC = "BTC-USD-PERP"


async def trade(env: Env) -> tuple[int, int]:
    """Alice rests a sell of 0.5 BTC at 60,000; Bob buys 0.2 at market. Returns (the resting
    order's id, the height after both)."""
    from chain.tx import PlaceOrder

    alice, bob = env.keys.accounts[0], env.keys.accounts[1]
    heights = []
    order_id = None
    for key, p in ((alice, PlaceOrder(BTC, "sell", "limit", "gtc", 60_000 * 10**6,
                                      50_000_000, False, 0)),
                   (bob, PlaceOrder(BTC, "buy", "market", "ioc", 61_000 * 10**6,
                                    20_000_000, False, 0))):
        t = make_tx(key, env.g.chain_id, 0, p)
        res = await env.rpc.call("broadcast_tx_commit", tx=b64(t.raw))
        assert res["tx_result"]["code"] == 0, res
        heights.append(int(res["height"]))
        for ev in res["tx_result"]["events"]:
            if ev["type"] == "order_rested":
                order_id = int({a["key"]: a["value"] for a in ev["attributes"]}["order"])
    assert order_id is not None
    return order_id, await env.wait_height(heights[-1] + 1)


async def test_position_market_and_order_verify_and_forgeries_are_refused(tmp_path: Path
                                                                          ) -> None:
    from node.client.light import decode_value
    from state.records import MarketState, Position

    async with chain_env(tmp_path, transfers=False, markets=True, balance=10**12) as env:
        oid, h = await trade(env)
        alice, bob = (k.public_key for k in env.keys.accounts[:2])
        lc = LightClient(env.g, env.rpc)
        pos, v = await lc.position(bob, BTC, height=h)
        assert v.height == h and pos is not None
        assert (pos.size, pos.cost) == (20_000_000, 12_000 * 10**6)
        short, _ = await lc.position(alice, BTC, height=h)
        assert short is not None and short.size == -20_000_000
        assert (await lc.position(env.keys.accounts[2].public_key, BTC, height=h))[0] is None
        m, st, vm, vs = await lc.market(BTC, height=h)
        assert m is not None and st is not None and m.symbol == BTC
        assert vm.height == vs.height == h
        assert st.oracle_price == 60_000 * 10**6 and st.mode == "active"
        assert st.open_interest_long == st.open_interest_short == 20_000_000
        assert (await lc.market("NOPE-PERP", height=h))[:2] == (None, None)
        o, v = await lc.order(alice, oid, height=h)
        assert o is not None and v.height == h
        assert (o.id, o.owner, o.side, o.size, o.orig_size) == (
            oid, alice, "sell", 30_000_000, 50_000_000)
        assert (await lc.order(alice, oid + 1, height=h))[0] is None
        assert (await lc.order(bob, oid, height=h))[0] is None  # ids are per owner
        # Before the trade: no position, the order not placed yet.
        assert (await lc.position(bob, BTC, height=2))[0] is None
        # A value the proof does show but that is not the struct asked for is refused.
        with pytest.raises(LightClientError) as ei:
            decode_value(Account(1, 2).encode(), Position, "a position")
        assert ei.value.check == "value"
        # Forged values through the malicious proxy: each read is refused by the proof.
        forged_pos = b64(replace(pos, size=10**12).encode())
        forged_st = b64(replace(st, oracle_price=1, mode="paused").encode())
        forged_order = b64(replace(o, size=1).encode())
        reads: list[tuple[str | None, Callable[[LightClient], Any]]] = [
            (forged_pos, lambda c: c.position(bob, BTC, height=h)),
            (forged_st, lambda c: c.market(BTC, height=h)),
            (forged_order, lambda c: c.order(alice, oid, height=h)),
            (None, lambda c: c.order(alice, oid, height=h)),  # an open order claimed absent
        ]
        for forged, read in reads:
            change = {"value": forged} if forged else {"value": None, "exists": False}
            env.proxy.tamper = on_query(with_response(**change))
            with pytest.raises(LightClientError) as ei:
                await read(LightClient(env.g, env.evil))
            assert ei.value.check == "proof", str(ei.value)
        env.proxy.tamper = None
        assert isinstance((await lc.market(BTC))[1], MarketState)


async def test_cli_light_position_market_order(tmp_path: Path) -> None:
    async with chain_env(tmp_path, transfers=False, markets=True, balance=10**12) as env:
        oid, h = await trade(env)
        gfile = tmp_path / "genesis.json"
        gfile.write_text(env.g.to_json())
        bob = env.keys.accounts[1].public_key.hex()

        async def run(*args: str, node: str = env.url) -> tuple[int, str, str]:
            r = await trio.run_process(
                cli_args("light", *args, "--genesis", gfile, "--node", node,
                         "--height", str(h)),
                cwd=REPO, capture_stdout=True, capture_stderr=True, check=False)
            return r.returncode, r.stdout.decode(), r.stderr.decode()

        rc, out, err = await run("position", bob, BTC)
        assert rc == 0, err
        doc = json.loads(out)
        assert doc["verified"] is True and doc["height"] == str(h) and doc["exists"] is True
        assert (doc["size"], doc["entry_price"]) == ("20000000", str(60_000 * 10**6))
        assert len(doc["state_root"]) == 64
        rc, out, err = await run("market", BTC)
        doc = json.loads(out)
        assert rc == 0 and doc["verified"] is True, err
        assert doc["state"]["oracle_price"] == str(60_000 * 10**6)
        assert doc["state"]["open_interest_long"] == "20000000"
        assert doc["state"]["mode"] == "active" and doc["params"]["tick_size"] == "100000"
        alice = env.keys.accounts[0].public_key.hex()
        rc, out, err = await run("order", alice, str(oid))
        doc = json.loads(out)
        assert rc == 0 and doc["exists"] is True and doc["order"]["size"] == "30000000", err
        rc, out, err = await run("order", alice, str(oid + 7))
        assert rc == 0 and json.loads(out)["exists"] is False, err
        # Refusals are clean.
        env.proxy.tamper = on_query(with_response(value=FORGED))
        for args in (("position", bob, BTC), ("market", BTC), ("order", alice, str(oid))):
            rc, out, err = await run(*args, node=env.proxy.url)
            assert rc == 1 and out == "", (args, out, err)
            assert err.startswith("Error: light client refused: proof: "), (args, err)
        env.proxy.tamper = None
