"""``appchain admin ...``: operator commands, signed with operator keys, sent to the node's
admin endpoint. Each prints the node's answer as JSON (docs/OPERATIONS.md shows them)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import click

from node.admin_client import DEFAULT_ADMIN, AdminClient, OperatorTxFailed
from node.client import NodeUnreachable, RPCCallError, RPCClient
from node.keyfile import KeyFileError, read_key


def _endpoint(admin_url: str | None, home: Path | None) -> str:
    if admin_url:
        return admin_url
    if home is not None:
        f = home / "data" / "admin_address"
        if not f.exists():
            raise click.ClickException(f"{f} does not exist: is the node at {home} running?")
        return f.read_text().strip()
    return DEFAULT_ADMIN


class Ctx:
    def __init__(self, url: str, key_files: tuple[Path, ...]) -> None:
        self.url = url
        self.key_files = key_files

    def client(self) -> AdminClient:
        if not self.key_files:
            raise click.ClickException("give at least one operator key: --key FILE "
                                       "(repeat it to meet the genesis threshold)")
        keys = []
        for p in self.key_files:
            try:
                keys.append(read_key(p))
            except (KeyFileError, OSError, ValueError) as e:
                raise click.ClickException(f"cannot read operator key {p}: {e}") from e
        return AdminClient(self.url, keys)


def _call(ctx: Ctx, fn: Any) -> None:
    click.echo(json.dumps(_run(ctx, fn), indent=2))


def _progress_line(p: dict[str, Any]) -> str:
    c = p.get("counts", {})
    left = p.get("seconds_left")
    return (f"{p.get('kind', 'replay')}: block {p.get('blocks_done')}/{p.get('blocks_total')}"
            f"  identical {c.get('identical', 0)}  diverged {c.get('diverged', 0)}  dropped "
            f"{c.get('dropped', 0)}  {p.get('blocks_per_s', 0)} blocks/s  "
            f"~{'?' if left is None else f'{left:.0f}'}s left")


def _call_with_progress(ctx: Ctx, fn: Any, interval_s: float = 1.0, echo: bool = True
                        ) -> Any:
    """:func:`_call`, printing the node's progress (``admin_progress``) to stderr while the
    command runs (a replay or rehearsal of many blocks takes a while); returns the answer
    (printed as JSON with ``echo``)."""
    done = threading.Event()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["out"] = _run(ctx, fn)
        except BaseException as e:  # re-raised on the main thread
            box["err"] = e
        finally:
            done.set()

    t = threading.Thread(target=work, daemon=True)
    t.start()
    last = ""
    with RPCClient(ctx.url, timeout=10) as poll:
        while not done.wait(interval_s):
            try:
                p = poll.call("admin_progress").get("progress")
            except (NodeUnreachable, RPCCallError):
                continue
            if p:
                line = _progress_line(p)
                if line != last:
                    click.echo(line, err=True)
                    last = line
    t.join()
    if "err" in box:
        raise box["err"]
    if echo:
        click.echo(json.dumps(box["out"], indent=2))
    return box["out"]


def _run(ctx: Ctx, fn: Any) -> Any:
    try:
        with ctx.client() as c:
            return fn(c)
    except RPCCallError as e:
        reason = e.data.get("reason") if isinstance(e.data, dict) else None
        raise click.ClickException(f"refused ({reason or e.code}): {e.message}") from e
    except (NodeUnreachable, OperatorTxFailed) as e:
        raise click.ClickException(str(e)) from e


@click.group()
@click.option("--admin", "admin_url", default=None, envvar="APPCHAIN_ADMIN",
              help=f"Admin endpoint URL (default: HOME/data/admin_address, else "
                   f"{DEFAULT_ADMIN}).")
@click.option("--home", type=click.Path(path_type=Path), default=None,
              help="Node home, to find its admin endpoint.")
@click.option("--key", "key_files", multiple=True, type=click.Path(path_type=Path),
              envvar="APPCHAIN_OPERATOR_KEYS",
              help="Operator key file; repeat to reach the genesis threshold.")
@click.pass_context
def admin(ctx: click.Context, admin_url: str | None, home: Path | None,
          key_files: tuple[Path, ...]) -> None:
    """Operator commands: halt, resume, snapshots, maintenance, rollback, audit."""
    ctx.obj = Ctx(_endpoint(admin_url, home), key_files)


@admin.command()
@click.option("--reason", required=True, help="Why (recorded in the halt and audit log).")
@click.option("--at-height", type=click.IntRange(1), default=None,
              help="Halt once the head reaches this height instead of now.")
@click.pass_obj
def halt(ctx: Ctx, reason: str, at_height: int | None) -> None:
    """Stop block production at a block boundary (reads keep working)."""
    args = {"reason": reason}
    if at_height is not None:
        args["at_height"] = str(at_height)
    _call(ctx, lambda c: c.run("halt", args))


@admin.command()
@click.option("--force", is_flag=True,
              help="Resume without the usual safety: after a rollback, without reopening the "
                   "markets post-only; in a maintenance window, WITHOUT verifying the state.")
@click.pass_obj
def resume(ctx: Ctx, force: bool) -> None:
    """Clear a halt: production goes on (held-back transactions are re-admitted). After a
    rollback, markets first reopen post-only with a price band, liquidations waiting for
    fresh oracle prices (node config [recovery])."""
    _call(ctx, lambda c: c.resume(force))


@admin.group()
def snapshot() -> None:
    """Snapshot pins: create, list, show, delete."""


@snapshot.command("create")
@click.option("--label", required=True)
@click.pass_obj
def snapshot_create(ctx: Ctx, label: str) -> None:
    """Pin the current head under LABEL."""
    _call(ctx, lambda c: c.run("snapshot_create", {"label": label}))


@snapshot.command("list")
@click.pass_obj
def snapshot_list(ctx: Ctx) -> None:
    _call(ctx, lambda c: c.run("snapshot_list"))


@snapshot.command("show")
@click.argument("label")
@click.pass_obj
def snapshot_show(ctx: Ctx, label: str) -> None:
    _call(ctx, lambda c: c.run("snapshot_show", {"label": label}))


@snapshot.command("delete")
@click.argument("label")
@click.pass_obj
def snapshot_delete(ctx: Ctx, label: str) -> None:
    _call(ctx, lambda c: c.run("snapshot_delete", {"label": label}))


@snapshot.command("export")
@click.argument("label")
@click.option("--path", default=None, help="File to write, on the node's machine (default: "
              "HOME/data/snapshots/LABEL.snap).")
@click.pass_obj
def snapshot_export(ctx: Ctx, label: str, path: str | None) -> None:
    """Write the pinned state to a portable file (import it with `appchain snapshot import`)."""
    args = {"label": label}
    if path:
        args["path"] = str(Path(path).resolve())
    _call(ctx, lambda c: c.run("snapshot_export", args))


@admin.group()
def maintenance() -> None:
    """Maintenance windows: begin (halt, verify, pin) and end (verify, resume)."""


@maintenance.command("begin")
@click.option("--reason", default="maintenance", show_default=True)
@click.pass_obj
def maintenance_begin(ctx: Ctx, reason: str) -> None:
    """Halt, verify the whole state, pin pre-maintenance-<height>."""
    _call(ctx, lambda c: c.run("maintenance_begin", {"reason": reason}))


@maintenance.command("end")
@click.pass_obj
def maintenance_end(ctx: Ctx) -> None:
    """Verify again; resume only if nothing differs (else print why and stay halted)."""
    _call(ctx, lambda c: c.run("maintenance_end"))


@admin.command()
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
    _call(ctx, lambda c: c.rollback(reason or "", to_height=to_height, to_snapshot=to_snapshot,
                                    dry_run=dry_run))


@admin.command("cancel-orders")
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
    _call(ctx, lambda c: c.operator_tx("cancel_orders", args))


@admin.command("market-mode")
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
    _call(ctx, lambda c: c.operator_tx("market_mode", args))


@admin.command()
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
        _call(ctx, lambda c: c.run("replay", {k: v for k, v in args.items() if v}))
    else:
        _call_with_progress(ctx, lambda c: c.run("replay", {k: v for k, v in args.items()
                                                             if v}))


@admin.command()
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
    out = _call_with_progress(ctx, lambda c: c.rehearse(
        reason, to_height=to_height, to_snapshot=to_snapshot, cancel_orders_keep=keep,
        cancel_orders_market=cancel_orders_market, exclusions=ex), echo=out_dir is None)
    if out_dir is not None:
        from node.compensation import to_csv, to_table

        out_dir.mkdir(parents=True, exist_ok=True)
        report = out.pop("report")
        (out_dir / "report.json").write_text(json.dumps(report, indent=1))
        (out_dir / "report.csv").write_text(to_csv(report))
        (out_dir / "fates.json").write_text(json.dumps(out, indent=1))
        click.echo(out["summary"])
        click.echo(to_table(report))
        click.echo(f"wrote {out_dir / 'fates.json'}, {out_dir / 'report.json'} and "
                   f"{out_dir / 'report.csv'} (every fate: {out['path']} on the node)")


@admin.command("compensation-report")
@click.option("--era", type=click.IntRange(0), default=None,
              help="Abandoned era to compare (default: the last rolled back).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for report.json and report.csv.")
@click.pass_obj
def compensation_report(ctx: Ctx, era: int | None, out_dir: Path) -> None:
    """Per account: the abandoned fork against the recovered chain; writes JSON and CSV and
    prints a table."""
    from node.compensation import to_csv, to_table

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


@admin.command()
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

    _call(ctx, run)


@admin.command("audit")
@click.option("--after", type=click.IntRange(0), default=0, help="Entries after this seq.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100)
@click.pass_obj
def audit_cmd(ctx: Ctx, after: int, limit: int) -> None:
    """The audit log: every admin command received, accepted or refused."""
    _call(ctx, lambda c: c.run("audit", {"after": str(after), "limit": str(limit)}))
