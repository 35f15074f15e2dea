"""Snapshot pins: a named, durable marker of a height whose state can be restored.

A pin records what identifies the state at a height (block hash, state root, block time) plus
who made it and when. Creating one writes a single small metadata record: the state at that
height stays reachable through the undo records of the blocks after it, which pruning
(``storage.keep_undo_blocks``, :func:`prunable_below`) never removes. ``appchain admin rollback
--to-snapshot LABEL`` restores it; ``snapshot export`` writes it out as a portable file.

Stored under the store's metadata keyspace (``m`` + ``pin/`` + label), outside the state:
pins are an operator's bookmarks, not consensus data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from chain.codec import U64, Bytes32, Length, Struct
from state import schema
from state.store import Head, Store
from state.store_errors import OperationRefused, StoreError

LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


AUTO_PREFIX = "auto-"


@dataclass(frozen=True, slots=True)
class SnapshotPin(Struct):
    label: Annotated[str, Length(1, 64)]
    height: U64
    block_hash: Bytes32
    state_root: Bytes32
    era: U64
    time: U64
    """Block time of the pinned block (ms)."""
    created_ms: U64
    """Wall clock when the pin was made."""
    operators: Annotated[tuple[Bytes32, ...], Length(0, 64)]
    """Operator keys that signed the command (empty for automatic pins)."""


def check_label(label: str) -> None:
    if not LABEL_RE.fullmatch(label):
        raise OperationRefused(f"snapshot label {label!r} must be 1-64 of A-Z a-z 0-9 . _ - "
                         "starting with a letter or digit")


def pin_key(label: str) -> bytes:
    return schema.META_PIN + label.encode()


def pin_at(head: Head, label: str, created_ms: int, operators: tuple[bytes, ...]
           ) -> SnapshotPin:
    return SnapshotPin(label, head.height, head.hash, head.state_root, head.era, head.time,
                       created_ms, operators)


def create_pin(store: Store, label: str, created_ms: int, operators: tuple[bytes, ...]
               ) -> SnapshotPin:
    """Pin the current head under ``label`` (refused if the label exists)."""
    check_label(label)
    if store.db.get(pin_key(label)) is not None:
        raise OperationRefused(f"snapshot {label!r} already exists")
    head = store.head()
    if head is None:
        raise StoreError("store has no genesis")
    pin = pin_at(head, label, created_ms, operators)
    store.db.put(pin_key(label), pin.encode(), sync=True)
    return pin


def get_pin(store: Store, label: str) -> SnapshotPin | None:
    raw = store.db.get(pin_key(label))
    return None if raw is None else SnapshotPin.decode(raw)


def list_pins(store: Store) -> list[SnapshotPin]:
    """Every pin, by height then label."""
    pins = [SnapshotPin.decode(v) for _, v in store.db.iterator(prefix=schema.META_PIN)]
    return sorted(pins, key=lambda p: (p.height, p.label))


def delete_pin(store: Store, label: str) -> SnapshotPin:
    pin = get_pin(store, label)
    if pin is None:
        raise OperationRefused(f"no snapshot {label!r}")
    store.db.delete(pin_key(label), sync=True)
    return pin


def prunable_below(store: Store, head: Head, keep: int) -> int:
    """Undo records of heights below the result may be pruned: the most recent ``keep``
    blocks' are kept, and so is every height above the oldest pin (rolling back to a pin
    needs the undo records of every block after it). 0 when nothing may go."""
    if keep <= 0:
        return 0
    limit = head.height - keep + 1
    oldest = min((p.height for p in list_pins(store)), default=None)
    if oldest is not None:
        limit = min(limit, oldest + 1)
    return max(0, limit)


def auto_pin_writes(store: Store, head: Head, interval: int, keep: int, created_ms: int
                    ) -> list[tuple[bytes, bytes | None]]:
    """Metadata writes that pin ``head`` automatically every ``interval`` blocks, keeping
    the ``keep`` most recent automatic pins (committed in the block's own batch)."""
    if interval <= 0 or head.height % interval:
        return []
    label = f"{AUTO_PREFIX}{head.height}"
    writes: list[tuple[bytes, bytes | None]] = [
        (pin_key(label), pin_at(head, label, created_ms, ()).encode())]
    autos = [p for p in list_pins(store) if p.label.startswith(AUTO_PREFIX)
             and p.operators == () and p.label != label]
    for old in autos[:max(0, len(autos) - (keep - 1))]:
        writes.append((pin_key(old.label), None))
    return writes
