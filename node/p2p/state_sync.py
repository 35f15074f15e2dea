"""State sync: a fresh follower starts from a peer's state instead of replaying every block.

Why: a follower that joins late would otherwise re-execute the whole chain from the genesis.
The peer (any node: producer or follower) writes a snapshot file of its head from one
consistent LevelDB snapshot (``state/recovery/snapshot_file.py``, the format of
``snapshot export``) and streams it (docs/PROTOCOL.md §13.4). The follower trusts none of
it: the file is imported only if its state recomputes to the root of a header signed by the
genesis producer (``import_into``), and the fork certificates sent with it only if each
meets the genesis operators' threshold. State, tree, head and certificates are written in
one batch; the partial download lives in ``data/state_sync/`` and is worth nothing until
then. After the import the node follows from that height like any follower.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from chain.admin import AdminRefused, SignedForkCertificate
from chain.errors import ChainError
from genesis.format import Genesis
from node.config import parse_peer
from node.node import Node
from node.p2p.wire import (
    SNAPSHOT_CHUNK,
    VERSION,
    ErrorMsg,
    FramedStream,
    Hello,
    ProtocolError,
    SnapshotBegin,
    SnapshotChunk,
    SnapshotEnd,
    SnapshotRequest,
    check_hello,
)
from state import schema
from state.meta import fork_certificates
from state.recovery.snapshot_file import SnapshotFileError, SnapshotHeader, export, import_into
from state.store import Store

log = logging.getLogger("appchain.state_sync")

SYNC_DIR = "state_sync"
"""Under ``data/``: snapshots being served (``serve-*``) or fetched (``fetched.snapshot``)."""

CHUNK_TIMEOUT_S = 60.0
"""The longest a follower waits for the next frame of a snapshot (the first one waits for
the peer to write the file)."""


class StateSyncRefused(ChainError):
    """What the peer sent cannot be imported (bad root, bad signature, bad certificate,
    another chain): not retried, the operator has to look."""

    reason = "state_sync_refused"


# -- the serving side ----------------------------------------------------------------------


def clear_served(data_dir: Path) -> None:
    """Remove files a killed node was serving (they are temporary copies)."""
    for p in (data_dir / SYNC_DIR).glob("serve-*"):
        p.unlink(missing_ok=True)


def _write_served(node: Node, path: Path) -> tuple[SnapshotHeader, list[bytes]]:
    scratch = Store.scratch_of(node.store)  # one LevelDB snapshot: head and state agree
    try:
        hdr = export(scratch, path, "state-sync")
        certs = [c.encode() for c in fork_certificates(scratch)]
    finally:
        scratch.close()
    return hdr, certs


async def serve_snapshot(node: Node, fs: FramedStream, slot: trio.Lock) -> None:
    """Answer one ``snapshot_request``: the head's state as a snapshot file, then close.
    One at a time per node (each costs a full state write)."""
    async with slot:
        path = node.home.data_dir / SYNC_DIR / f"serve-{uuid.uuid4().hex}.snapshot"
        try:
            try:
                hdr, certs = await trio.to_thread.run_sync(_write_served, node, path)
                size = path.stat().st_size
            except (OSError, ChainError) as e:
                log.warning("cannot write a snapshot to serve: %s", e)
                raise ProtocolError(f"this node cannot write a snapshot now: {e}",
                                    reason="snapshot_unavailable") from e
            await fs.send(SnapshotBegin(hdr.height, hdr.era, size, certs))
            digest = hashlib.sha256()
            async with await trio.open_file(path, "rb") as f:
                while chunk := await f.read(SNAPSHOT_CHUNK):
                    digest.update(chunk)
                    await fs.send(SnapshotChunk(chunk))
            await fs.send(SnapshotEnd(digest.digest()))
            log.info("served the state at height %d (%d keys, %d bytes)", hdr.height,
                     hdr.keys, size)
        finally:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)


# -- the fetching side ---------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    """A downloaded snapshot file, not yet checked."""

    path: Path
    begin: SnapshotBegin


def genesis_hello(g: Genesis) -> Hello:
    """The hello of a node with nothing but its genesis."""
    return Hello(VERSION, g.chain_id, g.hash, "follower", 0, g.initial_height - 1, g.hash, "")


async def _receive_file(fs: FramedStream, out: Any, size: int) -> bytes:
    """Chunks into ``out`` (a trio async file) until ``snapshot_end``; its digest."""
    digest = hashlib.sha256()
    got = 0
    while True:
        with trio.fail_after(CHUNK_TIMEOUT_S):
            msg = await fs.receive()
        if isinstance(msg, SnapshotChunk):
            got += len(msg.data)
            if got > size:
                raise ProtocolError(f"snapshot longer than the {size} bytes announced")
            digest.update(msg.data)
            await out.write(msg.data)
        elif isinstance(msg, SnapshotEnd):
            if got != size or msg.sha256 != digest.digest():
                raise ProtocolError(f"snapshot of {got} bytes (announced {size}) does not "
                                    "match its digest: damaged in transit")
            return msg.sha256
        elif isinstance(msg, ErrorMsg):
            raise ProtocolError(f"refused by the peer: {msg.message}", reason=msg.reason)
        else:
            raise ProtocolError(f"unexpected {type(msg).__name__} during a snapshot")


async def fetch_snapshot(peer: str, g: Genesis, data_dir: Path,
                         handshake_timeout_s: float) -> Fetched:
    """Download ``peer``'s state to ``data_dir/state_sync/fetched.snapshot`` (atomically)."""
    host, port = parse_peer(peer)
    with trio.fail_after(handshake_timeout_s):
        stream = await trio.open_tcp_stream(host, port)
    async with stream:
        fs = FramedStream(stream)
        with trio.fail_after(CHUNK_TIMEOUT_S):
            await fs.send(genesis_hello(g))
            hello = await fs.receive()
            if isinstance(hello, ErrorMsg):
                raise ProtocolError(f"refused by the peer: {hello.message}",
                                    reason=hello.reason)
            if not isinstance(hello, Hello):
                raise ProtocolError("the first frame must be hello")
            check_hello(hello, g.chain_id, g.hash)
            await fs.send(SnapshotRequest())
            begin = await fs.receive()  # (the peer writes the file first)
        if isinstance(begin, ErrorMsg):
            raise ProtocolError(f"refused by the peer: {begin.message}", reason=begin.reason)
        if not isinstance(begin, SnapshotBegin):
            raise ProtocolError("expected snapshot_begin")
        d = data_dir / SYNC_DIR
        d.mkdir(parents=True, exist_ok=True)
        final = d / "fetched.snapshot"
        tmp = d / "fetched.snapshot.part"
        async with await trio.open_file(tmp, "wb") as out:
            await _receive_file(fs, out, begin.size)
            await out.flush()
            await trio.to_thread.run_sync(os.fsync, out.fileno())
        os.replace(tmp, final)
    return Fetched(final, begin)


