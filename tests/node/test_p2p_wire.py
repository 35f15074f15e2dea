"""The peer protocol's frames (docs/PROTOCOL.md §13.1): the worked examples, round trips,
and every malformed frame refused with a ProtocolError."""

from __future__ import annotations

import re
import struct

import msgpack
import pytest

from node.p2p.wire import (
    MAX_FRAME,
    BlockMsg,
    ErrorMsg,
    ForkMsg,
    Hello,
    ProtocolError,
    SnapshotBegin,
    SnapshotChunk,
    SnapshotEnd,
    SnapshotRequest,
    StatusMsg,
    Subscribe,
    decode,
    encode,
)
from tests.helpers import REPO

DOC = (REPO / "docs" / "PROTOCOL.md").read_text()


def test_the_worked_examples_of_the_protocol_document() -> None:
    sub = Subscribe(5, bytes.fromhex(
        "0d5eeb1036c0706ac06f23ed3d97c5df7073618ae3b1bc5243d76b4cb10401ce"), 0)
    frame = encode(sub).hex()
    assert frame in DOC
    assert encode(ErrorMsg("wrong_chain", "x")).hex() in DOC
    hello = Hello(1, "example-1", b"\x11" * 32, "producer", 0, 5, sub.head_hash,
                  "http://127.0.0.1:26657")
    assert encode(hello).hex() in DOC
    assert decode(bytes.fromhex(frame)[4:]) == sub
    assert f"{MAX_FRAME:,}" in DOC


@pytest.mark.parametrize("msg", [
    Hello(1, "c", bytes(32), "follower", 0, 0, bytes(32), ""),
    Subscribe(2**64 - 1, b"", 3),
    BlockMsg(1, b"\x00" * 10, b""),
    ForkMsg([b"a", b"b"]),
    StatusMsg(7, 1, True, "why", "operators:ab", 123),
    ErrorMsg("bad_frame", "m"),
    SnapshotRequest(),
    SnapshotBegin(10, 1, 12345, [b"cert"]),
    SnapshotChunk(b"\x00" * 100),
    SnapshotEnd(b"\x11" * 32),
])
def test_round_trip(msg: object) -> None:
    raw = encode(msg)  # type: ignore[arg-type]
    assert struct.unpack(">I", raw[:4])[0] == len(raw) - 4
    assert decode(raw[4:]) == msg


@pytest.mark.parametrize("body, why", [
    (b"\xc1", "not msgpack"),
    (msgpack.packb([1, 2]), "string 't'"),
    (msgpack.packb({"t": "nope"}), "unknown message"),
    (msgpack.packb({"t": "error", "reason": "r"}), "missing message"),
    (msgpack.packb({"t": "error", "reason": "r", "message": 5}), "bad value"),
    (msgpack.packb({"t": "error", "reason": "r", "message": "m", "x": 1}), "unknown fields"),
    (msgpack.packb({"t": "subscribe", "height": -1, "head_hash": b"", "era": 0}), "bad value"),
    (msgpack.packb({"t": "subscribe", "height": True, "head_hash": b"", "era": 0}),
     "bad value"),
    (msgpack.packb({"t": "fork", "certificates": [b"a", "s"]}), "list of bytes"),
])
def test_malformed_frames_are_protocol_errors(body: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(why)):
        decode(body)
