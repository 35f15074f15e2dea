"""Operator commands on snapshot pins: create, list, show, delete, and export a pin's state
to a portable snapshot file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from chain.admin import AdminRefused
from node.chain_head import wall_ms
from node.ops.args import need, only, pin_json
from node.ops.ops_context import OpsContext
from state.recovery import pins, snapshot_file


async def snapshot_create_command(ctx: OpsContext, args: dict[str, str], ops: list[bytes]
        ) -> dict[str, Any]:
    only(args, {"label"})
    label = need(args, "label")
    async with ctx.node.producer.exclusive():  # pin a committed head, never a moving one
        pin = pins.create_pin(ctx.store, label, wall_ms(), tuple(ops))
    return {"summary": f"snapshot {label} at height {pin.height}", **pin_json(pin)}


async def snapshot_list_command(ctx: OpsContext, args: dict[str, str], ops: list[bytes]
        ) -> dict[str, Any]:
    only(args, set())
    found = [pin_json(p) for p in pins.list_pins(ctx.store)]
    return {"summary": f"{len(found)} snapshot(s)", "snapshots": found}


async def snapshot_show_command(ctx: OpsContext, args: dict[str, str], ops: list[bytes]
        ) -> dict[str, Any]:
    only(args, {"label"})
    label = need(args, "label")
    pin = pins.get_pin(ctx.store, label)
    if pin is None:
        raise AdminRefused("refused", f"no snapshot {label!r}")
    return {"summary": f"snapshot {label}", **pin_json(pin)}


async def snapshot_delete_command(ctx: OpsContext, args: dict[str, str], ops: list[bytes]
        ) -> dict[str, Any]:
    only(args, {"label"})
    pin = pins.delete_pin(ctx.store, need(args, "label"))
    return {"summary": f"deleted snapshot {pin.label}", **pin_json(pin)}


async def snapshot_export_command(ctx: OpsContext, args: dict[str, str], ops: list[bytes]
        ) -> dict[str, Any]:
    only(args, {"label", "path"})
    label = need(args, "label")
    pin = pins.get_pin(ctx.store, label)
    if pin is None:
        raise AdminRefused("refused", f"no snapshot {label!r}")
    path = Path(args.get("path") or ctx.snapshot_path(label))
    if pin.height > ctx.node.head.height:
        raise AdminRefused("refused", f"snapshot {label!r} is above the head (rolled back)")
    try:
        hdr = await trio.to_thread.run_sync(snapshot_file.export, ctx.store, path, label,
                                            pin.height)
    except OSError as e:
        raise AdminRefused("refused", f"cannot write {path}: {e}") from e
    if (hdr.block_hash, hdr.state_root) != (pin.block_hash, pin.state_root):
        await trio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
        raise AdminRefused("refused", f"snapshot {label!r} pinned block "
                           f"{pin.block_hash.hex()}, the chain now has "
                           f"{hdr.block_hash.hex()} at height {pin.height} (an earlier "
                           "rollback abandoned it)")
    return {"summary": f"exported snapshot {label} (height {pin.height}, {hdr.keys} "
                       f"keys) to {path}", "path": str(path), "keys": hdr.keys,
            "height": str(hdr.height), "state_root": hdr.state_root.hex()}
