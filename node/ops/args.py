"""Operator command arguments (strings, as signed in the envelope) and the JSON forms of what
commands answer; every malformed argument is refused with ``bad_args``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from chain.admin import AdminRefused
from state.recovery import pins
from state.recovery.archive import Exclusions


def need(args: dict[str, str], name: str) -> str:
    v = args.get(name)
    if v is None or v == "":
        raise AdminRefused("bad_args", f"argument {name!r} is required")
    return v


def int_arg(args: dict[str, str], name: str) -> int | None:
    v = args.get(name)
    if v is None:
        return None
    if not (v.isascii() and v.isdigit()) or len(v) > 20:
        raise AdminRefused("bad_args", f"argument {name!r} must be a non-negative integer")
    return int(v)


def bool_arg(args: dict[str, str], name: str) -> bool:
    v = args.get(name, "false")
    if v not in ("true", "false"):
        raise AdminRefused("bad_args", f"argument {name!r} must be true or false")
    return v == "true"


def only(args: dict[str, str], allowed: set[str]) -> None:
    extra = set(args) - allowed
    if extra:
        raise AdminRefused("bad_args", f"unknown argument(s) {sorted(extra)}; this command "
                           f"takes {sorted(allowed) or 'none'}")


def hexes(args: dict[str, str], name: str, size: int) -> frozenset[bytes]:
    out = set()
    for item in filter(None, args.get(name, "").split(",")):
        try:
            b = bytes.fromhex(item.strip())
        except ValueError:
            b = b""
        if len(b) != size:
            raise AdminRefused("bad_args", f"{name}: {item!r} is not {size} hex bytes")
        out.add(b)
    return frozenset(out)


def exclusions(args: dict[str, str]) -> Exclusions:
    """The replay's exclusions from ``exclude_tx`` / ``exclude_sender`` / ``exclude_type``
    (comma-separated)."""
    return Exclusions(hexes(args, "exclude_tx", 32), hexes(args, "exclude_sender", 32),
                      frozenset(t.strip() for t in args.get("exclude_type", "").split(",")
                                if t.strip()))


def audit_args(args: dict[str, str]) -> dict[str, str]:
    """Arguments as audited: long values (certificates, transactions) by their hash."""
    return {k: (v if len(v) <= 256 else f"sha256:{hashlib.sha256(v.encode()).hexdigest()}"
                                        f" ({len(v)} chars)") for k, v in args.items()}


def pin_json(p: pins.SnapshotPin) -> dict[str, Any]:
    return {"label": p.label, "height": str(p.height), "block_hash": p.block_hash.hex(),
            "state_root": p.state_root.hex(), "era": str(p.era), "time": str(p.time),
            "created_ms": str(p.created_ms), "operators": [o.hex() for o in p.operators]}


def verification_json(r: Any) -> dict[str, Any]:
    return {"height": str(r.height), "head_state_root": r.head_state_root.hex(),
            "recomputed_state_root": r.recomputed_root.hex(), "state_keys": r.keys,
            "ok": r.ok, "problems": r.problems}


def jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return v


def report_summary(report: dict[str, Any]) -> str:
    t = report["totals"]
    return (f"era {report['era']}: {t['accounts']} account(s), "
            f"{t['accounts_to_compensate']} to compensate ({t['compensation_total']} "
            f"micro-USDC), {t['liquidated_only_on_abandoned_fork']} liquidated only on the "
            f"abandoned fork, {t['external_effects']} external effect(s) to decide")


def write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
