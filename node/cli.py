"""The ``appchain`` command line.

Every expected failure (bad input, missing file, node unreachable, refused transaction) ends
with a one-line ``Error: ...`` and exit status 1, never a traceback; usage errors exit 2.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from chain.errors import ChainError
from chain.tx import Deposit, Payload, Transfer, make_tx
from node import __version__
from node.client import DEFAULT_NODE, NodeUnreachable, RPCCallError, RPCClient
from node.config import AdminConfig, ConfigError, Home, NodeConfig, RPCConfig, parse_laddr
from node.keyfile import KeyFileError, read_key, write_key
from node.node import NodeError
from node.signer import DoubleSignRefused
from node.views import b64

F = TypeVar("F", bound=Callable[..., Any])

EXPECTED_ERRORS = (ChainError, ConfigError, KeyFileError, NodeError, RPCCallError,
                   NodeUnreachable, DoubleSignRefused, OSError)


def friendly(fn: F) -> F:
    """Turn expected exceptions into ``Error: message`` and exit status 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RPCCallError as e:
            raise click.ClickException(f"node refused: {e.message} (code {e.code})") from e
        except EXPECTED_ERRORS as e:
            raise click.ClickException(str(e)) from e

    return wrapper  # type: ignore[return-value]


def _print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


def _hex32(value: str, what: str) -> bytes:
    v = value.removeprefix("0x")
    try:
        b = bytes.fromhex(v)
    except ValueError:
        b = b""
    if len(b) != 32:
        raise click.BadParameter(f"{what} must be 64 hex characters", param_hint=what)
    return b


