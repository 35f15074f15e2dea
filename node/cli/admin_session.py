"""How ``appchain admin`` commands reach the node: the admin endpoint (from ``--admin`` or the
home's ``data/admin_address``), the operator keys that sign each command, clean refusals,
and live progress while a long command runs.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import click

from node.client.admin_client import DEFAULT_ADMIN, AdminClient, OperatorTxFailed
from node.client.rpc_client import NodeUnreachable, RPCCallError, RPCClient
from node.keyfile import KeyFileError, read_key


def admin_endpoint(admin_url: str | None, home: Path | None) -> str:
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


def call_admin(ctx: Ctx, fn: Any) -> None:
    click.echo(json.dumps(run_admin(ctx, fn), indent=2))


def progress_line(p: dict[str, Any]) -> str:
    c = p.get("counts", {})
    left = p.get("seconds_left")
    return (f"{p.get('kind', 'replay')}: block {p.get('blocks_done')}/{p.get('blocks_total')}"
            f"  identical {c.get('identical', 0)}  diverged {c.get('diverged', 0)}  dropped "
            f"{c.get('dropped', 0)}  {p.get('blocks_per_s', 0)} blocks/s  "
            f"~{'?' if left is None else f'{left:.0f}'}s left")


def call_with_progress(ctx: Ctx, fn: Any, interval_s: float = 1.0, echo: bool = True
                        ) -> Any:
    """:func:`_call`, printing the node's progress (``admin_progress``) to stderr while the
    command runs (a replay or rehearsal of many blocks takes a while); returns the answer
    (printed as JSON with ``echo``)."""
    done = threading.Event()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["out"] = run_admin(ctx, fn)
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
                line = progress_line(p)
                if line != last:
                    click.echo(line, err=True)
                    last = line
    t.join()
    if "err" in box:
        raise box["err"]
    if echo:
        click.echo(json.dumps(box["out"], indent=2))
    return box["out"]


def run_admin(ctx: Ctx, fn: Any) -> Any:
    try:
        with ctx.client() as c:
            return fn(c)
    except RPCCallError as e:
        reason = e.data.get("reason") if isinstance(e.data, dict) else None
        raise click.ClickException(f"refused ({reason or e.code}): {e.message}") from e
    except (NodeUnreachable, OperatorTxFailed) as e:
        raise click.ClickException(str(e)) from e
