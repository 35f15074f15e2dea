"""``appchain tx ...``: sign a transaction with a key file and send it to a node.
"""

from __future__ import annotations

from pathlib import Path

import click

from chain.errors import ChainError
from chain.tx import (
    CancelAll,
    CancelOrder,
    Deposit,
    OraclePrice,
    Payload,
    PlaceOrder,
    Transfer,
    Withdraw,
    make_tx,
)
from node.cli.common import F, friendly, hex32, node_option, parse_fixed, print_json
from node.client.rpc_client import RPCClient
from node.keyfile import read_key
from node.wire_json import b64


@click.group()
def tx() -> None:
    """Sign and send transactions."""


def send_tx(key_file: Path, payload: Payload, node_url: str, nonce: int | None,
          wait: bool) -> None:
    key = read_key(key_file)
    with RPCClient(node_url) as c:
        st = c.call("status")
        chain_id = st["node_info"]["network"]
        if nonce is None:
            nonce = int(c.call("account", address=key.public_key.hex())["next_nonce"])
        t = make_tx(key, chain_id, nonce, payload)
        if wait:
            res = c.call("broadcast_tx_commit", tx=b64(t.raw))
            print_json(res)
            if res["tx_result"]["code"] != 0:
                raise click.ClickException(
                    f"included at height {res['height']} but failed: {res['tx_result']['log']}")
        else:
            print_json(c.call("broadcast_tx_sync", tx=b64(t.raw)))


tx_options = [
    click.option("--key", "key_file", required=True, type=click.Path(path_type=Path),
                 help="Key file of the sender."),
    click.option("--nonce", type=click.IntRange(0), default=None,
                 help="Override the nonce (default: ask the node)."),
    click.option("--wait/--no-wait", default=True, show_default=True,
                 help="Wait for the block (broadcast_tx_commit) or only the mempool."),
    node_option,
]


def with_tx_options(fn: F) -> F:
    for opt in reversed(tx_options):
        fn = opt(fn)
    return fn


@tx.command("transfer")
@click.option("--to", "to", required=True, help="Recipient address (64 hex).")
@click.option("--amount", required=True, type=click.IntRange(1, 2**64 - 1))
@with_tx_options
@friendly
def tx_transfer(to: str, amount: int, key_file: Path, nonce: int | None, wait: bool,
                node_url: str) -> None:
    """Transfer settlement units to another account."""
    send_tx(key_file, Transfer(hex32(to, "--to"), amount), node_url, nonce, wait)


@tx.command("deposit")
@click.option("--to", "to", required=True, help="Credited address (64 hex).")
@click.option("--amount", required=True, type=click.IntRange(1, 2**64 - 1))
@with_tx_options
@friendly
def tx_deposit(to: str, amount: int, key_file: Path, nonce: int | None, wait: bool,
               node_url: str) -> None:
    """Deposit new units (the key must be the genesis faucet)."""
    send_tx(key_file, Deposit(hex32(to, "--to"), amount), node_url, nonce, wait)


@tx.command("withdraw")
@click.option("--amount", type=click.IntRange(1, 2**64 - 1), default=None,
              help="Amount in base units (micro-USDC).")
@click.option("--usd", default=None, help="Amount in USD, an exact decimal (e.g. 12.5).")
@with_tx_options
@friendly
def tx_withdraw(amount: int | None, usd: str | None, key_file: Path, nonce: int | None,
                wait: bool, node_url: str) -> None:
    """Withdraw collateral (refused below your initial margin)."""

    if (amount is None) == (usd is None):
        raise click.UsageError("give exactly one of --amount and --usd")
    units = amount if amount is not None else parse_fixed(usd or "", 6, "--usd")
    if units > 2**64 - 1:
        raise click.BadParameter(f"{usd!r} is too large", param_hint="--usd")
    send_tx(key_file, Withdraw(units), node_url, nonce, wait)


@tx.command("oracle")
@click.option("--market", required=True, help="Market symbol, e.g. BTC-USD-PERP.")
@click.option("--price", required=True, type=click.IntRange(1, 2**64 - 1),
              help="Micro-USDC per whole base unit (60000 USD = 60000000000).")
@click.option("--time", "obs_time", type=click.IntRange(0), default=None,
              help="Observation time in ms since the epoch (default: now).")
@with_tx_options
@friendly
def tx_oracle(market: str, price: int, obs_time: int | None, key_file: Path, nonce: int | None,
              wait: bool, node_url: str) -> None:
    """Post an oracle price (the key must be a genesis oracle)."""
    import time as _time


    when = obs_time if obs_time is not None else _time.time_ns() // 1_000_000
    send_tx(key_file, OraclePrice(market, price, when), node_url, nonce, wait)


@tx.command("order")
@click.option("--market", "market_", required=True, help="Market symbol, e.g. BTC-USD-PERP.")
@click.option("--side", required=True, type=click.Choice(["buy", "sell"]))
@click.option("--type", "kind", default="limit", show_default=True,
              type=click.Choice(["limit", "market", "take_profit", "stop_loss"]))
@click.option("--trigger-price", "trigger", default=None,
              help="Take-profit / stop-loss: the oracle price in USD that triggers it.")
@click.option("--price", required=True,
              help="Limit price in USD (for a market order: the worst price accepted).")
@click.option("--size", required=True, help="Size in base units, e.g. 0.25 (BTC).")
@click.option("--tif", default=None, type=click.Choice(["gtc", "post_only", "ioc"]),
              help="Time in force (default: gtc for limit, ioc for market).")
@click.option("--reduce-only", is_flag=True)
@with_tx_options
@friendly
def tx_order(market_: str, side: str, kind: str, trigger: str | None, price: str, size: str,
             tif: str | None, reduce_only: bool, key_file: Path, nonce: int | None,
             wait: bool, node_url: str) -> None:
    """Place an order (prices in USD and sizes in base units, converted exactly).

    A take-profit / stop-loss needs --trigger-price; --price is then the worst price it may
    trade at once triggered."""

    order = PlaceOrder(market_, side, kind, tif or ("gtc" if kind == "limit" else "ioc"),
                       parse_fixed(price, 6, "--price"), parse_fixed(size, 8, "--size"),
                       reduce_only,
                       parse_fixed(trigger, 6, "--trigger-price") if trigger is not None else 0)
    try:
        order.check(b"")
    except ChainError as e:
        raise click.ClickException(e.message) from e
    send_tx(key_file, order, node_url, nonce, wait)


@tx.command("cancel")
@click.option("--market", "market_", required=True)
@click.option("--order-id", required=True, type=click.IntRange(0, 2**64 - 1),
              help="The order's id: the nonce of the transaction that placed it.")
@with_tx_options
@friendly
def tx_cancel(market_: str, order_id: int, key_file: Path, nonce: int | None, wait: bool,
              node_url: str) -> None:
    """Cancel one of your open orders."""

    send_tx(key_file, CancelOrder(market_, order_id), node_url, nonce, wait)


@tx.command("cancel-all")
@click.option("--market", "market_", default="", help="Only this market (default: all).")
@with_tx_options
@friendly
def tx_cancel_all(market_: str, key_file: Path, nonce: int | None, wait: bool,
                  node_url: str) -> None:
    """Cancel every open order of yours (in one market, or everywhere)."""

    send_tx(key_file, CancelAll(market_), node_url, nonce, wait)
