"""JSON renderings of chain values, shared by the RPC server and the CLI.

Conventions (docs/PROTOCOL.md, "JSON conventions"): 64-bit integers are decimal strings
(JSON numbers lose precision above 2**53); hashes, keys and signatures are lowercase hex;
raw transactions and canonical encodings are standard base64; small counts and codes are
JSON numbers.
"""

from __future__ import annotations

import base64
from typing import Any

from chain.block import Block, Header, SignedHeader, TxResult
from chain.codes import ResultCode
from chain.errors import DecodeError
from chain.tx import Transaction, decode_tx


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def jsonify(obj: Any) -> Any:
    """Untyped canonical value -> JSON (bytes as hex, ints as strings)."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, dict):
        return {k: jsonify(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonify(v) for v in obj]
    raise TypeError(f"cannot render {type(obj).__name__}")


def header_json(h: Header) -> dict[str, Any]:
    return {
        "chain_id": h.chain_id,
        "era": str(h.era),
        "height": str(h.height),
        "prev_hash": h.prev_hash.hex(),
        "time": str(h.time),
        "tx_root": h.tx_root.hex(),
        "results_root": h.results_root.hex(),
        "state_root": h.state_root.hex(),
        "producer": h.producer.hex(),
    }


def signed_header_json(sh: SignedHeader) -> dict[str, Any]:
    return {
        "hash": sh.header.hash.hex(),
        "header": header_json(sh.header),
        "signature": sh.sig.hex(),
        "canonical": b64(sh.encode()),
    }


def tx_json(tx: Transaction) -> dict[str, Any]:
    return {
        "hash": tx.hash.hex(),
        "chain_id": tx.chain_id,
        "sender": tx.sender.hex(),
        "nonce": str(tx.nonce),
        "type": tx.type,
        "payload": jsonify(tx.payload.to_obj()),
        "signature": tx.sig.hex(),
    }


def decoded_or_error(raw: bytes) -> dict[str, Any]:
    try:
        return tx_json(decode_tx(raw))
    except DecodeError as e:
        return {"error": e.message}


def result_json(r: TxResult) -> dict[str, Any]:
    try:
        name = ResultCode(r.code).name.lower()
    except ValueError:
        name = "unknown"
    return {
        "code": r.code,
        "codespace": name,
        "log": r.log,
        "events": [
            {"type": e.type, "attributes": [{"key": a.key, "value": a.value} for a in e.attrs]}
            for e in r.events
        ],
    }


def block_json(block: Block) -> dict[str, Any]:
    return {
        "block_id": {"hash": block.hash.hex()},
        "block": {
            "header": header_json(block.header),
            "signature": block.sig.hex(),
            "data": {"txs": [b64(t) for t in block.txs]},
        },
    }
