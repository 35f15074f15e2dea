"""``appchain admin`` recovery commands: rollback, cancel-orders, market-mode, replay,
rehearse, compensation-report, compensate (docs/OPERATIONS.md §12)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from node.cli.admin_session import Ctx, call_admin, call_with_progress
from node.cli.report_tables import to_csv, to_table
from node.client.admin_client import AdminClient, OperatorTxFailed
from node.client.rpc_client import NodeUnreachable, RPCCallError


@click.command()
@click.option("--to-snapshot", default=None, help="Label of a snapshot pin.")
@click.option("--to-height", type=click.IntRange(0), default=None)
@click.option("--reason", default=None, help="Why (goes into the fork certificate).")
@click.option("--dry-run", is_flag=True, help="Only list what would be abandoned.")
@click.pass_obj
def rollback(ctx: Ctx, to_snapshot: str | None, to_height: int | None, reason: str | None,
             dry_run: bool) -> None:
    """Roll the halted chain back; the next block starts a new era."""
    if (to_snapshot is None) == (to_height is None):
        raise click.UsageError("give exactly one of --to-snapshot and --to-height")
    if not dry_run and not reason:
        raise click.UsageError("--reason is required (it is signed into the fork certificate)")
    call_admin(ctx, lambda c: c.rollback(reason or "", to_height=to_height, to_snapshot=to_snapshot,
                                    dry_run=dry_run))


@click.command("cancel-orders")
@click.option("--keep", default="take-profit,stop-loss", show_default=True,
              help="Order kinds to keep: any of limit, take-profit, stop-loss (comma "
                   "separated; empty keeps none).")
@click.option("--market", default=None, help="Only this market (default: every market).")
@click.pass_obj
def cancel_orders(ctx: Ctx, keep: str, market: str | None) -> None:
    """Cancel every open order except the kinds kept (an operator transaction)."""
    kinds = [k.strip().replace("-", "_") for k in keep.split(",") if k.strip()]
    args = {"keep": ",".join(kinds)}
    if market:
        args["market"] = market
    call_admin(ctx, lambda c: c.operator_tx("cancel_orders", args))


@click.command("market-mode")
@click.argument("market")
@click.argument("mode", type=click.Choice(["active", "post-only", "cancel-only", "paused"]))
@click.option("--price-band-ppm", type=click.IntRange(0, 1_000_000), default=None,
              help="In post-only mode: orders must be this close to the oracle (ppm; 0: no "
                   "band). Unchanged if not given.")
@click.option("--liquidation-wait", type=click.IntRange(0, 1_000_000), default=None,
              help="Oracle updates to wait for before liquidations resume. Unchanged if not "
                   "given.")
@click.pass_obj
def market_mode(ctx: Ctx, market: str, mode: str, price_band_ppm: int | None,
                liquidation_wait: int | None) -> None:
    """Switch MARKET (or * for every market) to MODE (an operator transaction)."""
    args = {"market": market, "mode": mode}
    if price_band_ppm is not None:
        args["price_band_ppm"] = str(price_band_ppm)
    if liquidation_wait is not None:
        args["liquidation_wait"] = str(liquidation_wait)
    call_admin(ctx, lambda c: c.operator_tx("market_mode", args))


@click.command()
@click.option("--from-era", type=click.IntRange(0), default=None,
              help="Era whose abandoned blocks to replay (default: the last rolled back).")
@click.option("--exclude-tx", multiple=True, help="Transaction hash to leave out (repeat).")
@click.option("--exclude-sender", multiple=True, help="Sender address to leave out (repeat).")
@click.option("--exclude-type", multiple=True, help="Transaction type to leave out (repeat).")
@click.option("--dry-run", is_flag=True, help="Only classify; execute nothing.")
@click.pass_obj
def replay(ctx: Ctx, from_era: int | None, exclude_tx: tuple[str, ...],
           exclude_sender: tuple[str, ...], exclude_type: tuple[str, ...],
           dry_run: bool) -> None:
    """Re-execute the abandoned blocks' user transactions in new blocks (same boundaries and
    times); writes a report classifying each as identical, diverged or dropped."""
    args = {"exclude_tx": ",".join(exclude_tx), "exclude_sender": ",".join(exclude_sender),
            "exclude_type": ",".join(exclude_type), "dry_run": "true" if dry_run else "false"}
    if from_era is not None:
        args["from_era"] = str(from_era)
    if dry_run:
        call_admin(ctx, lambda c: c.run("replay", {k: v for k, v in args.items() if v}))
    else:
        call_with_progress(ctx, lambda c: c.run("replay", {k: v for k, v in args.items()
                                                             if v}))


@click.command()
@click.option("--to-snapshot", default=None, help="Label of a snapshot pin.")
@click.option("--to-height", type=click.IntRange(0), default=None)
@click.option("--reason", required=True,
              help="The reason the real rollback will carry (it is in the report).")
@click.option("--cancel-orders-keep", default=None,
              help="Rehearse the operators' cancel-orders after the rollback, keeping these "
                   "kinds (e.g. take-profit,stop-loss; empty keeps none). Omit: no "
                   "cancel-orders.")
@click.option("--cancel-orders-market", default=None,
              help="Only this market for the rehearsed cancel-orders (default: every one).")
@click.option("--exclude-tx", multiple=True, help="Transaction hash to leave out (repeat).")
@click.option("--exclude-sender", multiple=True, help="Sender address to leave out (repeat).")
@click.option("--exclude-type", multiple=True, help="Transaction type to leave out (repeat).")
@click.option("--out", "out_dir", default=None, type=click.Path(path_type=Path),
              help="Also write fates.json, report.json and report.csv to this folder.")
@click.pass_obj
def rehearse(ctx: Ctx, to_snapshot: str | None, to_height: int | None, reason: str,
             cancel_orders_keep: str | None, cancel_orders_market: str | None,
             exclude_tx: tuple[str, ...], exclude_sender: tuple[str, ...],
             exclude_type: tuple[str, ...], out_dir: Path | None) -> None:
    """Run the whole recovery (rollback, cancel-orders, replay, compensation report) in a
    scratch copy on the node, leaving the chain as it is; prints the exact fates and report
    the real run will give (halt first, and use the same reason and options)."""
    if (to_snapshot is None) == (to_height is None):
        raise click.UsageError("give exactly one of --to-snapshot and --to-height")
    keep = None if cancel_orders_keep is None else ",".join(
        k.strip().replace("-", "_") for k in cancel_orders_keep.split(",") if k.strip())
    ex = {"exclude_tx": ",".join(exclude_tx), "exclude_sender": ",".join(exclude_sender),
          "exclude_type": ",".join(exclude_type)}
    out = call_with_progress(ctx, lambda c: c.rehearse(
        reason, to_height=to_height, to_snapshot=to_snapshot, cancel_orders_keep=keep,
        cancel_orders_market=cancel_orders_market, exclusions=ex), echo=out_dir is None)
    if out_dir is not None:

        out_dir.mkdir(parents=True, exist_ok=True)
        report = out.pop("report")
        (out_dir / "report.json").write_text(json.dumps(report, indent=1))
        (out_dir / "report.csv").write_text(to_csv(report))
        (out_dir / "fates.json").write_text(json.dumps(out, indent=1))
        click.echo(out["summary"])
        click.echo(to_table(report))
        click.echo(f"wrote {out_dir / 'fates.json'}, {out_dir / 'report.json'} and "
                   f"{out_dir / 'report.csv'} (every fate: {out['path']} on the node)")


@click.command("compensation-report")
@click.option("--era", type=click.IntRange(0), default=None,
              help="Abandoned era to compare (default: the last rolled back).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for report.json and report.csv.")
@click.pass_obj
def compensation_report(ctx: Ctx, era: int | None, out_dir: Path) -> None:
    """Per account: the abandoned fork against the recovered chain; writes JSON and CSV and
    prints a table."""

    args = {} if era is None else {"era": str(era)}
    try:
        with ctx.client() as c:
            report = c.run("compensation_report", args)
    except RPCCallError as e:
        reason = e.data.get("reason") if isinstance(e.data, dict) else None
        raise click.ClickException(f"refused ({reason or e.code}): {e.message}") from e
    except NodeUnreachable as e:
        raise click.ClickException(str(e)) from e
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    (out_dir / "report.csv").write_text(to_csv(report))
    click.echo(to_table(report))
    click.echo(f"wrote {out_dir / 'report.json'} and {out_dir / 'report.csv'}")


@click.command()
@click.option("--report", "report_file", required=True, type=click.Path(path_type=Path),
              help="A report.json from compensation-report (amounts may be edited).")
@click.pass_obj
def compensate(ctx: Ctx, report_file: Path) -> None:
    """Pay each account its ``compensation`` from the insurance fund (operator transactions,
    up to 60 accounts each; recorded on chain with the report's id)."""
    try:
        report = json.loads(report_file.read_text())
        pays = [(r["account"], int(r["compensation"])) for r in report["accounts"]
                if int(r["compensation"]) > 0]
        ref = str(report["id"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise click.ClickException(f"{report_file}: not a compensation report ({e})") from e
    if not pays:
        click.echo(json.dumps({"summary": "nothing to pay", "paid": 0}, indent=2))
        return

    def run(c: AdminClient) -> Any:
        out = []
        paid = 0
        for i in range(0, len(pays), 60):
            chunk = pays[i:i + 60]
            args = {"ref": ref, **{f"pay.{a.lower()}": str(v) for a, v in chunk}}
            try:
                out.append(c.operator_tx("compensate", args))
            except OperatorTxFailed as e:
                raise click.ClickException(
                    f"{e}; paid so far: {paid} of {len(pays)} account(s) (the rest were not "
                    "paid; fix the cause and run compensate with a report of the rest)") from e
            paid += len(chunk)
        return {"summary": f"paid {len(pays)} account(s), {sum(v for _, v in pays)} "
                           "micro-USDC in all", "transactions": out}

    call_admin(ctx, run)
