"""Canonical msgpack: the one byte encoding every hash and signature is computed over.

Why strict: two nodes must never disagree on what bytes a value has, and an attacker must not
be able to produce two encodings of one transaction (malleability). So the decoder accepts
exactly one encoding per value and rejects everything else with a typed ``DecodeError``:

* the value space is nil, bool, int (-2**63 .. 2**64-1), bytes (msgpack bin), str (UTF-8,
  msgpack str), arrays and maps with str keys; floats and ext types are refused;
* every int, length and header uses msgpack's shortest form (what ``msgpack.packb`` writes);
* map keys are sorted by their UTF-8 bytes, without duplicates;
* no trailing bytes; input longer than the caller's limit is refused before parsing.

Wire structs are frozen dataclasses deriving from :class:`Struct`. A struct encodes as a map
from field name to value; decoding refuses unknown and missing fields and checks every field's
type and range from its annotation (``U64``, ``Bytes32``, ``Str64``...).
"""

from __future__ import annotations

import dataclasses
import threading
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints

import msgpack

from chain.errors import DecodeError

DEFAULT_MAX_SIZE = 1 << 20
MAX_DEPTH = 128
"""Deepest nesting of arrays/maps accepted (far below Python's recursion limit)."""

Value = Any  # nil | bool | int | bytes | str | list[Value] | dict[str, Value]


@dataclasses.dataclass(frozen=True, slots=True)
class IntRange:
    """Inclusive bounds of an integer field."""

    lo: int
    hi: int


@dataclasses.dataclass(frozen=True, slots=True)
class Length:
    """Inclusive bounds on the length of a bytes, str or sequence field."""

    lo: int
    hi: int


U8 = Annotated[int, IntRange(0, 2**8 - 1)]
U16 = Annotated[int, IntRange(0, 2**16 - 1)]
U32 = Annotated[int, IntRange(0, 2**32 - 1)]
U64 = Annotated[int, IntRange(0, 2**64 - 1)]
I64 = Annotated[int, IntRange(-(2**63), 2**63 - 1)]
Bytes32 = Annotated[bytes, Length(32, 32)]
Bytes64 = Annotated[bytes, Length(64, 64)]


Str64 = Annotated[str, Length(0, 64)]
Str1024 = Annotated[str, Length(0, 1024)]

CHAIN_ID_MAX = 50
ChainId = Annotated[str, Length(1, CHAIN_ID_MAX)]
"""A chain's id (transactions, blocks, admin commands and fork certificates carry it)."""


# ---------------------------------------------------------------------------------------------
# Untyped values


_local = threading.local()


def _packb(obj: Value) -> bytes:
    # msgpack.packb builds a new Packer (and its buffer) per call; reuse one per thread.
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    return packer.pack(obj)  # type: ignore[no-any-return]


def pack_canonical(obj: Value) -> bytes:
    """Pack a value that is already in canonical form (maps built in sorted key order from
    valid fields, e.g. ``Struct.to_obj()`` output), skipping the checks of :func:`encode`."""
    return _packb(obj)


def canonicalize(obj: Value) -> Value:
    """Return ``obj`` with every map's keys in canonical (sorted) order."""
    t = type(obj)
    if t is dict:
        return {k: canonicalize(obj[k]) for k in sorted(obj, key=_key_bytes)}
    if t is list or t is tuple:
        return [canonicalize(v) for v in obj]
    return obj


def _key_bytes(k: str) -> bytes:
    return k.encode("utf-8")


def encode(obj: Value) -> bytes:
    """Canonical bytes of an untyped value (maps sorted; shortest forms)."""
    return _packb(_checked_canonical(obj))


