"""Every key layout of the node's single LevelDB, in one place.

The database is split into keyspaces by a one-byte prefix. Heights are 8-byte big-endian so
that byte order is numeric order. ``SCHEMA_VERSION`` is written under ``META_SCHEMA`` when a
store is created and checked on every open, so an old binary never misreads a newer layout.

| prefix | key                          | value                                           |
|--------|------------------------------|-------------------------------------------------|
| ``m``  | ``m`` + name                 | node metadata (head, genesis hash, ...)         |
| ``b``  | ``b`` + height(8)            | canonical block bytes                           |
| ``h``  | ``h`` + block hash(32)       | height(8)                                       |
| ``t``  | ``t`` + tx hash(32)          | height(8) + index(4)                            |
| ``r``  | ``r`` + height(8)            | canonical list of the block's TxResult bytes    |
| ``s``  | ``s`` + state key            | state value (see "State keys" below)            |
| ``u``  | ``u`` + height(8)            | undo record: prior value of every key touched   |
| ``n``  | ``n`` + tree node key        | state tree node (see ``state/tree.py``)         |
| ``x``  | ``x`` + era(8) + height(8) + kind(1) | an abandoned block (``b``) or its results   |
|        |                              | (``r``), archived by a rollback, never deleted  |
| ``y``  | ``y`` + tx hash(32)          | era(8) + height(8) + index(4) of the last       |
|        |                              | abandoned block that held the transaction       |
| ``z``  | ``z`` + era(8) + state key   | ``[value or nil]``: an account or position as   |
|        |                              | the abandoned head of ``era`` left it           |

Metadata under ``m``, each value a typed record of ``state/meta.py``: ``head``, ``schema``,
``genesis_hash``, ``chain_id``, ``halt`` (the halt record), ``halt_at`` (a scheduled halt
height), ``pin/`` + label (snapshot pins, ``state/recovery/pins.py``), ``op`` (the recovery
operation in progress, ``state/recovery/rollback.py`` and ``replay.py``), ``fork/`` + era(8)
(the fork certificate that started an era), ``audit/`` + seq(8) (the operator audit log,
``state/recovery/audit.py``), ``admin_nonce/`` + nonce(8) (admin nonces seen).

State keys (after the ``s`` prefix) are themselves prefixed by what they hold:
``acct/`` + address(32) for accounts and ``param/`` + name for chain parameters.
"""

from __future__ import annotations

import struct

SCHEMA_VERSION = 4

META = b"m"
BLOCK = b"b"
BLOCK_HASH = b"h"
TX_INDEX = b"t"
RESULTS = b"r"
STATE = b"s"
UNDO = b"u"
TREE = b"n"
ARCHIVE = b"x"
TX_FATE = b"y"
ABANDONED = b"z"

META_SCHEMA = META + b"schema"
META_HEAD = META + b"head"
META_GENESIS_HASH = META + b"genesis_hash"
META_CHAIN_ID = META + b"chain_id"
META_HALT = META + b"halt"
META_HALT_AT = META + b"halt_at"
META_PIN = META + b"pin/"
META_OP = META + b"op"
META_FORK = META + b"fork/"
META_AUDIT = META + b"audit/"
META_ADMIN_NONCE = META + b"admin_nonce/"
META_REOPEN = META + b"reopen"
META_FATE = META + b"fate/"
META_REPLAYED = META + b"replayed/"

ACCOUNT = b"acct/"
PARAM = b"param/"
PARAM_CHAIN = PARAM + b"chain"

_U64 = struct.Struct(">Q")
_LOC = struct.Struct(">QI")


def height_bytes(height: int) -> bytes:
    return _U64.pack(height)


def height_from(b: bytes) -> int:
    return int(_U64.unpack(b)[0])


def block_key(height: int) -> bytes:
    return BLOCK + _U64.pack(height)


def block_hash_key(block_hash: bytes) -> bytes:
    return BLOCK_HASH + block_hash


def tx_key(tx_hash: bytes) -> bytes:
    return TX_INDEX + tx_hash


def tx_location(height: int, index: int) -> bytes:
    return _LOC.pack(height, index)


def tx_location_from(b: bytes) -> tuple[int, int]:
    h, i = _LOC.unpack(b)
    return int(h), int(i)


def results_key(height: int) -> bytes:
    return RESULTS + _U64.pack(height)


def undo_key(height: int) -> bytes:
    return UNDO + _U64.pack(height)


def archive_key(era: int, height: int, kind: bytes) -> bytes:
    return ARCHIVE + _U64.pack(era) + _U64.pack(height) + kind


def abandoned_key(era: int, state_key: bytes) -> bytes:
    return ABANDONED + _U64.pack(era) + state_key


def fork_key(era: int) -> bytes:
    return META_FORK + _U64.pack(era)


def state_key(key: bytes) -> bytes:
    return STATE + key


def account_key(address: bytes) -> bytes:
    return ACCOUNT + address