def _now_rfc3339() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def main(log_level: str) -> None:
    """appchain: a perpetual-futures app-chain node built for safe halt, rollback and replay."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("hypercorn").setLevel(logging.WARNING)


@main.command()
def version() -> None:
    """Print the node version."""
    click.echo(__version__)


# -- genesis --------------------------------------------------------------------------------


@main.group()
def genesis() -> None:
    """Create and check genesis files."""


@genesis.command("new")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder to create: genesis.json and keys/*.json go there.")
@click.option("--chain-id", default="appchain-devnet", show_default=True)
@click.option("--accounts", default=10, show_default=True, type=click.IntRange(0, 100_000),
              help="Funded accounts to create (keys/account-N.json).")
@click.option("--balance", default=10**12, show_default=True, type=click.IntRange(0),
              help="Initial balance of each account, in base units.")
@click.option("--operators", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--threshold", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Operator signatures an admin command needs.")
@click.option("--oracles", default=1, show_default=True, type=click.IntRange(0, 64))
@click.option("--genesis-time", default=None, help="RFC 3339 time (default: now).")
@click.option("--markets/--no-markets", default=True, show_default=True,
              help="Include the devnet markets BTC-USD-PERP and ETH-USD-PERP.")
@click.option("--insurance-fund", default=10**12, show_default=True, type=click.IntRange(0),
              help="Initial balance of the insurance fund (the account 00..00), in base "
                   "units; only with --markets.")
@click.option("--funding-interval-ms", default=60_000, show_default=True,
              type=click.IntRange(1000, 86_400_000),
              help="Funding interval of the devnet markets.")
@friendly
def genesis_new(out_dir: Path, chain_id: str, accounts: int, balance: int, operators: int,
                threshold: int, oracles: int, genesis_time: str | None, markets: bool,
                insurance_fund: int, funding_interval_ms: int) -> None:
    """Build a devnet genesis with fresh keys for every role."""
    from genesis.builder import build_devnet, devnet_markets
    from genesis.format import parse_genesis, parse_time

    if threshold > operators:
        raise click.BadParameter("cannot exceed --operators", param_hint="--threshold")
    if (out_dir / "genesis.json").exists():
        raise click.ClickException(f"{out_dir / 'genesis.json'} already exists")
    gtime, gms = parse_time(genesis_time or _now_rfc3339())
    g, keys = build_devnet(chain_id, gtime, gms, accounts=accounts, balance=balance,
                           operators=operators, threshold=threshold, oracles=oracles,
                           markets=devnet_markets(funding_interval_ms) if markets else (),
                           insurance_fund=insurance_fund if markets else 0)
    parse_genesis(g.to_json_obj())  # what we write must pass our own validation
    keys_dir = out_dir / "keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    for name, key in keys.named().items():
        write_key(keys_dir / f"{name}.json", key, name)
    from node.fsutil import write_atomic

    write_atomic(out_dir / "genesis.json", g.to_json().encode())
    click.echo(f"wrote {out_dir / 'genesis.json'} (chain {chain_id}, hash {g.hash.hex()})")
    click.echo(f"wrote {len(keys.named())} keys to {keys_dir}/ (mode 0600)")


@genesis.command("validate")
@click.argument("file", type=click.Path(path_type=Path))
@friendly
def genesis_validate(file: Path) -> None:
    """Check a genesis file; print its hash or the field that is wrong."""
    from genesis.format import load_genesis

    g = load_genesis(file)
    click.echo(f"ok: chain {g.chain_id}, hash {g.hash.hex()}")


# -- node lifecycle -------------------------------------------------------------------------


@main.command()
@click.option("--home", required=True, type=click.Path(path_type=Path))
@click.option("--genesis", "genesis_file", required=True, type=click.Path(path_type=Path))
@click.option("--producer-key", type=click.Path(path_type=Path), default=None,
              help="Key file of the genesis producer; without it the node only serves reads.")
@click.option("--moniker", default="node", show_default=True)
@click.option("--rpc-laddr", default=RPCConfig.laddr, show_default=True)
@click.option("--admin-laddr", default=None,
              help="Operator endpoint (default tcp://127.0.0.1:26659; port 0 if --rpc-laddr "
                   "has port 0).")
@click.option("--block-interval-ms", default=None, type=click.IntRange(1))
@friendly
def init(home: Path, genesis_file: Path, producer_key: Path | None, moniker: str,
         rpc_laddr: str, admin_laddr: str | None, block_interval_ms: int | None) -> None:
    """Create a node home: config/config.toml, config/genesis.json, keys, data/."""
    from dataclasses import replace

    from genesis.format import load_genesis
    from node.fsutil import write_atomic

    h = Home(home)
    if h.config_file.exists() or h.genesis_file.exists():
        raise click.ClickException(f"{home} is already initialised")
    g = load_genesis(genesis_file)
    parse_laddr(rpc_laddr, "--rpc-laddr")
    key = None
    if producer_key is not None:
        key = read_key(producer_key)
        if key.public_key != g.producer.pub_key:
            raise click.ClickException(
                f"{producer_key} is not the producer named in the genesis "
                f"({g.producer.pub_key.hex()})")
    if admin_laddr is None:
        admin_laddr = ("tcp://127.0.0.1:0" if parse_laddr(rpc_laddr)[1] == 0
                       else AdminConfig.laddr)
    parse_laddr(admin_laddr, "--admin-laddr")
    cfg = NodeConfig(moniker=moniker, rpc=RPCConfig(laddr=rpc_laddr),
                     admin=AdminConfig(laddr=admin_laddr))
    if block_interval_ms is not None:
        cfg = replace(cfg, producer=replace(cfg.producer, block_interval_ms=block_interval_ms))
    h.data_dir.mkdir(parents=True, exist_ok=True)
    h.write_config(cfg)
    write_atomic(h.genesis_file, g.to_json().encode())
    if key is not None:
        write_key(h.producer_key_file, key, "producer")
    click.echo(f"initialised {home} for chain {g.chain_id}"
               + (" (producer)" if key else " (read-only)"))


@main.command()
@click.option("--home", required=True, type=click.Path(path_type=Path))
@friendly
def start(home: Path) -> None:
    """Run the node until SIGINT/SIGTERM (the current block always finishes)."""
    from node.run import start as run_start

    run_start(Home(home))


@main.command()
@click.option("--home", required=True, type=click.Path(path_type=Path))
@friendly
def verify(home: Path) -> None:
    """Offline: recompute the state root from raw storage and check whole-state invariants.

    Run it on a stopped node (LevelDB allows one process). Exit status 0 when everything
    holds, 1 with the list of problems otherwise.
    """
    from state.recovery.verify import verify_store
    from state.store import Store

    h = Home(home)
    if not h.store_dir.exists():
        raise click.ClickException(f"{h.store_dir} does not exist")
    with Store(h.store_dir, create=False) as store:
        report = verify_store(store)
    _print_json({
        "height": str(report.height),
        "head_state_root": report.head_state_root.hex(),
        "recomputed_state_root": report.recomputed_root.hex(),
        "state_keys": report.keys,
        "ok": report.ok,
        "problems": report.problems,
    })
    if not report.ok:
        raise click.ClickException(f"verification failed: {len(report.problems)} problem(s)")


# -- queries --------------------------------------------------------------------------------

node_option = click.option("--node", "node_url", default=DEFAULT_NODE, show_default=True,
                           envvar="APPCHAIN_NODE", help="JSON-RPC address of a node.")


@main.command()
@node_option
@friendly
def status(node_url: str) -> None:
    """Show the node's head, chain and mempool."""
    with RPCClient(node_url) as c:
        _print_json(c.call("status"))


