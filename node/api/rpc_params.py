"""Parameters of the public JSON-RPC methods: the error codes, and the parsing of heights,
hashes, transactions and eras, strict enough that bad input gets invalid-params, never an
internal error (docs/PROTOCOL.md §9).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import sys
from typing import Any

from chain.errors import ChainError
from node.mempool import MempoolReject
from node.node import Node
from state.records import (
    SYMBOL_RE,
)

PARSE_ERROR = -32700


INVALID_REQUEST = -32600


METHOD_NOT_FOUND = -32601


INVALID_PARAMS = -32602


INTERNAL_ERROR = -32603


COMMIT_TIMEOUT = 1020


NOT_FOUND = 1030


STORE_FAILURE = 1040
"""The node's store cannot answer truthfully (damaged files, or a state value that differs
from the committed tree): ``data.reason`` says which (node/api/store_guard.py)."""


U64_MAX = 2**64 - 1


HEX32 = re.compile(r"[0-9a-fA-F]{64}")


HEXANY = re.compile(r"(?:[0-9a-fA-F]{2})+")


MAX_KEY = 1024


class RPCError(ChainError):
    """An error answer: ``code`` and ``message`` go to the client, ``data`` if given."""

    reason = "rpc_error"

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


Params = dict[str, Any]


def only_params(params: Params, allowed: set[str]) -> None:
    extra = set(params) - allowed
    if extra:
        raise RPCError(INVALID_PARAMS, f"unknown parameter(s) {sorted(extra)}")


def parse_u64(v: Any, name: str) -> int:
    """A u64 parameter given as a JSON integer or an ASCII decimal string.

    The string's length is checked before ``int()``: Python refuses to convert more than
    4300 digits (ValueError), and that must be an invalid-params answer, not an internal
    error. (A JSON *number* that long is read as Infinity by :func:`json_int`.)"""
    if isinstance(v, float) and math.isinf(v):
        raise RPCError(INVALID_PARAMS, f"{name} must be an integer in [0, 2**64-1]")
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise RPCError(INVALID_PARAMS, f"{name} must be an integer or a decimal string")
    if isinstance(v, str):
        # isascii: str.isdigit() also accepts digits such as '²' that int() refuses.
        if not (v.isascii() and v.isdigit()):
            raise RPCError(INVALID_PARAMS, f"{name} must be a non-negative integer")
        if len(v.lstrip("0")) > len(str(U64_MAX)):
            raise RPCError(INVALID_PARAMS, f"{name} must be an integer in [0, 2**64-1]")
        v = int(v)
    if not 0 <= v <= U64_MAX:  # above 2**64-1 the store's height keys cannot be packed
        raise RPCError(INVALID_PARAMS, f"{name} must be an integer in [0, 2**64-1]")
    return v


def parse_height(params: Params, node: Node, name: str = "height") -> int:
    v = params.get(name)
    if v is None:
        return node.head.height
    return parse_u64(v, name)


def json_int(text: str) -> int | float:
    """JSON integers for ``json.loads``; one longer than Python converts (4300 digits by
    default) becomes ±Infinity, which the id check and every parameter refuse, instead of
    making the whole body unparsable."""
    limit = sys.get_int_max_str_digits()
    if limit and len(text.lstrip("-")) > limit:
        return -math.inf if text.startswith("-") else math.inf
    return int(text)


def param_hex32(params: Params, name: str) -> bytes:
    v = params.get(name)
    if not isinstance(v, str):
        raise RPCError(INVALID_PARAMS, f"{name} is required (64 hex characters)")
    v = v.removeprefix("0x")
    if not HEX32.fullmatch(v):
        raise RPCError(INVALID_PARAMS, f"{name} must be 64 hex characters")
    return bytes.fromhex(v)


def tx_param(params: Params) -> bytes:
    v = params.get("tx")
    if not isinstance(v, str):
        raise RPCError(INVALID_PARAMS, "tx is required (base64 of the transaction bytes)")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RPCError(INVALID_PARAMS, "tx is not valid base64") from e


def reject_error(e: MempoolReject) -> RPCError:
    return RPCError(int(e.code), e.message, {"reason": e.code.name.lower()})


def era_height(params: Params) -> tuple[int, int] | None:
    """``(era, height)`` when the call names an era, else None (the chain as it is)."""
    if params.get("era") is None:
        return None
    era = parse_u64(params["era"], "era")
    if "hash" in params:
        raise RPCError(INVALID_PARAMS, "era goes with height, not hash: give era and height")
    if params.get("height") is None:
        raise RPCError(INVALID_PARAMS, "height is required with era")
    return era, parse_u64(params["height"], "height")


def param_symbol(params: Params) -> str:
    symbol = params.get("symbol")
    if not isinstance(symbol, str) or not SYMBOL_RE.fullmatch(symbol):
        raise RPCError(INVALID_PARAMS, "symbol is required, e.g. BTC-USD-PERP")
    return symbol
