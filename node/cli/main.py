"""The ``appchain`` command line.

Every expected failure (bad input, missing file, node unreachable, refused transaction) ends
with a one-line ``Error: ...`` and exit status 1, never a traceback; usage errors exit 2.
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import click

from chain.crypto import PrivateKey
from genesis.format import load_genesis
from node import __version__
from node.cli.admin_commands import admin
from node.cli.common import friendly, print_json
from node.cli.genesis_commands import genesis
from node.cli.light_commands import light
from node.cli.query_commands import account, market, orderbook, orders, status, tx_info
from node.cli.recovery_commands import (
    cancel_orders,
    compensate,
    compensation_report,
    market_mode,
    rehearse,
    replay,
    rollback,
)
from node.cli.tx_commands import tx
from node.config import AdminConfig, Home, NodeConfig, P2PConfig, RPCConfig, parse_laddr, parse_peer
from node.dev.devnet import MAX_NODES, PORT_STRIDE, DevnetOptions, run_devnet
from node.fsutil import write_atomic
from node.keyfile import read_key, write_key
from node.serve import start as run_start
from state.recovery.snapshot_file import check_file, import_into
from state.recovery.verify import verify_home_store
from state.store import Store


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


@main.command()
def version() -> None:
    """Print the node version."""
    click.echo(__version__)


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
@click.option("--p2p-laddr", default=None,
              help="Peer protocol (default tcp://127.0.0.1:26656; port 0 if --rpc-laddr has "
                   "port 0).")
@click.option("--follow", "follow", default=None, metavar="HOST:PORT",
              help="Follow this producer's peer port (written as p2p.persistent_peers).")
@click.option("--block-interval-ms", default=None, type=click.IntRange(1))
@friendly
def init(home: Path, genesis_file: Path, producer_key: Path | None, moniker: str,
         rpc_laddr: str, admin_laddr: str | None, p2p_laddr: str | None, follow: str | None,
         block_interval_ms: int | None) -> None:
    """Create a node home: config/config.toml, config/genesis.json, keys, data/."""
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
    if p2p_laddr is None:
        p2p_laddr = ("tcp://127.0.0.1:0" if parse_laddr(rpc_laddr)[1] == 0
                     else P2PConfig.laddr)
    parse_laddr(p2p_laddr, "--p2p-laddr")
    if follow is not None:
        parse_peer(follow, "--follow")
    cfg = NodeConfig(moniker=moniker, rpc=RPCConfig(laddr=rpc_laddr),
                     admin=AdminConfig(laddr=admin_laddr),
                     p2p=P2PConfig(laddr=p2p_laddr,
                                   persistent_peers=(follow,) if follow else ()))
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
@click.option("--follow", "follow", default=None, metavar="HOST:PORT",
              help="Follow the producer at this peer address (overrides "
                   "p2p.persistent_peers; needs a home without the producer key).")
@click.option("--state-sync", "state_sync", is_flag=True,
              help="A follower with an empty store first fetches its peer's state (checked "
                   "against a header the producer signed) instead of every block since the "
                   "genesis; ignored once the store holds a chain (also p2p.state_sync).")
@friendly
def start(home: Path, follow: str | None, state_sync: bool) -> None:
    """Run the node until SIGINT/SIGTERM (the current block always finishes)."""
    if follow is not None:
        parse_peer(follow, "--follow")
    run_start(Home(home), follow=follow, state_sync=state_sync)


@main.command()
@click.option("--home", required=True, type=click.Path(path_type=Path))
@click.option("--chain/--no-chain", "chain", default=True, show_default=True,
              help="Also check the stored chain record: blocks, hash links, tx and results "
                   "roots, results, undo records and the tx index.")
@click.option("--from-height", type=click.IntRange(min=0), default=0, show_default=True,
              help="Check the chain record from this height up to the head (it costs about "
                   "one block decode and one index read per transaction).")
@friendly
def verify(home: Path, chain: bool, from_height: int) -> None:
    """Offline: recompute the state root from raw storage, check whole-state invariants and
    (by default) the whole stored chain record, reporting problems by height.

    Run it on a stopped node (LevelDB allows one process). Exit status 0 when everything
    holds, 1 with the list of problems otherwise.
    """

    h = Home(home)
    if not h.store_dir.exists():
        raise click.ClickException(f"{h.store_dir} does not exist")
    keep = h.load_config().storage.keep_undo_blocks if h.config_file.exists() else 0
    with Store(h.store_dir, create=False) as store:
        out, problems = verify_home_store(store, chain, from_height, keep)
    print_json(out)
    if problems:
        raise click.ClickException(f"verification failed: {problems} problem(s)")


@main.group()
def keys() -> None:
    """Create and inspect key files."""


@keys.command("new")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--name", default="")
@friendly
def keys_new(out: Path, name: str) -> None:
    """Write a fresh ed25519 key (mode 0600) and print its address."""

    key = PrivateKey.generate()
    write_key(out, key, name or out.stem)
    click.echo(key.public_key.hex())


@keys.command("show")
@click.argument("file", type=click.Path(path_type=Path))
@friendly
def keys_show(file: Path) -> None:
    """Print the address (public key) of a key file."""
    click.echo(read_key(file).public_key.hex())


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
              help="RPC port on 127.0.0.1 (0 picks free ports for RPC and admin).")
@click.option("--admin-port", default=None, type=click.IntRange(0, 65535),
              help="Operator endpoint port on 127.0.0.1 [default: --port + 2, or 0 with "
                   "--port 0].")
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
@click.option("--nodes", default=1, show_default=True, type=click.IntRange(1, MAX_NODES),
              help="The producer (node0) and N-1 followers of it (node1..), each with its "
                   "own home under --home; with a fixed --port P node i listens on "
                   f"P+{PORT_STRIDE}*i (RPC), P+{PORT_STRIDE}*i-1 (peers) and "
                   f"P+{PORT_STRIDE}*i+2 (admin).")
@click.option("--load-node", default=0, show_default=True,
              type=click.IntRange(0, MAX_NODES - 1),
              help="The node the load generator sends to (a follower forwards to node0).")
@friendly
def devnet(root: Path, tps: int, blocks: int | None, accounts: int, block_interval_ms: int,
           port: int, admin_port: int | None, reset: bool, leveraged: int, funding_interval_ms: int,
           oracle_period_ms: int, oracle_sharp_every: int, nodes: int, load_node: int) -> None:
    """Create (or reuse) a local devnet, run the producer (and --nodes - 1 followers) and
    drive load at --tps."""

    if leveraged > accounts - 2:
        raise click.BadParameter(f"must leave at least 2 of the {accounts} accounts for the "
                                 "ordinary load", param_hint="--leveraged")
    if load_node >= nodes:
        raise click.BadParameter(f"must name one of the {nodes} node(s), 0..{nodes - 1}",
                                 param_hint="--load-node")
    if port != 0 and port + PORT_STRIDE * (nodes - 1) + 2 > 65535:
        raise click.BadParameter(f"node{nodes - 1} would listen above port 65535 (node i "
                                 f"uses up to --port + {PORT_STRIDE}*i + 2)",
                                 param_hint="--port")
    if reset and root.exists():
        shutil.rmtree(root)
    code = run_devnet(DevnetOptions(root=root, tps=tps, blocks=blocks, accounts=accounts,
                                    block_interval_ms=block_interval_ms, port=port,
                                    admin_port=admin_port,
                                    leveraged=leveraged,
                                    funding_interval_ms=funding_interval_ms,
                                    oracle_period_ms=oracle_period_ms,
                                    oracle_sharp_every=oracle_sharp_every,
                                    nodes=nodes, load_node=load_node))
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

    producer = None
    if genesis_file is not None:

        producer = load_genesis(genesis_file).producer.pub_key
    hdr, n = check_file(path, producer)
    print_json({"ok": True, "label": hdr.label, "height": str(hdr.height),
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

    h = Home(home)
    if not h.genesis_file.exists():
        raise click.ClickException(f"{h.genesis_file} does not exist: run `appchain init` "
                                   "first")
    g = load_genesis(h.genesis_file)
    with Store(h.store_dir) as store:
        hdr = import_into(store, path, g.hash, g.chain_id, g.producer.pub_key)
    print_json({"imported": str(path), "height": str(hdr.height),
                 "state_root": hdr.state_root.hex(), "keys": hdr.keys, "home": str(home)})


for command in (genesis, light, tx, status, account, tx_info, orderbook, orders, market,
                admin):
    main.add_command(command)
for command in (rollback, cancel_orders, market_mode, replay, rehearse, compensation_report,
                compensate):
    admin.add_command(command)