@main.command()
@click.argument("address")
@node_option
@friendly
def account(address: str, node_url: str) -> None:
    """Show an account's balance and nonce."""
    with RPCClient(node_url) as c:
        _print_json(c.call("account", address=_hex32(address, "ADDRESS").hex()))


@main.command("tx-info")
@click.argument("tx_hash")
@node_option
@friendly
def tx_info(tx_hash: str, node_url: str) -> None:
    """Show a committed transaction and its result."""
    with RPCClient(node_url) as c:
        _print_json(c.call("tx", hash=_hex32(tx_hash, "TX_HASH").hex()))


# -- light client ---------------------------------------------------------------------------


@main.group()
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


height_option = click.option("--height", type=click.IntRange(0, 2**64 - 1), default=None,
                             help="Height to read at (default: the node's latest).")


def _light_run(genesis_file: Path, node_url: str,
               work: Callable[[Any], Any]) -> Any:
    """Run ``await work(light_client)`` under trio; a refusal becomes a clean error."""
    import trio

    from genesis.format import load_genesis
    from node.client import AsyncRPCClient
    from node.light import LightClient, LightClientError

    g = load_genesis(genesis_file)

    async def go() -> Any:
        async with AsyncRPCClient(node_url) as rpc:
            return await work(LightClient(g, rpc))

    try:
        return trio.run(go)
    except LightClientError as e:
        raise click.ClickException(f"light client refused: {e.check}: {e.message}") from e


def _verified_json(th: Any) -> dict[str, Any]:
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
    from node.light import decode_account
    from state.schema import account_key

    addr = _hex32(address, "ADDRESS")

    async def work(lc: Any) -> Any:
        return await lc.get_verified(account_key(addr), height)

    v = _light_run(genesis_file, node_url, work)
    acct = decode_account(v.value)
    _print_json({"address": addr.hex(), "balance": str(acct.balance),
                 "nonce": str(acct.nonce), "exists": v.value is not None,
                 **_verified_json(v.header)})


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

    v = _light_run(genesis_file, node_url, work)
    _print_json({"key": key.hex(), "exists": v.value is not None,
                 "value": None if v.value is None else b64(v.value),
                 "value_hex": None if v.value is None else v.value.hex(),
                 **_verified_json(v.header)})


@light.command("position")
@click.argument("address")
@click.argument("market_symbol", metavar="MARKET")
@with_light_options
@height_option
@friendly
def light_position(address: str, market_symbol: str, genesis_file: Path, node_url: str,
                   height: int | None) -> None:
    """Verified position of ADDRESS in MARKET (pos/<address>/<market>; absent: flat)."""
    addr = _hex32(address, "ADDRESS")

    async def work(lc: Any) -> Any:
        return await lc.position(addr, market_symbol, height)

    pos, v = _light_run(genesis_file, node_url, work)
    _print_json({"address": addr.hex(), "market": market_symbol, "exists": pos is not None,
                 "size": str(pos.size if pos else 0), "cost": str(pos.cost if pos else 0),
                 "entry_price": None if pos is None or pos.size == 0
                 else str(pos.entry_price()),
                 "realized_pnl": str(pos.realized_pnl if pos else 0),
                 "funding_index": None if pos is None else str(pos.funding_index),
                 **_verified_json(v.header)})


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

    m, st, vm, _ = _light_run(genesis_file, node_url, work)
    _print_json({"symbol": symbol, "exists": m is not None and st is not None,
                 "params": None if m is None else {
                     k: (v if isinstance(v, str) else str(v)) for k, v in m.to_obj().items()
                     if k != "symbol"},
                 "state": None if st is None else {
                     k: (v if isinstance(v, str) else str(v)) for k, v in st.to_obj().items()},
                 **_verified_json(vm.header)})


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
    from node.exchange_views import order_json

    owner_b = _hex32(owner, "owner")

    async def work(lc: Any) -> Any:
        return await lc.order(owner_b, order_id, height)

    o, v = _light_run(genesis_file, node_url, work)
    _print_json({"owner": owner_b.hex(), "id": str(order_id), "exists": o is not None,
                 "order": None if o is None else order_json(o), **_verified_json(v.header)})


