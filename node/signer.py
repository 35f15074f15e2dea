"""The producer's signing key with a last-signed record, so it never equivocates.

Before a block signature exists anywhere but in memory, the signed block is written to
``data/priv_validator_state.json`` (atomically, fsynced). The signer then refuses to sign a
different block at the same (era, height) or any block below the record, even after a crash
or if the store was restored from an older copy.

After a crash between signing and committing, the record holds the one block the producer
may put at that height; the node re-commits exactly that block on start (see
:meth:`Signer.pending_block`).
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from chain.block import Block, Header, sign_header
from chain.crypto import PrivateKey
from chain.errors import Failure
from node.fsutil import write_atomic


class DoubleSignRefused(Failure):
    """Signing this header would contradict a block already signed (the node's own record
    and its store disagree: a failure, never signed through)."""

    reason = "double_sign_refused"


class Signer:
    """Signs headers for one producer key, guarded by the last-signed record."""

    def __init__(self, key: PrivateKey, state_file: Path) -> None:
        self.key = key
        self.state_file = state_file
        self.era = -1
        self.height = -1
        self.block_hash = b""
        self.block_bytes = b""
        self._load()

    @property
    def public_key(self) -> bytes:
        return self.key.public_key

    def _load(self) -> None:
        if not self.state_file.exists():
            return
        try:
            doc = json.loads(self.state_file.read_text())
            self.era = int(doc["era"])
            self.height = int(doc["height"])
            self.block_hash = bytes.fromhex(doc["block_hash"])
            self.block_bytes = base64.b64decode(doc.get("block", ""), validate=True)
        except (OSError, ValueError, KeyError, TypeError, binascii.Error) as e:
            raise DoubleSignRefused(
                f"last-signed record {self.state_file} is unreadable ({e}); refusing to sign"
            ) from e

    def check(self, header: Header) -> None:
        """Raise ``DoubleSignRefused`` if signing ``header`` could equivocate."""
        if header.era < self.era:
            raise DoubleSignRefused(
                f"already signed in era {self.era}; refusing era {header.era}")
        if header.era == self.era:
            if header.height < self.height:
                raise DoubleSignRefused(
                    f"already signed height {self.height} in era {self.era}; refusing "
                    f"height {header.height} (was the store restored from an older copy?)"
                )
            if header.height == self.height and header.hash != self.block_hash:
                raise DoubleSignRefused(
                    f"already signed a different block at height {self.height} in era "
                    f"{self.era}"
                )

    def sign_block(self, header: Header, txs: tuple[bytes, ...]) -> tuple[Block, bytes]:
        """Sign, record durably, then return the block and its bytes."""
        self.check(header)
        if header.era == self.era and header.height == self.height:
            block = Block.decode_block(self.block_bytes)
            return block, self.block_bytes
        block = Block(header, sign_header(self.key, header), txs)
        raw = block.encode()
        doc = {
            "era": header.era,
            "height": header.height,
            "block_hash": header.hash.hex(),
            "block": base64.b64encode(raw).decode(),
        }
        write_atomic(self.state_file, json.dumps(doc).encode(), mode=0o600)
        self.era, self.height, self.block_hash, self.block_bytes = (
            header.era, header.height, header.hash, raw)
        return block, raw

    def pending_block(self, era: int, head_height: int) -> bytes | None:
        """The signed-but-uncommitted block right above the head, if the record holds one."""
        if self.era == era and self.height == head_height + 1 and self.block_bytes:
            return self.block_bytes
        return None
