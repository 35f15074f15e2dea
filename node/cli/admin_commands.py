"""``appchain admin ...``: operator commands, signed with operator keys, sent to the node's
admin endpoint. Each prints the node's answer as JSON (docs/OPERATIONS.md shows them)."""

from __future__ import annotations

from pathlib import Path

import click

from node.cli.admin_session import Ctx, admin_endpoint, call_admin
from node.client.admin_client import DEFAULT_ADMIN


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
    ctx.obj = Ctx(admin_endpoint(admin_url, home), key_files)


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
    call_admin(ctx, lambda c: c.run("halt", args))


@admin.command()
@click.option("--force", is_flag=True,
              help="Resume without the usual safety: after a rollback, without reopening the "
                   "markets post-only; in a maintenance window, WITHOUT verifying the state.")
@click.pass_obj
def resume(ctx: Ctx, force: bool) -> None:
    """Clear a halt: production goes on (held-back transactions are re-admitted). After a
    rollback, markets first reopen post-only with a price band, liquidations waiting for
    fresh oracle prices (node config [recovery])."""
    call_admin(ctx, lambda c: c.resume(force))


@admin.group()
def snapshot() -> None:
    """Snapshot pins: create, list, show, delete."""


@snapshot.command("create")
@click.option("--label", required=True)
@click.pass_obj
def snapshot_create(ctx: Ctx, label: str) -> None:
    """Pin the current head under LABEL."""
    call_admin(ctx, lambda c: c.run("snapshot_create", {"label": label}))


@snapshot.command("list")
@click.pass_obj
def snapshot_list(ctx: Ctx) -> None:
    call_admin(ctx, lambda c: c.run("snapshot_list"))


@snapshot.command("show")
@click.argument("label")
@click.pass_obj
def snapshot_show(ctx: Ctx, label: str) -> None:
    call_admin(ctx, lambda c: c.run("snapshot_show", {"label": label}))


@snapshot.command("delete")
@click.argument("label")
@click.pass_obj
def snapshot_delete(ctx: Ctx, label: str) -> None:
    call_admin(ctx, lambda c: c.run("snapshot_delete", {"label": label}))


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
    call_admin(ctx, lambda c: c.run("snapshot_export", args))


@admin.group()
def maintenance() -> None:
    """Maintenance windows: begin (halt, verify, pin) and end (verify, resume)."""


@maintenance.command("begin")
@click.option("--reason", default="maintenance", show_default=True)
@click.pass_obj
def maintenance_begin(ctx: Ctx, reason: str) -> None:
    """Halt, verify the whole state, pin pre-maintenance-<height>."""
    call_admin(ctx, lambda c: c.run("maintenance_begin", {"reason": reason}))


@maintenance.command("end")
@click.pass_obj
def maintenance_end(ctx: Ctx) -> None:
    """Verify again; resume only if nothing differs (else print why and stay halted)."""
    call_admin(ctx, lambda c: c.run("maintenance_end"))


@admin.command("audit")
@click.option("--after", type=click.IntRange(0), default=0, help="Entries after this seq.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100)
@click.pass_obj
def audit_cmd(ctx: Ctx, after: int, limit: int) -> None:
    """The audit log: every admin command received, accepted or refused."""
    call_admin(ctx, lambda c: c.run("audit", {"after": str(after), "limit": str(limit)}))
