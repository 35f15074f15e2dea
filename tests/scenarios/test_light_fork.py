"""A light client across a rollback: it follows the new era only through a fork certificate
with the genesis operators' threshold of signatures, verifies proofs in the new era, and
refuses the abandoned era afterwards; forged or under-signed certificates are refused."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from chain.admin import ForkCertificate, SignedForkCertificate, sign_fork
from chain.crypto import PrivateKey
from chain.tx import Transfer, make_tx
from node.client.admin_client import AdminClient
from node.client.light import LightClient
from node.client.rpc_client import AsyncRPCClient, RPCCallError, RPCClient
from node.client.trust import LightClientError
from node.dev.local import make_genesis, make_home, running_node
from node.wire_json import b64
from state.records import Account
from state.schema import account_key


class Proxy:
    """Passes calls through, except the fork certificate, which the test replaces."""

    def __init__(self, inner: AsyncRPCClient, cert: SignedForkCertificate | None) -> None:
        self.inner = inner
        self.cert = cert

    async def call(self, method: str, **params: Any) -> Any:
        if method == "fork_certificate" and self.cert is not None:
            return {"certificate": self.cert.encode().hex()}
        return await self.inner.call(method, **params)

    async def call_batch(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        return await self.inner.call_batch(calls)


def wait_height(c: RPCClient, h: int) -> None:
    deadline = time.monotonic() + 30
    while int(c.call("status")["sync_info"]["latest_block_height"]) < h:
        assert time.monotonic() < deadline
        time.sleep(0.02)


async def test_light_client_follows_a_rollback_only_with_a_valid_certificate(
        tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=2, balance=10**9, operators=3, threshold=2)
    a, b = keys.accounts
    home = make_home(tmp_path / "n", g, keys.producer, block_interval_ms=30)
    with running_node(home) as n, RPCClient(n.url) as c, AdminClient(
            (home.root / "data" / "admin_address").read_text().strip(),
            list(keys.operators[:2])) as adm:
        wait_height(c, 3)
        fork_at = int(c.call("status")["sync_info"]["latest_block_height"])
        for i in range(3):  # these transfers will be abandoned
            t = make_tx(a, g.chain_id, i, Transfer(b.public_key, 100))
            assert c.call("broadcast_tx_commit", tx=b64(t.raw))["tx_result"]["code"] == 0
        async with AsyncRPCClient(n.url) as rpc:
            lc = LightClient(g, rpc)
            old = await lc.header()
            assert old.era == 0 and old.height > fork_at
            acct = await lc.get_verified(account_key(a.public_key))
            assert Account.decode(acct.value or b"").nonce == 3
            abandoned_header = await rpc.call("header", height=old.height)
            adm.run("halt", {"reason": "drill"})
            adm.rollback("drill", to_height=fork_at)
            adm.resume()
            wait_height(c, old.height + 2)
            # Forged certificates are refused before anything is believed.
            plan = (await rpc.call("fork_certificate", era="1"))
            cert = ForkCertificate(g.chain_id, 1, int(plan["from_height"]), fork_at,
                                   bytes.fromhex(plan["to_block_hash"]),
                                   bytes.fromhex(plan["state_root"]), plan["reason"])
            cases = {
                "under threshold": sign_fork(cert, [keys.operators[0]], 2),
                "unknown key": sign_fork(cert, [keys.operators[0], PrivateKey.generate()], 2),
            }
            for name, forged in cases.items():
                bad = LightClient(g, Proxy(rpc, forged))
                with pytest.raises(LightClientError) as e:
                    await bad.header()
                assert e.value.reason == "certificate_signatures", name
            # With the node's real certificate: follows, and proofs work in era 1.
            new = await lc.header()
            assert new.era == 1 and new.height >= old.height
            assert lc.trusted[fork_at + 1].era == 1
            acct = await lc.get_verified(account_key(a.public_key))
            assert Account.decode(acct.value or b"").nonce == 0  # the transfers are gone
            # A header of the abandoned era is refused from now on.
            from node.client.trust import decode_header_answer

            sh = decode_header_answer(abandoned_header, "old")
            with pytest.raises(LightClientError) as e:
                lc.verifier.verify(lc.latest, sh)
            assert e.value.reason == "abandoned_era"
        with pytest.raises(RPCCallError):
            c.call("fork_certificate", era="7")
        assert n.terminate() == 0
