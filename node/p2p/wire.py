"""Peer protocol frames and messages (docs/PROTOCOL.md §13).

A frame is a 4-byte big-endian length N, then N bytes: one msgpack map with a string ``"t"``
naming the message and its fields. A frame longer than :data:`MAX_FRAME` is refused before
it is read (a peer cannot make us buffer more than one block's worth). Messages are frozen
dataclasses; decoding checks every field's type, so a bad frame is a :class:`ProtocolError`
naming what is wrong, never a crash.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import msgpack
import trio

from chain.errors import ChainError

VERSION = 1
"""Protocol version carried in ``hello``; a peer of another version is refused."""

MAX_FRAME = 66 * 1024 * 1024
"""The largest frame accepted: a block (at most 63 MiB of transactions) plus its header."""

SNAPSHOT_CHUNK = 1 << 20
"""Bytes of a snapshot file per ``snapshot_chunk`` frame."""

_LEN = struct.Struct(">I")


class ProtocolError(ChainError):
    """A peer sent something this protocol does not allow; the connection is dropped."""

    reason = "bad_frame"


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame each way: who we are and where our chain is."""

    TYPE: ClassVar[str] = "hello"
    version: int
    chain_id: str
    genesis_hash: bytes
    role: str
    """``producer`` or ``follower``."""
    era: int
    height: int
    head_hash: bytes
    rpc: str
    """The sender's public JSON-RPC URL (``http://HOST:PORT``), or ``""`` if it has none yet:
    a follower forwards ``broadcast_tx_*`` to its producer's."""


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Follower -> producer: send me the blocks after my head, then every new one."""

    TYPE: ClassVar[str] = "subscribe"
    height: int
    """The follower's head height (blocks from ``height + 1`` are wanted)."""
    head_hash: bytes
    """The follower's head hash: if the producer's block at ``height`` differs, the
    follower is on an abandoned fork and gets the fork certificates instead."""
    era: int


@dataclass(frozen=True, slots=True)
class BlockMsg:
    """Producer -> follower: one committed block, in height order."""

    TYPE: ClassVar[str] = "block"
    height: int
    block: bytes
    certificate: bytes
    """The signed fork certificate of the block's era when it is the era's first block
    (the follower needs it to accept the new era), else empty."""


@dataclass(frozen=True, slots=True)
class ForkMsg:
    """Producer -> follower: the follower's head is not on the chain; these signed fork
    certificates (encoded ``SignedForkCertificate``, ascending era) say where it continues."""

    TYPE: ClassVar[str] = "fork"
    certificates: list[bytes]


@dataclass(frozen=True, slots=True)
class StatusMsg:
    """Producer -> follower, at least every second: its head and its halt (if any)."""

    TYPE: ClassVar[str] = "status"
    height: int
    era: int
    halted: bool
    halt_reason: str
    halt_by: str
    halt_since_ms: int


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """Follower -> peer, after the hellos instead of ``subscribe``: send me your state (state
    sync of a fresh follower, docs/PROTOCOL.md §13.4)."""

    TYPE: ClassVar[str] = "snapshot_request"


@dataclass(frozen=True, slots=True)
class SnapshotBegin:
    """Peer -> follower: a snapshot file (§10 format) of ``size`` bytes follows in chunks."""

    TYPE: ClassVar[str] = "snapshot_begin"
    height: int
    era: int
    size: int
    certificates: list[bytes]
    """Every stored ``SignedForkCertificate`` up to ``era``, ascending (the follower stores
    them with the state, so it can serve them and check later eras' blocks)."""


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    TYPE: ClassVar[str] = "snapshot_chunk"
    data: bytes
    """The next at most :data:`SNAPSHOT_CHUNK` bytes of the file."""


@dataclass(frozen=True, slots=True)
class SnapshotEnd:
    """Peer -> follower after the last chunk, then close."""

    TYPE: ClassVar[str] = "snapshot_end"
    sha256: bytes
    """SHA-256 of the whole file (a transport check; the state is checked by its root)."""