def checked_certificates(g: Genesis, certs: list[bytes]) -> list[tuple[bytes, bytes]]:
    """The fork certificates as store writes, each checked against the genesis operators."""
    operators = [k.pub_key for k in g.operators]
    writes: list[tuple[bytes, bytes]] = []
    for raw in certs:
        try:
            signed = SignedForkCertificate.decode(raw)
            signed.verify(operators, g.operator_threshold)
        except AdminRefused as e:
            raise StateSyncRefused(f"a fork certificate sent with the snapshot is refused: "
                                   f"{e.message}") from e
        except ChainError as e:
            raise StateSyncRefused(f"a fork certificate sent with the snapshot does not "
                                   f"decode: {e}") from e
        c = signed.certificate
        if c.chain_id != g.chain_id:
            raise StateSyncRefused(f"the fork certificate of era {c.era} is for chain "
                                   f"{c.chain_id!r}")
        writes.append((schema.fork_key(c.era), raw))
    return writes


def import_fetched(store: Store, g: Genesis, fetched: Fetched) -> SnapshotHeader:
    """Check and import a fetched snapshot into an empty store in one batch; the file is
    removed once imported."""
    extra = checked_certificates(g, fetched.begin.certificates)
    try:
        hdr = import_into(store, fetched.path, g.hash, g.chain_id, g.producer.pub_key,
                          extra=extra)
    except SnapshotFileError as e:
        raise StateSyncRefused(f"the snapshot is refused: {e}") from e
    if (hdr.height, hdr.era) != (fetched.begin.height, fetched.begin.era):
        log.warning("snapshot_begin said height %d era %d, the file holds %d era %d",
                    fetched.begin.height, fetched.begin.era, hdr.height, hdr.era)
    fetched.path.unlink(missing_ok=True)
    return hdr


async def state_sync(peer: str, g: Genesis, store_dir: Path, data_dir: Path,
                     handshake_timeout_s: float) -> SnapshotHeader:
    """Fetch and import ``peer``'s state, retrying on network and protocol failures (0.5 s
    doubling to 10 s); raises :class:`StateSyncRefused` for a snapshot that fails its checks."""
    backoff = 0.5
    while True:
        try:
            fetched = await fetch_snapshot(peer, g, data_dir, handshake_timeout_s)
            log.info("fetched a snapshot of height %d from %s; checking it", fetched.begin.height,
                     peer)
            with Store(store_dir) as store:
                hdr = await trio.to_thread.run_sync(import_fetched, store, g, fetched)
            log.info("state sync: imported height %d (state root %s, %d keys) from %s",
                     hdr.height, hdr.state_root.hex(), hdr.keys, peer)
            return hdr
        except ProtocolError as e:
            if e.reason in ("wrong_chain", "wrong_version"):
                raise StateSyncRefused(f"state sync from {peer}: {e}") from e
            log.warning("state sync from %s: %s; retrying", peer, e)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                trio.TooSlowError) as e:
            log.warning("state sync from %s: %s; retrying", peer, str(e) or type(e).__name__)
        await trio.sleep(backoff)
        backoff = min(backoff * 2, 10.0)
