"""Free spam, on a real node subprocess over real RPC (issue 11, findings 5 and 6).

* Transfers from thousands of unfunded fresh keys are refused at admission (1013
  ``no_account``): none is included, no account record is created for any, block space is
  not consumed, and an honest transfer sent meanwhile commits.
* One sender flooding the mempool holds at most ``mempool.max_txs_per_sender`` of it, so an
  honest sender's ``broadcast_tx_commit`` still commits.
"""

from __future__ import annotations

from pathlib import Path

import trio

from chain.crypto import PrivateKey
from chain.tx import Transfer, make_tx
from genesis.format import Genesis
from node.client.rpc_client import AsyncRPCClient, RPCCallError
from node.dev.local import make_genesis, make_home, running_node
from node.wire_json import b64
from state.schema import account_key
from state.store import Store

FRESH_SENDERS = 3_000
BATCH = 100  # the server's largest batch (node/api/server.py MAX_BATCH)


async def height_of(c: AsyncRPCClient) -> int:
    return int((await c.call("status"))["sync_info"]["latest_block_height"])


async def wait_height(c: AsyncRPCClient, height: int, within_s: float = 30) -> int:
    with trio.fail_after(within_s):
        while True:
            h = await height_of(c)
            if h >= height:
                return h
            await trio.sleep(0.02)


async def block_txs(c: AsyncRPCClient, first: int, last: int) -> list[str]:
    out: list[str] = []
    for h in range(first, last + 1):
        out += (await c.call("block", height=h))["block"]["data"]["txs"] or []
    return out


async def test_unfunded_fresh_keys_are_refused_and_leave_no_trace(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=2, balance=10**9)
    home = make_home(tmp_path / "node", g, keys.producer, block_interval_ms=100)
    a, b = keys.accounts
    fresh = [PrivateKey.generate() for _ in range(FRESH_SENDERS)]
    spam = [make_tx(k, g.chain_id, 0, Transfer(a.public_key, 1)) for k in fresh]
    with running_node(home) as n:
        async with AsyncRPCClient(n.url, timeout=120) as c:
            start = await wait_height(c, 1)
            codes: dict[int, int] = {}

            async def flood() -> None:
                for i in range(0, len(spam), BATCH):
                    answers = await c.call_batch([("broadcast_tx_sync", {"tx": b64(t.raw)})
                                                  for t in spam[i:i + BATCH]])
                    for ans in answers:
                        code = ans.code if isinstance(ans, RPCCallError) else 0
                        codes[code] = codes.get(code, 0) + 1

            honest = make_tx(a, g.chain_id, 0, Transfer(b.public_key, 7))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                res = await c.call("broadcast_tx_commit", tx=b64(honest.raw))
            assert res["tx_result"]["code"] == 0
            assert codes == {1013: FRESH_SENDERS}  # every one refused, as no_account
            assert (await c.call("num_unconfirmed_txs"))["n_txs"] == 0
            end = await wait_height(c, await height_of(c) + 2)
            included = await block_txs(c, start, end)
            assert included == [b64(honest.raw)]  # block space went to the honest tx only
            for i in range(0, len(fresh), BATCH):
                accts = await c.call_batch([("account", {"address": k.public_key.hex()})
                                            for k in fresh[i:i + BATCH]])
                assert all(not isinstance(x, RPCCallError) and x["exists"] is False
                           and x["nonce"] == "0" for x in accts)
        assert n.terminate() == 0
    with Store(home.store_dir) as s:  # and in the store itself, after the node stopped
        assert all(s.state_get(account_key(k.public_key)) is None for k in fresh)
        assert s.state_get(account_key(a.public_key)) is not None


async def _flood(c: AsyncRPCClient, g: Genesis, key: PrivateKey, stop: trio.Event,
                 refusals: dict[int, int], full: trio.Event, admitted: trio.Event) -> None:
    """Send the key's next transactions as fast as the node answers, until ``stop``. The
    first time the node refuses some (the mempool or the sender's share is full), set
    ``full`` and pause until ``admitted``: the honest senders arrive at a full mempool."""
    me = key.public_key
    while not stop.is_set():
        nxt = int((await c.call("account", address=me.hex()))["next_nonce"])
        batch = [make_tx(key, g.chain_id, nxt + i, Transfer(me, 1)) for i in range(100)]
        answers = await c.call_batch([("broadcast_tx_sync", {"tx": b64(t.raw)})
                                      for t in batch])
        for ans in answers:
            if isinstance(ans, RPCCallError):
                refusals[ans.code] = refusals.get(ans.code, 0) + 1
        if refusals and not full.is_set():
            full.set()
            await admitted.wait()


async def test_one_sender_flooding_does_not_starve_honest_senders(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=6, balance=10**9)
    # Slow blocks of few transactions: a FIFO mempool without shares stays full of the
    # flood, and the honest senders' transactions are refused (1008).
    home = make_home(tmp_path / "node", g, keys.producer, block_interval_ms=1000,
                     max_txs_per_block=40, mempool_size=300, max_txs_per_sender=30)
    flooder, *honest = keys.accounts
    with running_node(home) as n:
        async with AsyncRPCClient(n.url, timeout=60) as c:
            await wait_height(c, 1)
            stop, full, admitted = trio.Event(), trio.Event(), trio.Event()
            refusals: dict[int, int] = {}
            results: dict[int, int] = {}

            async def honest_commit(i: int, key: PrivateKey) -> None:
                t = make_tx(key, g.chain_id, 0, Transfer(flooder.public_key, 1))
                res = await c.call("broadcast_tx_commit", tx=b64(t.raw))
                results[i] = res["tx_result"]["code"]

            async def all_admitted() -> None:
                while True:  # each honest tx is pending (or already committed)
                    accts = await c.call_batch([("account", {"address": k.public_key.hex()})
                                                for k in honest])
                    if all(not isinstance(x, RPCCallError) and x["next_nonce"] == "1"
                           for x in accts):
                        admitted.set()
                        return
                    await trio.sleep(0.01)

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_flood, c, g, flooder, stop, refusals, full, admitted)
                    await full.wait()
                    async with trio.open_nursery() as inner:
                        for i, k in enumerate(honest):
                            inner.start_soon(honest_commit, i, k)
                        inner.start_soon(all_admitted)
                    stop.set()
            assert results == {i: 0 for i in range(len(honest))}
            assert refusals.get(1015, 0) > 0  # the flooder was held to its share
            pending = await c.call("account", address=flooder.public_key.hex())
            assert int(pending["next_nonce"]) - int(pending["nonce"]) <= 30
        assert n.terminate() == 0
