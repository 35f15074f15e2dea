"""Key files: JSON with the ed25519 seed, written atomically with mode 0600.

Format::

    {"name": "producer", "type": "ed25519", "pub_key": "<64 hex>", "priv_key": "<64 hex seed>"}
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from chain.crypto import PrivateKey
from chain.errors import ChainError
from node.fsutil import write_atomic


class KeyFileError(ChainError):
    """A key file that is missing, unreadable, malformed or inconsistent."""

    reason = "bad_key_file"


def write_key(path: str | os.PathLike[str], key: PrivateKey, name: str = "",
              overwrite: bool = False) -> None:
    """Write ``key`` to ``path`` (mode 0600). Refuses to replace an existing key file."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise KeyFileError(f"{p} already exists; refusing to overwrite a key")
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": name,
        "type": "ed25519",
        "pub_key": key.public_key.hex(),
        "priv_key": key.seed.hex(),
    }
    write_atomic(p, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o600)


def read_key(path: str | os.PathLike[str]) -> PrivateKey:
    """Load a key file, checking that its public key matches its seed."""
    p = Path(path)
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
    except FileNotFoundError as e:
        raise KeyFileError(f"key file {p} does not exist") from e
    if mode & 0o077:  # checked before the secret is read at all
        raise KeyFileError(f"{p} is readable by others (mode {mode:o}); run chmod 600 {p}")
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise KeyFileError(f"key file {p} does not exist") from e
    except (OSError, ValueError) as e:
        raise KeyFileError(f"cannot read key file {p}: {e}") from e
    try:
        if doc.get("type") != "ed25519":
            raise KeyFileError(f"{p}: type must be 'ed25519'")
        key = PrivateKey(bytes.fromhex(doc["priv_key"]))
        if key.public_key.hex() != str(doc["pub_key"]).lower():
            raise KeyFileError(f"{p}: pub_key does not match priv_key")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise KeyFileError(f"{p}: malformed key file ({e})") from e
    return key