@light.command("header")
@click.argument("height", required=False, type=click.IntRange(0, 2**64 - 1))
@with_light_options
@friendly
def light_header(height: int | None, genesis_file: Path, node_url: str) -> None:
    """Verified header at HEIGHT (default: the node's latest)."""
    from node.views import header_json

    async def work(lc: Any) -> Any:
        return await lc.header(height)

    th = _light_run(genesis_file, node_url, work)
    out = _verified_json(th)
    if th.signed is None:
        out["genesis"] = True
    else:
        out["header"] = header_json(th.signed.header)
        out["signature"] = th.signed.sig.hex()
    _print_json(out)


# -- keys -----------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Create and inspect key files."""


@keys.command("new")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--name", default="")
@friendly
def keys_new(out: Path, name: str) -> None:
    """Write a fresh ed25519 key (mode 0600) and print its address."""
    from chain.crypto import PrivateKey

    key = PrivateKey.generate()
    write_key(out, key, name or out.stem)
    click.echo(key.public_key.hex())


@keys.command("show")
@click.argument("file", type=click.Path(path_type=Path))
@friendly
def keys_show(file: Path) -> None:
    """Print the address (public key) of a key file."""
    click.echo(read_key(file).public_key.hex())


# -- transactions ---------------------------------------------------------------------------


@main.group()
def tx() -> None:
    """Sign and send transactions."""


