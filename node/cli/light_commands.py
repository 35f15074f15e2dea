"""``appchain light ...``: verified reads through the light client, which trusts only the
genesis file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from genesis.format import load_genesis
from node.api.exchange_json import order_json
from node.cli.common import F, friendly, height_option, hex32, node_option, print_json
from node.client.light import LightClient, decode_account
from node.client.rpc_client import AsyncRPCClient
from node.client.trust import LightClientError
from node.wire_json import b64, header_json
from state.schema import account_key


@click.group()
def light() -> None:
    """Read state through the light client: trusts only a genesis file, verifies the rest.

    Headers are checked from the genesis up (producer signature, chain id, era, height,
    hash linkage, time) and values against a Merkle proof under the verified state root.
    A failed check ends with "Error: light client refused: CHECK: MESSAGE", exit status 1.
    """


light_options = [
    click.option("--genesis", "genesis_file", required=True, type=click.Path(path_type=Path),
                 help="Genesis file of the chain: the light client's only trust root."),
    node_option,
]


def with_light_options(fn: F) -> F:
    for opt in reversed(light_options):
        fn = opt(fn)
    return fn


def light_run(genesis_file: Path, node_url: str,
               work: Callable[[Any], Any]) -> Any:
    """Run ``await work(light_client)`` under trio; a refusal becomes a clean error."""
    import trio


    g = load_genesis(genesis_file)

    async def go() -> Any:
        async with AsyncRPCClient(node_url) as rpc:
            return await work(LightClient(g, rpc))

    try:
        return trio.run(go)
    except LightClientError as e:
        raise click.ClickException(f"light client refused: {e.check}: {e.message}") from e


def verified_json(th: Any) -> dict[str, Any]:
    return {"height": str(th.height), "block_hash": th.hash.hex(),
            "state_root": th.state_root.hex(), "verified": True}


@light.command("account")
@click.argument("address")
@with_light_options
@height_option
@friendly
def light_account(address: str, genesis_file: Path, node_url: str,
                   height: int | None) -> None:
    """Verified balance and nonce of ADDRESS."""

    addr = hex32(address, "ADDRESS")

    async def work(lc: Any) -> Any:
        return await lc.get_verified(account_key(addr), height)

    v = light_run(genesis_file, node_url, work)
    acct = decode_account(v.value)
    print_json({"address": addr.hex(), "balance": str(acct.balance),
                 "nonce": str(acct.nonce), "exists": v.value is not None,
                 **verified_json(v.header)})


@light.command("get")
@click.argument("key_hex")
@with_light_options
@height_option
@friendly
def light_get(key_hex: str, genesis_file: Path, node_url: str, height: int | None) -> None:
    """Verified value of any state key (KEY_HEX: hex of the key, e.g. of acct/<address>)."""
    try:
        key = bytes.fromhex(key_hex.removeprefix("0x"))
    except ValueError:
        key = b""
    if not key or len(key) > 1024:
        raise click.BadParameter("must be hex of a state key (1 to 1024 bytes)",
                                 param_hint="KEY_HEX")

    async def work(lc: Any) -> Any:
        return await lc.get_verified(key, height)

    v = light_run(genesis_file, node_url, work)
    print_json({"key": key.hex(), "exists": v.value is not None,
                 "value": None if v.value is None else b64(v.value),
                 "value_hex": None if v.value is None else v.value.hex(),
                 **verified_json(v.header)})


@light.command("position")
@click.argument("address")
@click.argument("market_symbol", metavar="MARKET")
@with_light_options
@height_option
@friendly
def light_position(address: str, market_symbol: str, genesis_file: Path, node_url: str,
                   height: int | None) -> None:
    """Verified position of ADDRESS in MARKET (pos/<address>/<market>; absent: flat)."""
    addr = hex32(address, "ADDRESS")

    async def work(lc: Any) -> Any:
        return await lc.position(addr, market_symbol, height)

    pos, v = light_run(genesis_file, node_url, work)
    print_json({"address": addr.hex(), "market": market_symbol, "exists": pos is not None,
                 "size": str(pos.size if pos else 0), "cost": str(pos.cost if pos else 0),
                 "entry_price": None if pos is None or pos.size == 0
                 else str(pos.entry_price()),
                 "realized_pnl": str(pos.realized_pnl if pos else 0),
                 "funding_index": None if pos is None else str(pos.funding_index),
                 **verified_json(v.header)})


@light.command("market")
@click.argument("symbol")
@with_light_options
@height_option
@friendly
def light_market(symbol: str, genesis_file: Path, node_url: str, height: int | None) -> None:
    """Verified parameters and state of market SYMBOL (mkt/ and mks/<symbol>): oracle price,
    funding index, open interest, mode."""
    async def work(lc: Any) -> Any:
        return await lc.market(symbol, height)

    m, st, vm, _ = light_run(genesis_file, node_url, work)
    print_json({"symbol": symbol, "exists": m is not None and st is not None,
                 "params": None if m is None else {
                     k: (v if isinstance(v, str) else str(v)) for k, v in m.to_obj().items()
                     if k != "symbol"},
                 "state": None if st is None else {
                     k: (v if isinstance(v, str) else str(v)) for k, v in st.to_obj().items()},
                 **verified_json(vm.header)})


@light.command("order")
@click.argument("owner", metavar="OWNER")
@click.argument("order_id", type=click.IntRange(0, 2**64 - 1), metavar="ID")
@with_light_options
@height_option
@friendly
def light_order(owner: str, order_id: int, genesis_file: Path, node_url: str,
                height: int | None) -> None:
    """Verified open order ID of OWNER (ID: the nonce of the transaction that placed it;
    ord/<owner><id>; absent: filled, cancelled or never placed)."""

    owner_b = hex32(owner, "owner")

    async def work(lc: Any) -> Any:
        return await lc.order(owner_b, order_id, height)

    o, v = light_run(genesis_file, node_url, work)
    print_json({"owner": owner_b.hex(), "id": str(order_id), "exists": o is not None,
                 "order": None if o is None else order_json(o), **verified_json(v.header)})


@light.command("header")
@click.argument("height", required=False, type=click.IntRange(0, 2**64 - 1))
@with_light_options
@friendly
def light_header(height: int | None, genesis_file: Path, node_url: str) -> None:
    """Verified header at HEIGHT (default: the node's latest)."""

    async def work(lc: Any) -> Any:
        return await lc.header(height)

    th = light_run(genesis_file, node_url, work)
    out = verified_json(th)
    if th.signed is None:
        out["genesis"] = True
    else:
        out["header"] = header_json(th.signed.header)
        out["signature"] = th.signed.sig.hex()
    print_json(out)