@dataclass(frozen=True, slots=True)
class ErrorMsg:
    """Either way, before closing: why."""

    TYPE: ClassVar[str] = "error"
    reason: str
    message: str


Message = (Hello | Subscribe | BlockMsg | ForkMsg | StatusMsg | SnapshotRequest
           | SnapshotBegin | SnapshotChunk | SnapshotEnd | ErrorMsg)
_TYPES: dict[str, Any] = {c.TYPE: c for c in (Hello, Subscribe, BlockMsg, ForkMsg,
                                               StatusMsg, SnapshotRequest, SnapshotBegin,
                                               SnapshotChunk, SnapshotEnd, ErrorMsg)}
_FIELD_TYPES: dict[str, Any] = {"int": int, "str": str, "bytes": bytes, "bool": bool,
                                "list[bytes]": list}


def encode(msg: Message) -> bytes:
    """One frame: length prefix and the msgpack map."""
    body: dict[str, Any] = {"t": msg.TYPE}
    for f in fields(msg):
        body[f.name] = getattr(msg, f.name)
    raw = msgpack.packb(body, use_bin_type=True)
    return _LEN.pack(len(raw)) + raw


def decode(raw: bytes) -> Message:
    """A frame's body back to its message; any deviation is a ProtocolError."""
    try:
        body = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types on bad input
        raise ProtocolError(f"frame is not msgpack: {e}") from None
    if type(body) is not dict or type(body.get("t")) is not str:
        raise ProtocolError("frame is not a map with a string 't'")
    cls = _TYPES.get(body["t"])
    if cls is None:
        raise ProtocolError(f"unknown message {body['t'][:40]!r}")
    kwargs: dict[str, Any] = {}
    got: dict[str, Any] = body
    for f in fields(cls):
        if f.name not in body:
            raise ProtocolError(f"{cls.TYPE}: missing {f.name}")
        v = got[f.name]
        want = _FIELD_TYPES[str(f.type)]
        if type(v) is not want or (want is int and not 0 <= v < 2**64):
            raise ProtocolError(f"{cls.TYPE}.{f.name}: bad value")
        if want is list and not all(type(x) is bytes for x in v):
            raise ProtocolError(f"{cls.TYPE}.{f.name}: must be a list of bytes")
        kwargs[f.name] = v
    if set(body) - {"t"} - set(kwargs):
        raise ProtocolError(f"{cls.TYPE}: unknown fields")
    return cls(**kwargs)  # type: ignore[no-any-return]


def check_hello(peer: Hello, chain_id: str, genesis_hash: bytes) -> None:
    """Refuse a peer of another protocol version or another chain."""
    if peer.version != VERSION:
        raise ProtocolError(f"protocol version {peer.version}, we speak {VERSION}",
                            reason="wrong_version")
    if peer.chain_id != chain_id or peer.genesis_hash != genesis_hash:
        raise ProtocolError(f"peer is on chain {peer.chain_id!r} (genesis "
                            f"{peer.genesis_hash.hex()[:16]}), we are on "
                            f"{chain_id!r} (genesis {genesis_hash.hex()[:16]})",
                            reason="wrong_chain")


class FramedStream:
    """Frames over one trio stream; reads are bounded in size and (by the caller) in time."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buf = bytearray()

    async def _read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = await self.stream.receive_some(min(max(65536, n - len(self._buf)), 1 << 20))
            if not chunk:
                raise ProtocolError("peer closed the connection", reason="closed")
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def receive(self) -> Message:
        (n,) = _LEN.unpack(await self._read_exactly(4))
        if n > MAX_FRAME:
            raise ProtocolError(f"frame of {n} bytes exceeds the limit {MAX_FRAME}",
                                reason="oversized")
        return decode(await self._read_exactly(n))

    async def send(self, msg: Message) -> None:
        await self.stream.send_all(encode(msg))
