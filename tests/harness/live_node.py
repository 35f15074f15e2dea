"""A producing node served on loopback inside the test's trio run, with an RPC client, and the
JSON-RPC error codes tests compare against.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypedDict, Unpack

import httpx
import pytest
import trio

from chain.codec import encode
from chain.crypto import TAG_TX, PrivateKey, signing_bytes
from chain.tx import Transaction, Transfer, make_tx
from genesis.builder import DevnetKeys
from genesis.format import Genesis
from node.client.rpc_client import AsyncRPCClient, RPCCallError
from node.dev.local import make_genesis, make_home
from node.node import Node, open_node
from node.serve import run_node

BALANCE = 1_000_000


HEX64 = re.compile(r"^[0-9a-f]{64}$")


WAIT_S = 10  # upper bound on any wait for blocks; normally a few hundred milliseconds


NEVER_MS = 3_600_000  # a block interval so long that no block is produced during a test


PARSE_ERROR = -32700


INVALID_REQUEST = -32600


METHOD_NOT_FOUND = -32601


INVALID_PARAMS = -32602


@dataclass
class Live:
    node: Node
    client: AsyncRPCClient
    http: httpx.AsyncClient
    url: str
    g: Genesis
    keys: DevnetKeys

    def transfer(self, sender: PrivateKey, nonce: int, amount: int,
                 to: PrivateKey | None = None) -> Transaction:
        recipient = (to or self.keys.accounts[1]).public_key
        return make_tx(sender, self.g.chain_id, nonce, Transfer(recipient, amount))

    async def post(self, body: bytes | str, **headers: str) -> httpx.Response:
        if isinstance(body, str):
            body = body.encode()
        return await self.client.raw_post(body, {"content-type": "application/json", **headers})

    async def post_json(self, obj: Any) -> httpx.Response:
        return await self.post(json.dumps(obj))

    async def height(self) -> int:
        st = await self.client.call("status")
        return int(st["sync_info"]["latest_block_height"])

    async def wait_height(self, height: int) -> int:
        with trio.fail_after(WAIT_S):
            while True:
                h = await self.height()
                if h >= height:
                    return h
                await trio.sleep(0.01)

    async def assert_still_serving(self) -> None:
        """status answers with a sane document and blocks keep coming (if producing)."""
        st = await self.client.call("status")
        assert st["node_info"]["network"] == self.g.chain_id
        assert st["node_info"]["genesis_hash"] == self.g.hash.hex()
        h = int(st["sync_info"]["latest_block_height"])
        if self.node.cfg.producer.block_interval_ms < NEVER_MS:
            await self.wait_height(h + 1)


class RPCOverrides(TypedDict, total=False):
    """[rpc] settings a test may override (fields of ``node.config.RPCConfig``)."""

    laddr: str
    max_body_bytes: int
    timeout_broadcast_tx_commit_ms: int


@asynccontextmanager
async def live_node(tmp_path: Path, *, block_interval_ms: int = 50, mempool_size: int = 100_000,
                    accounts: int = 3, **rpc: Unpack[RPCOverrides]) -> AsyncIterator[Live]:
    """A producing node serving RPC on a free port; ``rpc`` overrides [rpc] settings."""
    g, keys = make_genesis(accounts=accounts, balance=BALANCE)
    home = make_home(tmp_path / "node", g, keys.producer, block_interval_ms=block_interval_ms,
                     mempool_size=mempool_size)
    if rpc:
        cfg = home.load_config()
        home.write_config(replace(cfg, rpc=replace(cfg.rpc, **rpc)))
    node = open_node(home)
    try:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(run_node, node)
            assert url.startswith("http://127.0.0.1:")
            assert (home.data_dir / "rpc_address").read_text().strip() == url
            async with AsyncRPCClient(url, timeout=WAIT_S) as client, \
                    httpx.AsyncClient(base_url=url, timeout=WAIT_S) as http:
                yield Live(node, client, http, url, g, keys)
            nursery.cancel_scope.cancel()
    finally:
        node.close()


async def call_error(live: Live, method: str, **params: Any) -> RPCCallError:
    with pytest.raises(RPCCallError) as ei:
        await live.client.call(method, **params)
    return ei.value


def manual_tx(key: PrivateKey, chain_id: str, nonce: int, type_: str,
              payload: dict[str, object]) -> bytes:
    """A correctly signed envelope built by hand (make_tx refuses a zero amount)."""
    body = {"chain_id": chain_id, "nonce": nonce, "payload": payload,
            "sender": key.public_key, "type": type_}
    return encode({**body, "sig": key.sign(signing_bytes(TAG_TX, chain_id, body))})


def _req(id_: Any, method: str, params: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": id_, "method": method, "params": params}).encode()