def _send(key_file: Path, payload: Payload, node_url: str, nonce: int | None,
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
            _print_json(res)
            if res["tx_result"]["code"] != 0:
                raise click.ClickException(
                    f"included at height {res['height']} but failed: {res['tx_result']['log']}")
        else:
            _print_json(c.call("broadcast_tx_sync", tx=b64(t.raw)))


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
    _send(key_file, Transfer(_hex32(to, "--to"), amount), node_url, nonce, wait)


@tx.command("deposit")
@click.option("--to", "to", required=True, help="Credited address (64 hex).")
@click.option("--amount", required=True, type=click.IntRange(1, 2**64 - 1))
@with_tx_options
@friendly
def tx_deposit(to: str, amount: int, key_file: Path, nonce: int | None, wait: bool,
               node_url: str) -> None:
    """Deposit new units (the key must be the genesis faucet)."""
    _send(key_file, Deposit(_hex32(to, "--to"), amount), node_url, nonce, wait)


@tx.command("withdraw")
@click.option("--amount", type=click.IntRange(1, 2**64 - 1), default=None,
              help="Amount in base units (micro-USDC).")
@click.option("--usd", default=None, help="Amount in USD, an exact decimal (e.g. 12.5).")
@with_tx_options
@friendly
def tx_withdraw(amount: int | None, usd: str | None, key_file: Path, nonce: int | None,
                wait: bool, node_url: str) -> None:
    """Withdraw collateral (refused below your initial margin)."""
    from chain.tx import Withdraw

    if (amount is None) == (usd is None):
        raise click.UsageError("give exactly one of --amount and --usd")
    units = amount if amount is not None else parse_fixed(usd or "", 6, "--usd")
    if units > 2**64 - 1:
        raise click.BadParameter(f"{usd!r} is too large", param_hint="--usd")
    _send(key_file, Withdraw(units), node_url, nonce, wait)


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

    from chain.tx import OraclePrice

    when = obs_time if obs_time is not None else _time.time_ns() // 1_000_000
    _send(key_file, OraclePrice(market, price, when), node_url, nonce, wait)


def parse_fixed(text: str, decimals: int, what: str) -> int:
    """A decimal string (e.g. "60000.5") as an integer with ``decimals`` places, exactly."""
    from decimal import Decimal, InvalidOperation

    try:
        d = Decimal(text)
    except InvalidOperation:
        raise click.BadParameter(f"{text!r} is not a number", param_hint=what) from None
    scaled = d.scaleb(decimals)
    if not d.is_finite() or scaled != scaled.to_integral_value() or scaled <= 0:
        raise click.BadParameter(
            f"{text!r} must be positive with at most {decimals} decimals", param_hint=what)
    return int(scaled)


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
    from chain.tx import PlaceOrder

    order = PlaceOrder(market_, side, kind, tif or ("gtc" if kind == "limit" else "ioc"),
                       parse_fixed(price, 6, "--price"), parse_fixed(size, 8, "--size"),
                       reduce_only,
                       parse_fixed(trigger, 6, "--trigger-price") if trigger is not None else 0)
    try:
        order.check(b"")
    except ChainError as e:
        raise click.ClickException(e.message) from e
    _send(key_file, order, node_url, nonce, wait)


@tx.command("cancel")
@click.option("--market", "market_", required=True)
@click.option("--order-id", required=True, type=click.IntRange(0, 2**64 - 1),
              help="The order's id: the nonce of the transaction that placed it.")
@with_tx_options
@friendly
def tx_cancel(market_: str, order_id: int, key_file: Path, nonce: int | None, wait: bool,
              node_url: str) -> None:
    """Cancel one of your open orders."""
    from chain.tx import CancelOrder

    _send(key_file, CancelOrder(market_, order_id), node_url, nonce, wait)


@tx.command("cancel-all")
@click.option("--market", "market_", default="", help="Only this market (default: all).")
@with_tx_options
@friendly
def tx_cancel_all(market_: str, key_file: Path, nonce: int | None, wait: bool,
                  node_url: str) -> None:
    """Cancel every open order of yours (in one market, or everywhere)."""
    from chain.tx import CancelAll

    _send(key_file, CancelAll(market_), node_url, nonce, wait)


@main.command()
@click.argument("symbol")
@click.option("--depth", default=10, show_default=True, type=click.IntRange(1, 500))
@node_option
@friendly
def orderbook(symbol: str, depth: int, node_url: str) -> None:
    """Show a market's book: [price, size, orders] per level, best first."""
    with RPCClient(node_url) as c:
        _print_json(c.call("orderbook", symbol=symbol, depth=depth))


@main.command()
@click.argument("address")
@click.option("--market", "market_", default=None)
@node_option
@friendly
def orders(address: str, market_: str | None, node_url: str) -> None:
    """Show an account's open orders."""
    params: dict[str, Any] = {"address": _hex32(address, "ADDRESS").hex()}
    if market_:
        params["symbol"] = market_
    with RPCClient(node_url) as c:
        _print_json(c.call("orders", **params))


@main.command()
@click.argument("symbol", required=False)
@node_option
@friendly
def market(symbol: str | None, node_url: str) -> None:
    """Show one market (parameters, oracle price, funding index, open interest) or all."""
    with RPCClient(node_url) as c:
        _print_json(c.call("market", symbol=symbol) if symbol else c.call("markets"))


# -- devnet ---------------------------------------------------------------------------------


@main.command()
@click.option("--home", "root", default=".devnet", show_default=True,
              type=click.Path(path_type=Path), help="Folder for the devnet's files.")
@click.option("--tps", default=200, show_default=True, type=click.IntRange(0),
              help="Load generator rate (transactions per second; 0 for none).")
@click.option("--blocks", default=None, type=click.IntRange(1),
              help="Stop cleanly once the chain reaches this height.")
@click.option("--accounts", default=20, show_default=True, type=click.IntRange(2, 10_000))
@click.option("--block-interval-ms", default=500, show_default=True, type=click.IntRange(1))
@click.option("--port", default=26657, show_default=True, type=click.IntRange(0, 65535),
              help="RPC port on 127.0.0.1 (0 picks a free one).")
@click.option("--reset", is_flag=True, help="Delete an existing devnet folder first.")
@click.option("--leveraged", default=3, show_default=True, type=click.IntRange(0, 100),
              help="Accounts (the last ones) that trade BTC-USD-PERP at about 15x leverage, "
                   "so price moves liquidate someone; 0 for none.")
@click.option("--funding-interval-ms", default=60_000, show_default=True,
              type=click.IntRange(1000, 86_400_000),
              help="Funding interval of the markets (when the devnet is created).")
@click.option("--oracle-period-ms", default=1000, show_default=True,
              type=click.IntRange(50, 3_600_000),
              help="How often the oracle feed posts a price per market (each step about "
                   "±0.2%, one in --oracle-sharp-every a sharp ±5%).")
@click.option("--oracle-sharp-every", default=50, show_default=True,
              type=click.IntRange(1, 1_000_000),
              help="One oracle step in this many is a sharp ±5% move.")
@friendly
def devnet(root: Path, tps: int, blocks: int | None, accounts: int, block_interval_ms: int,
           port: int, reset: bool, leveraged: int, funding_interval_ms: int,
           oracle_period_ms: int, oracle_sharp_every: int) -> None:
    """Create (or reuse) a local devnet, run the producer and drive load at --tps."""
    from node.devnet import DevnetOptions, run_devnet

    if leveraged > accounts - 2:
        raise click.BadParameter(f"must leave at least 2 of the {accounts} accounts for the "
                                 "ordinary load", param_hint="--leveraged")
    if reset and root.exists():
        shutil.rmtree(root)
    code = run_devnet(DevnetOptions(root=root, tps=tps, blocks=blocks, accounts=accounts,
                                    block_interval_ms=block_interval_ms, port=port,
                                    leveraged=leveraged,
                                    funding_interval_ms=funding_interval_ms,
                                    oracle_period_ms=oracle_period_ms,
                                    oracle_sharp_every=oracle_sharp_every))
    sys.exit(code)


@main.group("snapshot")
def snapshot_files() -> None:
    """Snapshot files: check one, or start a fresh home from one (offline)."""


@snapshot_files.command("verify")
@click.option("--file", "path", required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--genesis", "genesis_file", default=None,
              type=click.Path(path_type=Path, exists=True),
              help="Also check that the genesis producer signed the snapshot's header.")
@friendly
def snapshot_verify(path: Path, genesis_file: Path | None) -> None:
    """Recompute a snapshot file's state root and check it against its header."""
    from state.recovery.snapshot_file import check_file

    producer = None
    if genesis_file is not None:
        from genesis.format import load_genesis

        producer = load_genesis(genesis_file).producer.pub_key
    hdr, n = check_file(path, producer)
    _print_json({"ok": True, "label": hdr.label, "height": str(hdr.height),
                 "state_root": hdr.state_root.hex(), "block_hash": hdr.block_hash.hex(),
                 "era": str(hdr.era), "keys": n, "chain_id": hdr.chain_id})


@snapshot_files.command("import")
@click.option("--home", required=True, type=click.Path(path_type=Path),
              help="A home made by `appchain init` whose store is still empty.")
@click.option("--file", "path", required=True, type=click.Path(path_type=Path, exists=True))
@friendly
def snapshot_import(home: Path, path: Path) -> None:
    """Start a fresh home from a snapshot file: the state root is recomputed and checked
    before anything is written; then `appchain start` serves it from that height."""
    from genesis.format import load_genesis
    from state.recovery.snapshot_file import import_into
    from state.store import Store

    h = Home(home)
    if not h.genesis_file.exists():
        raise click.ClickException(f"{h.genesis_file} does not exist: run `appchain init` "
                                   "first")
    g = load_genesis(h.genesis_file)
    with Store(h.store_dir) as store:
        hdr = import_into(store, path, g.hash, g.chain_id, g.producer.pub_key)
    _print_json({"imported": str(path), "height": str(hdr.height),
                 "state_root": hdr.state_root.hex(), "keys": hdr.keys, "home": str(home)})


def _register_admin() -> None:
    from node.admin_cli import admin

    main.add_command(admin)


_register_admin()

if __name__ == "__main__":
    main(prog_name="appchain")
