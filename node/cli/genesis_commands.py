"""``appchain genesis new|validate``: build a devnet genesis with fresh keys, check one.
"""

from __future__ import annotations

from pathlib import Path

import click

from genesis.builder import build_devnet, devnet_markets
from genesis.format import load_genesis, parse_genesis, parse_time
from node.cli.common import friendly, now_rfc3339
from node.fsutil import write_atomic
from node.keyfile import write_key


@click.group()
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

    if threshold > operators:
        raise click.BadParameter("cannot exceed --operators", param_hint="--threshold")
    if (out_dir / "genesis.json").exists():
        raise click.ClickException(f"{out_dir / 'genesis.json'} already exists")
    gtime, gms = parse_time(genesis_time or now_rfc3339())
    g, keys = build_devnet(chain_id, gtime, gms, accounts=accounts, balance=balance,
                           operators=operators, threshold=threshold, oracles=oracles,
                           markets=devnet_markets(funding_interval_ms) if markets else (),
                           insurance_fund=insurance_fund if markets else 0)
    parse_genesis(g.to_json_obj())  # what we write must pass our own validation
    keys_dir = out_dir / "keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    for name, key in keys.named().items():
        write_key(keys_dir / f"{name}.json", key, name)

    write_atomic(out_dir / "genesis.json", g.to_json().encode())
    click.echo(f"wrote {out_dir / 'genesis.json'} (chain {chain_id}, hash {g.hash.hex()})")
    click.echo(f"wrote {len(keys.named())} keys to {keys_dir}/ (mode 0600)")


@genesis.command("validate")
@click.argument("file", type=click.Path(path_type=Path))
@friendly
def genesis_validate(file: Path) -> None:
    """Check a genesis file; print its hash or the field that is wrong."""

    g = load_genesis(file)
    click.echo(f"ok: chain {g.chain_id}, hash {g.hash.hex()}")
