"""Reads from a node over its RPC: ``status``, ``account``, ``tx-info``, ``orderbook``,
``orders``, ``market``.
"""

from __future__ import annotations

from typing import Any

import click

from node.cli.common import friendly, hex32, node_option, print_json
from node.client.rpc_client import RPCClient


@click.command()
@node_option
@friendly
def status(node_url: str) -> None:
    """Show the node's head, chain and mempool."""
    with RPCClient(node_url) as c:
        print_json(c.call("status"))


@click.command()
@click.argument("address")
@node_option
@friendly
def account(address: str, node_url: str) -> None:
    """Show an account's balance and nonce."""
    with RPCClient(node_url) as c:
        print_json(c.call("account", address=hex32(address, "ADDRESS").hex()))


@click.command("tx-info")
@click.argument("tx_hash")
@node_option
@friendly
def tx_info(tx_hash: str, node_url: str) -> None:
    """Show a committed transaction and its result."""
    with RPCClient(node_url) as c:
        print_json(c.call("tx", hash=hex32(tx_hash, "TX_HASH").hex()))


@click.command()
@click.argument("symbol")
@click.option("--depth", default=10, show_default=True, type=click.IntRange(1, 500))
@node_option
@friendly
def orderbook(symbol: str, depth: int, node_url: str) -> None:
    """Show a market's book: [price, size, orders] per level, best first."""
    with RPCClient(node_url) as c:
        print_json(c.call("orderbook", symbol=symbol, depth=depth))


@click.command()
@click.argument("address")
@click.option("--market", "market_", default=None)
@node_option
@friendly
def orders(address: str, market_: str | None, node_url: str) -> None:
    """Show an account's open orders."""
    params: dict[str, Any] = {"address": hex32(address, "ADDRESS").hex()}
    if market_:
        params["symbol"] = market_
    with RPCClient(node_url) as c:
        print_json(c.call("orders", **params))


@click.command()
@click.argument("symbol", required=False)
@node_option
@friendly
def market(symbol: str | None, node_url: str) -> None:
    """Show one market (parameters, oracle price, funding index, open interest) or all."""
    with RPCClient(node_url) as c:
        print_json(c.call("market", symbol=symbol) if symbol else c.call("markets"))