def _checked_canonical(obj: Value, depth: int = 0) -> Value:
    """``canonicalize(obj)`` after the checks of :func:`_check_value`, in one pass.

    Values are checked in the same order as ``_check_value`` (depth first, maps in their
    own order, before they are sorted), so a value with several faults raises the same
    error. Scalars inside arrays are handled inline and an array of scalars is returned
    as it is (the result is only packed): undo records and result lists are long arrays
    of short arrays of bytes, and copying them fed the garbage collector.
    """
    t = type(obj)
    if obj is None or t is bool or t is bytes or t is str:
        return obj
    if t is int:
        if not -(2**63) <= obj <= 2**64 - 1:
            raise DecodeError(f"integer {obj} outside the 64-bit range", reason="out_of_range")
        return obj
    if t is list or t is tuple:
        if depth >= MAX_DEPTH:
            raise DecodeError(f"nesting deeper than {MAX_DEPTH}", reason="out_of_range")
        for v in obj:  # an array of scalars is its own canonical form: no copy
            tv = type(v)
            if tv is bytes or tv is str or v is None or tv is bool:
                continue
            if tv is int:
                if not -(2**63) <= v <= 2**64 - 1:
                    raise DecodeError(f"integer {v} outside the 64-bit range",
                                      reason="out_of_range")
                continue
            break
        else:
            return obj if t is list else list(obj)
        out: list[Value] = []
        append = out.append
        d = depth + 1
        for v in obj:
            tv = type(v)
            if tv is bytes or tv is str or v is None:
                append(v)
            else:
                append(_checked_canonical(v, d))
        return out
    if t is dict:
        if depth >= MAX_DEPTH:
            raise DecodeError(f"nesting deeper than {MAX_DEPTH}", reason="out_of_range")
        vals: dict[str, Value] = {}
        for k, v in obj.items():
            if type(k) is not str:
                raise DecodeError("map keys must be strings", reason="bad_type")
            vals[k] = _checked_canonical(v, depth + 1)
        return {k: vals[k] for k in sorted(vals, key=_key_bytes)}
    raise DecodeError(f"type {t.__name__} is not encodable", reason="bad_type")


def _check_value(obj: Value, depth: int = 0) -> None:
    """Refuse values outside the encodable space before packing them."""
    t = type(obj)
    if obj is None or t is bool or t is bytes or t is str:
        return
    if t is int:
        if not -(2**63) <= obj <= 2**64 - 1:
            raise DecodeError(f"integer {obj} outside the 64-bit range", reason="out_of_range")
        return
    if (t is list or t is tuple or t is dict) and depth >= MAX_DEPTH:
        raise DecodeError(f"nesting deeper than {MAX_DEPTH}", reason="out_of_range")
    if t is list or t is tuple:
        for v in obj:
            _check_value(v, depth + 1)
        return
    if t is dict:
        for k, v in obj.items():
            if type(k) is not str:
                raise DecodeError("map keys must be strings", reason="bad_type")
            _check_value(v, depth + 1)
        return
    raise DecodeError(f"type {t.__name__} is not encodable", reason="bad_type")


def _walk_decoded(obj: Value, depth: int = 0) -> None:
    """Check a freshly unpacked value: allowed types, sorted unique str keys."""
    t = type(obj)
    if obj is None or t is bool or t is int or t is bytes or t is str:
        return
    if (t is list or t is dict) and depth >= MAX_DEPTH:
        raise DecodeError(f"nesting deeper than {MAX_DEPTH}", reason="out_of_range")
    if t is list:
        for v in obj:
            tv = type(v)
            if v is None or tv is int or tv is bytes or tv is str or tv is bool:
                continue
            _walk_decoded(v, depth + 1)
        return
    if t is dict:
        prev: bytes | None = None
        for k, v in obj.items():
            if type(k) is not str:
                raise DecodeError("map keys must be strings", reason="bad_type")
            kb = k.encode("utf-8")
            if prev is not None and kb <= prev:
                raise DecodeError("map keys not in canonical order", reason="non_canonical")
            prev = kb
            tv = type(v)
            if v is None or tv is int or tv is bytes or tv is str or tv is bool:
                continue  # what the call below would accept at once (most fields)
            _walk_decoded(v, depth + 1)
        return
    raise DecodeError(f"value of type {t.__name__} is not allowed", reason="bad_type")


