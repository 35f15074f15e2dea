"""Portable snapshot files: the full state at a height, its root and identifying header.

Why a file when pins exist: a pin restores a height through undo records, which only know
what blocks wrote. A write that bypassed the block path (the incident: a faulty upgrade wrote
corrupted funding indices straight into the database during maintenance) is invisible to
them. ``maintenance begin`` therefore writes the pre-maintenance state to a file, and a
rollback to that pin makes the state equal to the file, key for key, in its last batch.
The same file moves a node's state to another machine (``snapshot import``).

Format (all msgpack, canonical as in chain/codec.py; read as a stream)::

    MAGIC
    header   {chain_id, genesis_hash, label, height, block_hash, state_root, era, time, keys,
              signed_header}   (the producer-signed header of that block; checked on import)
    keys x   [key, value]          state keys in ascending byte order
    trailer  {count, sha256}       sha256 over the canonical bytes of every [key, value]

Importing recomputes the state root from the pairs and refuses the file unless it equals
the header's ``state_root`` (and the count and digest match).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from chain.block import Block, SignedHeader
from chain.codec import decode, encode
from chain.errors import ChainError
from state import schema
from state.schema import TREE
from state.store import Head, Store
from state.store_errors import OperationRefused, StoreError
from state.tree import StateTree
from state.tree_groups import DictNodeStore

MAGIC = b"APPCHAIN-SNAPSHOT-v1\n"


class SnapshotFileError(ChainError):
    """A snapshot file that is not what it claims (truncated, damaged, of another chain, or
    whose state does not recompute to its root): a rejection of the file."""

    reason = "bad_snapshot_file"


@dataclass(frozen=True)
class SnapshotHeader:
    chain_id: str
    genesis_hash: bytes
    label: str
    height: int
    block_hash: bytes
    state_root: bytes
    era: int
    time: int
    keys: int
    signed_header: bytes = b""
    """The producer-signed header of the block at ``height`` (canonical ``SignedHeader``
    bytes; empty at the genesis height, whose root follows from the genesis file)."""

    def to_obj(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "genesis_hash": self.genesis_hash,
                "label": self.label, "height": self.height, "block_hash": self.block_hash,
                "state_root": self.state_root, "era": self.era, "time": self.time,
                "keys": self.keys, "signed_header": self.signed_header}

    def check_header(self, producer: bytes | None) -> None:
        """The signed header must be for this block and state root, and (when ``producer``
        is given) signed by it."""

        if not self.signed_header:
            return
        try:
            sh = SignedHeader.decode(self.signed_header)
            if producer is not None:
                sh.verify(producer)
        except ChainError as e:
            raise SnapshotFileError(f"the snapshot's signed header does not verify: {e}") from e
        h = sh.header
        if (h.hash, h.height, h.state_root, h.era) != (self.block_hash, self.height,
                                                       self.state_root, self.era):
            raise SnapshotFileError("the snapshot's signed header is for another block or root")

    def head(self) -> Head:
        return Head(self.height, self.block_hash, self.state_root, self.era, self.time)


def overlaid(store: Store, prior: dict[bytes, bytes | None]
             ) -> Iterator[tuple[bytes, bytes]]:
    """The committed state with ``prior`` (state key -> value, None: absent) in place of
    the stored values, ascending."""
    extra = sorted(k for k, v in prior.items() if v is not None)
    i = 0
    for k, v in store.iter_state():
        while i < len(extra) and extra[i] < k:
            if store.state_get(extra[i]) is None:
                yield extra[i], prior[extra[i]]  # type: ignore[misc]
            i += 1
        if k in prior:
            if prior[k] is not None:
                yield k, prior[k]  # type: ignore[misc]
        else:
            yield k, v
    for k in extra[i:]:
        if store.state_get(k) is None:
            yield k, prior[k]  # type: ignore[misc]


def state_at(store: Store, height: int) -> Iterator[tuple[bytes, bytes]]:
    """Every state (key, value) as of ``height``, ascending: the current state with the
    undo records of the blocks above ``height`` applied (cost: the state, plus those
    blocks' changes)."""
    head = store.head()
    if head is None:
        raise StoreError("store has no head")
    prior: dict[bytes, bytes | None] = {}
    for h in range(head.height, height, -1):  # lower heights last: their prior wins
        undo = store.undo_record(h)
        if undo is None:
            raise OperationRefused(f"no undo record for height {h}")
        for k, v in undo:
            prior[k] = v
    return overlaid(store, prior)


def export(store: Store, path: Path, label: str, height: int | None = None) -> SnapshotHeader:
    """Write the state at ``height`` (default: the head) to ``path`` (atomically)."""
    head = store.head()
    if head is None:
        raise StoreError("store has no head")
    h = head.height if height is None else height
    if h == head.height:
        target = head
    else:
        raw = store.db.get(schema.undo_key(h + 1))
        if raw is None:
            raise OperationRefused(f"height {h} is no longer held")
        target = Head.decode(decode(raw, 1 << 30)["prev_head"])
    pairs = list(state_at(store, h))
    raw_block = store.block_bytes(h)

    signed = Block.signed_header_of(raw_block).encode() if raw_block is not None else b""
    hdr = SnapshotHeader(
        chain_id=(store.db.get(schema.META_CHAIN_ID) or b"").decode(),
        genesis_hash=store.genesis_hash() or b"", label=label, height=h,
        block_hash=target.hash, state_root=target.state_root, era=target.era,
        time=target.time, keys=len(pairs), signed_header=signed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    digest = hashlib.sha256()
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(encode(hdr.to_obj()))
        for k, v in pairs:
            b = encode([k, v])
            digest.update(b)
            f.write(b)
        f.write(encode({"count": len(pairs), "sha256": digest.digest()}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return hdr


class SnapshotReader:
    """Streams a snapshot file, checking count and digest at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        if self._f.read(len(MAGIC)) != MAGIC:
            self.close()
            raise SnapshotFileError(f"{path} is not an appchain snapshot file")
        self._u = msgpack.Unpacker(self._f, raw=False, strict_map_key=True,
                                   max_buffer_size=1 << 30)
        try:
            h = next(self._u)
            self.header = SnapshotHeader(
                str(h["chain_id"]), bytes(h["genesis_hash"]), str(h["label"]),
                int(h["height"]), bytes(h["block_hash"]), bytes(h["state_root"]),
                int(h["era"]), int(h["time"]), int(h["keys"]),
                bytes(h.get("signed_header", b"")))
        except (StopIteration, KeyError, TypeError, ValueError) as e:
            self.close()
            raise SnapshotFileError(f"{path}: bad snapshot header ({e})") from e

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> SnapshotReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pairs(self) -> Iterator[tuple[bytes, bytes]]:
        digest = hashlib.sha256()
        n = 0
        last = b""
        for obj in self._u:
            if isinstance(obj, dict):
                if obj.get("count") != n or obj.get("sha256") != digest.digest():
                    raise SnapshotFileError(f"{self.path}: count or digest does not match: "
                                            "the file is truncated or damaged")
                return
            try:
                k, v = bytes(obj[0]), bytes(obj[1])
            except (TypeError, IndexError) as e:
                raise SnapshotFileError(f"{self.path}: bad entry {n}") from e
            if n and k <= last:
                raise SnapshotFileError(f"{self.path}: keys out of order at entry {n}")
            digest.update(encode([k, v]))
            last = k
            n += 1
            yield k, v
        raise SnapshotFileError(f"{self.path}: no trailer: the file is truncated")


def check_file(path: Path, producer: bytes | None = None) -> tuple[SnapshotHeader, int]:
    """Recompute the root of a snapshot file; raises unless it matches its header (and the
    signed header matches too, signed by ``producer`` when given)."""
    with SnapshotReader(path) as r:
        r.header.check_header(producer)
        pairs = list(r.pairs())
        root = StateTree(DictNodeStore()).apply(pairs)
        if root != r.header.state_root:
            raise SnapshotFileError(f"{path}: the state recomputes to root {root.hex()}, "
                                    f"the header says {r.header.state_root.hex()}")
        return r.header, len(pairs)


def differences(store_pairs: Iterator[tuple[bytes, bytes]],
                file_pairs: Iterator[tuple[bytes, bytes]]
                ) -> Iterator[tuple[bytes, bytes | None]]:
    """Writes that turn the first (sorted) state into the second: (key, value or None)."""
    a = next(store_pairs, None)
    b = next(file_pairs, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            yield a[0], None
            a = next(store_pairs, None)
        elif a is None or b[0] < a[0]:
            yield b[0], b[1]
            b = next(file_pairs, None)
        else:
            if a[1] != b[1]:
                yield b[0], b[1]
            a = next(store_pairs, None)
            b = next(file_pairs, None)


def import_into(store: Store, path: Path, genesis_hash: bytes, chain_id: str,
                producer: bytes | None = None,
                extra: Sequence[tuple[bytes, bytes]] = ()) -> SnapshotHeader:
    """Initialise an EMPTY store from a snapshot file: check the file (root recomputed from
    its pairs, count, digest), that it belongs to this genesis, then write the state, its
    tree, the head and ``extra`` (raw keys, e.g. checked fork certificates) in one batch."""

    if store.head() is not None:
        raise OperationRefused("the store is not empty: import needs a fresh home")
    with SnapshotReader(path) as r:
        hdr = r.header
        if hdr.genesis_hash != genesis_hash or hdr.chain_id != chain_id:
            raise SnapshotFileError(f"{path} is a snapshot of chain {hdr.chain_id!r} (genesis "
                             f"{hdr.genesis_hash.hex()}), this home runs {chain_id!r} "
                             f"(genesis {genesis_hash.hex()})")
        hdr.check_header(producer)
        state = store.overlay()
        for k, v in r.pairs():
            state.put(k, v)
    tree = store.overlay(TREE)
    root = StateTree(tree).apply(state.changes())
    if root != hdr.state_root:
        raise SnapshotFileError(f"{path}: the state recomputes to root {root.hex()}, "
                                f"the header says {hdr.state_root.hex()}; nothing was "
                                "written")
    store.init_genesis(genesis_hash, chain_id, (state, tree), hdr.head(), extra)
    return hdr
