"""Hand-built msgpack bytes for codec tests: maps in a given key order, duplicates kept, so
non-canonical forms can be written on purpose.
"""

from __future__ import annotations

import struct

U64_MAX = 2**64 - 1


class Pairs(list):
    """A map given as (key, value) pairs, emitted in exactly this order (duplicates kept)."""


def _hdr_len(n: int, fix_base: int | None, fix_max: int, w8: int | None, w16: int, w32: int
             ) -> bytes:
    if fix_base is not None and n <= fix_max:
        return bytes([fix_base | n])
    if w8 is not None and n <= 0xFF:
        return bytes([w8, n])
    if n <= 0xFFFF:
        return bytes([w16]) + struct.pack(">H", n)
    return bytes([w32]) + struct.pack(">I", n)


def mp(x: object, sort: bool = True) -> bytes:
    if x is None:
        return b"\xc0"
    if x is False:
        return b"\xc2"
    if x is True:
        return b"\xc3"
    if type(x) is int:
        if 0 <= x <= 0x7F:
            return bytes([x])
        if 0 <= x <= 0xFF:
            return b"\xcc" + struct.pack(">B", x)
        if 0 <= x <= 0xFFFF:
            return b"\xcd" + struct.pack(">H", x)
        if 0 <= x <= 0xFFFFFFFF:
            return b"\xce" + struct.pack(">I", x)
        if 0 <= x <= U64_MAX:
            return b"\xcf" + struct.pack(">Q", x)
        if -32 <= x < 0:
            return struct.pack(">b", x)
        if -128 <= x:
            return b"\xd0" + struct.pack(">b", x)
        if -(2**15) <= x:
            return b"\xd1" + struct.pack(">h", x)
        if -(2**31) <= x:
            return b"\xd2" + struct.pack(">i", x)
        return b"\xd3" + struct.pack(">q", x)
    if type(x) is str:
        b = x.encode("utf-8")
        return _hdr_len(len(b), 0xA0, 31, 0xD9, 0xDA, 0xDB) + b
    if type(x) is bytes:
        return _hdr_len(len(x), None, 0, 0xC4, 0xC5, 0xC6) + x
    if type(x) is list or type(x) is tuple:
        return _hdr_len(len(x), 0x90, 15, None, 0xDC, 0xDD) + b"".join(mp(v, sort) for v in x)
    if type(x) is Pairs:
        return _hdr_len(len(x), 0x80, 15, None, 0xDE, 0xDF) + b"".join(
            mp(k, sort) + mp(v, sort) for k, v in x)
    if type(x) is dict:
        keys = sorted(x, key=lambda k: k.encode("utf-8")) if sort else list(x)
        return _hdr_len(len(x), 0x80, 15, None, 0xDE, 0xDF) + b"".join(
            mp(k, sort) + mp(x[k], sort) for k in keys)
    raise TypeError(type(x))
