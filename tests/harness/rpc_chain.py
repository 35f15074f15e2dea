"""A chain driven over a live node's RPC: commit transactions with the sender's next nonce,
read block events, and reach the admin endpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chain.crypto import PrivateKey
from chain.tx import Payload, PlaceOrder, make_tx
from node.client.rpc_client import RPCClient
from node.wire_json import b64
from tests.harness.exchange import BTC, px

SIZE = 10**8


class Chain:
    def __init__(self, c: RPCClient, chain_id: str) -> None:
        self.c = c
        self.chain_id = chain_id

    def commit(self, key: PrivateKey, payload: Payload, ok: bool = True) -> dict[str, Any]:
        nonce = int(self.c.call("account", address=key.public_key.hex())["next_nonce"])
        t = make_tx(key, self.chain_id, nonce, payload)
        res = self.c.call("broadcast_tx_commit", tx=b64(t.raw))
        if ok:
            assert res["tx_result"]["code"] == 0, res
        return dict(res, hash=t.hash.hex(), nonce=str(nonce))

    def height(self) -> int:
        return int(self.c.call("status")["sync_info"]["latest_block_height"])

    def end_events(self, lo: int, hi: int, kind: str) -> list[dict[str, str]]:
        out = []
        for h in range(lo, hi + 1):
            for e in self.c.call("block_results", height=h)["end_block_events"]:
                if e["type"] == kind:
                    out.append({a["key"]: a["value"] for a in e["attributes"]})
        return out


def order(side: str, kind: str, price: float, size: float, tif: str = "gtc",
          trigger: float = 0) -> PlaceOrder:
    return PlaceOrder(BTC, side, kind, tif, px(price), int(size * SIZE),
                      kind in ("take_profit", "stop_loss"), px(trigger) if trigger else 0)


def admin_url(root: Path) -> str:
    return (root / "data" / "admin_address").read_text().strip()