def decode(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> Value:
    """Strictly decode canonical bytes into an untyped value."""
    obj = unpack_canonical(data, max_size)
    _walk_decoded(obj)
    return obj


# ---------------------------------------------------------------------------------------------
# Typed structs

Enc = Callable[[Any], Value]
Dec = Callable[[Value, str], Any]
S = TypeVar("S", bound="Struct")


def _identity(v: Any) -> Any:
    return v


def _compile(tp: Any) -> tuple[Enc, Dec]:
    """Build (encoder, decoder) for one annotated field type."""
    meta: tuple[Any, ...] = ()
    if get_origin(tp) is Annotated:
        base, *rest = get_args(tp)
        meta = tuple(rest)
        tp = base
    rng = next((m for m in meta if isinstance(m, IntRange)), None)
    ln = next((m for m in meta if isinstance(m, Length)), None)
    origin = get_origin(tp)

    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union {tp}")
        inner_enc, inner_dec = _compile(args[0])

        def dec_opt(v: Value, name: str) -> Any:
            return None if v is None else inner_dec(v, name)

        def enc_opt(v: Any) -> Value:
            return None if v is None else inner_enc(v)

        return enc_opt, dec_opt

    if tp is bool:

        def dec_bool(v: Value, name: str) -> Any:
            if type(v) is not bool:
                raise DecodeError(f"field {name!r} must be a bool", reason="bad_type")
            return v

        return _identity, dec_bool

    if tp is int:
        lo, hi = (rng.lo, rng.hi) if rng else (-(2**63), 2**64 - 1)

        def dec_int(v: Value, name: str) -> Any:
            if type(v) is not int:
                raise DecodeError(f"field {name!r} must be an integer", reason="bad_type")
            if not lo <= v <= hi:
                raise DecodeError(
                    f"field {name!r} = {v} outside [{lo}, {hi}]", reason="out_of_range"
                )
            return v

        return _identity, dec_int

    if tp is bytes or tp is str:
        want = tp
        lo_l, hi_l = (ln.lo, ln.hi) if ln else (0, DEFAULT_MAX_SIZE)
        kind = "bytes" if tp is bytes else "a string"

        def dec_buf(v: Value, name: str) -> Any:
            if type(v) is not want:
                raise DecodeError(f"field {name!r} must be {kind}", reason="bad_type")
            if not lo_l <= len(v) <= hi_l:
                raise DecodeError(
                    f"field {name!r} has length {len(v)}, allowed {lo_l}..{hi_l}",
                    reason="out_of_range",
                )
            return v

        return _identity, dec_buf

    if origin is tuple:
        targs = get_args(tp)
        if len(targs) != 2 or targs[1] is not Ellipsis:
            raise TypeError(f"only tuple[X, ...] is supported, got {tp}")
        item_enc, item_dec = _compile(targs[0])
        lo_l, hi_l = (ln.lo, ln.hi) if ln else (0, 1 << 20)

        def dec_seq(v: Value, name: str) -> Any:
            if type(v) is not list:
                raise DecodeError(f"field {name!r} must be an array", reason="bad_type")
            if not lo_l <= len(v) <= hi_l:
                raise DecodeError(
                    f"field {name!r} has {len(v)} items, allowed {lo_l}..{hi_l}",
                    reason="out_of_range",
                )
            return tuple(item_dec(x, name) for x in v)

        item = targs[0]
        if isinstance(item, type) and issubclass(item, Struct):
            # Arrays of structs (a result's events, an event's attributes): call the
            # item type's generated encoder directly, as ``x.to_obj()`` would for it.
            def enc_structs(v: Any) -> Value:
                to_obj = (_PLANS.get(item) or item._plan())[1]
                return [to_obj(x) if type(x) is item else x.to_obj() for x in v]

            return enc_structs, dec_seq

        def enc_seq(v: Any) -> Value:
            return [item_enc(x) for x in v]

        return enc_seq, dec_seq

    if tp is dict or origin is dict:
        # An untyped map (already checked by the strict decoder); typed by a sibling field.
        def dec_map(v: Value, name: str) -> Any:
            if type(v) is not dict:
                raise DecodeError(f"field {name!r} must be a map", reason="bad_type")
            _walk_decoded(v)
            return v

        return canonicalize, dec_map

    if isinstance(tp, type) and issubclass(tp, Struct):
        cls = tp

        def dec_struct(v: Value, name: str) -> Any:
            return cls.from_obj(v, context=name)

        def enc_struct(v: Any) -> Value:
            return v.to_obj()

        return enc_struct, dec_struct

    raise TypeError(f"unsupported field type {tp!r}")


Plan = tuple[tuple[str, ...], Callable[..., Any], Callable[..., Any]]
_PLANS: dict[type, Plan] = {}


class Struct:
    """Base of every wire type: a frozen dataclass that encodes as a canonical map.

    Subclasses are declared with ``@dataclasses.dataclass(frozen=True, slots=True)``. On first
    use, the field codecs are compiled from the annotations into two generated functions (as
    ``dataclasses`` itself does for ``__init__``), because these run for every transaction,
    account and result on the hot path.
    """

    __slots__ = ()

    @classmethod
    def _plan(cls) -> Plan:
        plan = _PLANS.get(cls)  # keyed by the exact class: a subclass has its own fields
        if plan is None:
            plan = _PLANS[cls] = _build_plan(cls)
        return plan

    def to_obj(self) -> dict[str, Value]:
        """The canonical untyped form: a map with keys in sorted order."""
        plan = _PLANS.get(type(self)) or self._plan()
        return plan[1](self)  # type: ignore[no-any-return]

    def encode(self) -> bytes:
        """Canonical bytes of this value."""
        plan = _PLANS.get(type(self)) or self._plan()
        return _packb(plan[1](self))

    @classmethod
    def from_obj(cls: type[S], obj: Value, context: str | None = None) -> S:
        """Check an untyped map against the declared fields and build the struct."""
        names, _, from_obj = cls._plan()
        if type(obj) is not dict or tuple(obj) != names:
            _diagnose(cls, names, obj, context)
        return from_obj(cls, obj)  # type: ignore[no-any-return]

    @classmethod
    def decode(cls: type[S], data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> S:
        """Strictly decode canonical bytes into this struct.

        Every field is type-checked by the struct's own decoder (untyped map fields are
        walked), so the generic value walk is not needed; key order is checked field by field
        and ``packb(obj) == data`` catches every other non-shortest form.
        """
        return cls.from_obj(unpack_canonical(data, max_size))


def _diagnose(cls: type, names: tuple[str, ...], obj: Value, context: str | None) -> None:
    where = context or cls.__name__
    if type(obj) is not dict:
        raise DecodeError(f"{where} must be a map", reason="bad_type")
    if any(type(k) is not str for k in obj):
        raise DecodeError(f"{where} has a map key that is not a string", reason="bad_type")
    extra = sorted(k for k in obj if k not in names)
    if extra:
        raise DecodeError(f"{where} has unknown field(s) {extra}", reason="unknown_field")
    missing = sorted(set(names) - set(obj))
    if missing:
        raise DecodeError(f"{where} is missing field(s) {missing}", reason="missing_field")
    raise DecodeError(f"{where} fields are not in canonical order", reason="non_canonical")


def _build_plan(cls: type) -> Plan:
    hints = get_type_hints(cls, include_extras=True)
    names = tuple(sorted((f.name for f in dataclasses.fields(cls)), key=_key_bytes))
    ns: dict[str, Any] = {}
    enc_items = []
    dec_items = []
    for i, n in enumerate(names):
        enc, dec = _compile(hints[n])
        ns[f"d{i}"] = dec
        dec_items.append(f"{n}=d{i}(obj[{n!r}], {n!r})")
        if enc is _identity:
            enc_items.append(f"{n!r}: self.{n}")
        else:
            ns[f"e{i}"] = enc
            enc_items.append(f"{n!r}: e{i}(self.{n})")
    src = (
        f"def to_obj(self):\n    return {{{', '.join(enc_items)}}}\n"
        f"def from_obj(cls, obj):\n    return cls({', '.join(dec_items)})\n"
    )
    exec(src, ns)  # noqa: S102 - generated from field names of our own dataclasses
    return names, ns["to_obj"], ns["from_obj"]


def unpack_canonical(data: bytes, max_size: int) -> Value:
    """Unpack and check shortest forms; map-key order and types are left to the caller."""
    if type(data) is not bytes:
        raise DecodeError("input must be bytes", reason="bad_type")
    if len(data) > max_size:
        raise DecodeError(f"input of {len(data)} bytes exceeds {max_size}", reason="oversize")
    if not data:
        raise DecodeError("empty input", reason="malformed")
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True, timestamp=0)
    except msgpack.ExtraData as e:
        raise DecodeError("trailing bytes after value", reason="trailing_bytes") from e
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise DecodeError(f"malformed msgpack: {e}", reason="malformed") from e
    try:
        again = _packb(obj)
    except (TypeError, ValueError) as e:  # e.g. an ext type that cannot be re-packed
        raise DecodeError(f"value cannot be re-encoded: {e}", reason="bad_type") from e
    if again != data:
        # Not on the hot path: name a float or ext value (which msgpack re-packs in another
        # width) as the wrong type it is, rather than as a mere non-shortest form.
        _walk_decoded(obj)
        raise DecodeError("encoding is not canonical", reason="non_canonical")
    return obj
