"""What every `appchain` command shares: clean errors (``Error: message``, exit status 1)
instead of tracebacks, JSON output, the common options and argument parsers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar

import click

from chain.errors import ChainError
from node.client.rpc_client import DEFAULT_NODE, NodeUnreachable, RPCCallError
from node.config import ConfigError
from node.keyfile import KeyFileError
from node.node_error import NodeError
from node.signer import DoubleSignRefused

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


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


def hex32(value: str, what: str) -> bytes:
    v = value.removeprefix("0x")
    try:
        b = bytes.fromhex(v)
    except ValueError:
        b = b""
    if len(b) != 32:
        raise click.BadParameter(f"{what} must be 64 hex characters", param_hint=what)
    return b


def now_rfc3339() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


node_option = click.option("--node", "node_url", default=DEFAULT_NODE, show_default=True,
                           envvar="APPCHAIN_NODE", help="JSON-RPC address of a node.")


height_option = click.option("--height", type=click.IntRange(0, 2**64 - 1), default=None,
                             help="Height to read at (default: the node's latest).")


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
