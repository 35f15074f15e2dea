"""Canonical msgpack codec: round trips over the whole value space and every rejection.

Byte strings used as inputs are built by hand from the msgpack spec (hex literals and the
small, independent ``mp`` encoder below), never with the codec under test.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.block import Attr, Block, Event, Header, TxResult
from chain.codec import Struct, decode, encode
from chain.errors import DecodeError
from tests.harness.codec_vectors import Pairs, mp

U64_MAX = 2**64 - 1
I64_MIN = -(2**63)

# ---------------------------------------------------------------------------------------------
# An independent msgpack encoder, straight from the spec (shortest forms, sorted keys).


def strict_eq(a: object, b: object) -> bool:
    """Equality that does not confuse True with 1, bytes with str, or lists with tuples."""
    if type(a) is not type(b):
        return False
    if type(a) is list and type(b) is list:  # (b's type is a's, checked above)
        return len(a) == len(b) and all(strict_eq(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict and type(b) is dict:
        return list(a) == list(b) and all(strict_eq(a[k], b[k]) for k in a)
    return a == b


def reason_of(data: bytes, fn: Callable[[bytes], object] = decode) -> str:
    with pytest.raises(DecodeError) as ei:
        fn(data)
    return ei.value.reason


# ---------------------------------------------------------------------------------------------
# Strategies

ints = st.one_of(
    st.integers(I64_MIN, U64_MAX),
    st.sampled_from([0, 1, 31, 32, 127, 128, 255, 256, 2**15 - 1, 2**15, 2**16 - 1, 2**16,
                     2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, U64_MAX,
                     -1, -31, -32, -33, -127, -128, -129, -(2**15), -(2**15) - 1,
                     -(2**31), -(2**31) - 1, I64_MIN]),
)
texts = st.one_of(st.text(max_size=40), st.text(min_size=250, max_size=300))
blobs = st.one_of(st.binary(max_size=40), st.binary(min_size=250, max_size=300))
scalars = st.one_of(st.none(), st.booleans(), ints, blobs, texts)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=20),
        st.dictionaries(st.text(max_size=12), children, max_size=20),
    ),
    max_leaves=40,
)


def canonical_order(x: object) -> object:
    """The same value with every map's keys in UTF-8 byte order (what decode returns)."""
    if type(x) is dict:
        return {k: canonical_order(x[k]) for k in sorted(x, key=lambda k: k.encode())}
    if type(x) is list:
        return [canonical_order(v) for v in x]
    return x


# ---------------------------------------------------------------------------------------------
# Untyped round trips


@given(values)
def test_roundtrip_value(x: object) -> None:
    data = encode(x)
    assert data == mp(x), "encode must produce the spec's shortest form with sorted keys"
    back = decode(data)
    assert strict_eq(back, canonical_order(x))
    assert encode(back) == data


@given(values)
def test_canonical_bytes_roundtrip(x: object) -> None:
    data = mp(x)
    assert encode(decode(data)) == data


@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_reject(data: bytes) -> None:
    """Any input either is rejected with a DecodeError or is the one encoding of its value."""
    try:
        v = decode(data)
    except DecodeError as e:
        assert e.reason in {"malformed", "trailing_bytes", "non_canonical", "bad_type",
                            "out_of_range", "oversize"}
    else:
        assert encode(v) == data


@pytest.mark.parametrize("n, expected", [
    (0, "00"), (127, "7f"), (128, "cc80"), (255, "ccff"), (256, "cd0100"),
    (65535, "cdffff"), (65536, "ce00010000"), (2**32 - 1, "ceffffffff"),
    (2**32, "cf0000000100000000"), (U64_MAX, "cfffffffffffffffff"),
    (-1, "ff"), (-32, "e0"), (-33, "d0df"), (-128, "d080"), (-129, "d1ff7f"),
    (-(2**15), "d18000"), (-(2**15) - 1, "d2ffff7fff"), (-(2**31), "d280000000"),
    (-(2**31) - 1, "d3ffffffff7fffffff"), (I64_MIN, "d38000000000000000"),
])
def test_int_boundaries(n: int, expected: str) -> None:
    data = bytes.fromhex(expected)
    assert encode(n) == data
    v = decode(data)
    assert type(v) is int and v == n


def test_scalars_exact_bytes() -> None:
    assert encode(None) == b"\xc0" and decode(b"\xc0") is None
    assert encode(True) == b"\xc3" and decode(b"\xc3") is True
    assert encode(False) == b"\xc2" and decode(b"\xc2") is False
    assert encode(b"") == b"\xc4\x00" and decode(b"\xc4\x00") == b""
    assert encode("") == b"\xa0" and decode(b"\xa0") == ""
    assert encode([]) == b"\x90" and decode(b"\x90") == []
    assert encode({}) == b"\x80" and decode(b"\x80") == {}
    assert encode({"b": 1, "a": [True, None]}) == bytes.fromhex("82a16192c3c0a16201")


def test_keys_sorted_by_utf8_bytes() -> None:
    # Byte order: "B" (0x42) < "a" (0x61) < "aa" (prefix first) < "\u00e9" (c3 a9)
    # < "\U0001f600" (f0 ...); insertion order must not matter.
    x = {"\U0001f600": 0, "aa": 1, "a": 2, "B": 3, "\u00e9": 4}
    data = encode(x)
    assert list(decode(data)) == ["B", "a", "aa", "\u00e9", "\U0001f600"]
    assert data == mp(x)
    assert data.startswith(b"\x85\xa1B\x03\xa1a\x02\xa2aa\x01\xa2\xc3\xa9\x04")


def test_tuple_encodes_as_array() -> None:
    assert encode((1, "x")) == b"\x92\x01\xa1x"


# ---------------------------------------------------------------------------------------------
# Encoder refusals


@pytest.mark.parametrize("v", [U64_MAX + 1, I64_MIN - 1, [2**70], {"a": -(2**64)}])
def test_encode_int_out_of_range(v: object) -> None:
    with pytest.raises(DecodeError) as ei:
        encode(v)
    assert ei.value.reason == "out_of_range"


@pytest.mark.parametrize("v", [1.5, [0.0], {"a": float("nan")}, {1: 2}, {b"k": 1}, {1, 2},
                               bytearray(b"x"), object()])
def test_encode_bad_type(v: object) -> None:
    with pytest.raises(DecodeError) as ei:
        encode(v)
    assert ei.value.reason == "bad_type"


# ---------------------------------------------------------------------------------------------
# Decoder rejections, one reason at a time


def test_empty_input_is_malformed() -> None:
    assert reason_of(b"") == "malformed"


@pytest.mark.parametrize("hexdata", [
    "c1",                # never-used type byte
    "92 01",             # array of 2 with one element
    "a3 6162",           # fixstr of 3 with 2 bytes
    "d9",                # str8 without its length
    "c4 05 0102",        # bin8 of 5 with 2 bytes
    "cd 01",             # uint16 cut short
    "81 a161",           # map with a key and no value
    "a1 ff",             # invalid UTF-8 in a str
    "a2 c3 28",          # invalid UTF-8 continuation
])
def test_malformed(hexdata: str) -> None:
    assert reason_of(bytes.fromhex(hexdata.replace(" ", ""))) == "malformed"


def test_non_bytes_input_is_bad_type() -> None:
    with pytest.raises(DecodeError) as ei:
        decode(bytearray(b"\x01"))  # type: ignore[arg-type]
    assert ei.value.reason == "bad_type"


@pytest.mark.parametrize("hexdata", ["01 02", "c0 c0", "90 00", "a1 61 c0", "80 80"])
def test_trailing_bytes(hexdata: str) -> None:
    assert reason_of(bytes.fromhex(hexdata.replace(" ", ""))) == "trailing_bytes"


def test_trailing_bytes_after_struct() -> None:
    h = _header()
    assert reason_of(mp(dataclasses.asdict(h)) + b"\x00", Header.decode) == "trailing_bytes"


def test_oversize() -> None:
    data = b"\xc4\x05abcde"  # 7 bytes
    assert decode(data, max_size=7) == b"abcde"
    with pytest.raises(DecodeError) as ei:
        decode(data, max_size=6)
    assert ei.value.reason == "oversize"


def test_oversize_checked_before_parsing() -> None:
    # Garbage that would be malformed is refused as oversize: the size check comes first.
    with pytest.raises(DecodeError) as ei:
        decode(b"\xc1" * 100, max_size=99)
    assert ei.value.reason == "oversize"


def test_oversize_struct() -> None:
    data = _header().encode()
    assert Header.decode(data, max_size=len(data)) == _header()
    with pytest.raises(DecodeError) as ei:
        Header.decode(data, max_size=len(data) - 1)
    assert ei.value.reason == "oversize"


def test_default_limit_is_one_mib() -> None:
    payload = b"\x00" * ((1 << 20) - 5)
    data = b"\xc6" + struct.pack(">I", len(payload)) + payload  # exactly 1 MiB
    assert decode(data) == payload
    payload += b"\x00"
    data = b"\xc6" + struct.pack(">I", len(payload)) + payload
    assert reason_of(data) == "oversize"


# --- non-canonical ---------------------------------------------------------------------------


def test_unsorted_map_keys() -> None:
    assert reason_of(bytes.fromhex("82 a162 01 a161 02".replace(" ", ""))) == "non_canonical"


def test_unsorted_nested_map_keys() -> None:
    inner = bytes.fromhex("82 a17a 01 a179 02".replace(" ", ""))  # {"z":1,"y":2}
    assert reason_of(b"\x91" + inner) == "non_canonical"
    assert reason_of(b"\x81\xa1k" + inner) == "non_canonical"


def test_keys_sorted_by_code_point_not_by_length() -> None:
    # "b" before "aa" would be length-first (CBOR-style) order: not ours.
    assert reason_of(mp(Pairs([("b", 1), ("aa", 2)]))) == "non_canonical"
    assert decode(mp(Pairs([("aa", 2), ("b", 1)]))) == {"aa": 2, "b": 1}


def test_duplicate_map_keys() -> None:
    assert reason_of(bytes.fromhex("82 a161 01 a161 01".replace(" ", ""))) == "non_canonical"
    assert reason_of(bytes.fromhex("82 a161 01 a161 02".replace(" ", ""))) == "non_canonical"


@pytest.mark.parametrize("hexdata", [
    "cd 0005",               # uint16 for 5
    "cc 05",                 # uint8 for 5
    "ce 00000005",           # uint32 for 5
    "cf 0000000000000005",   # uint64 for 5
    "cd 00ff",               # uint16 for 255
    "ce 0000ffff",           # uint32 for 65535
    "cf 00000000ffffffff",   # uint64 for 2**32-1
    "d0 05",                 # int8 for positive 5
    "d0 ff",                 # int8 for -1 (fixneg exists)
    "d1 ffff",               # int16 for -1
    "d1 ff80",               # int16 for -128
    "d2 ffffff80",           # int32 for -128
    "d3 ffffffffffffffff",   # int64 for -1
    "d3 0000000000000001",   # int64 for 1
])
def test_non_minimal_int(hexdata: str) -> None:
    assert reason_of(bytes.fromhex(hexdata.replace(" ", ""))) == "non_canonical"


@pytest.mark.parametrize("hexdata", [
    "d9 03 616263",          # str8 for a 3-byte string (fixstr exists)
    "da 0003 616263",        # str16 for a 3-byte string
    "db 00000003 616263",    # str32
    "d9 00",                 # str8 for the empty string
    "c5 0003 616263",        # bin16 for 3 bytes (bin8 is the shortest)
    "c6 00000003 616263",    # bin32
    "dc 0001 01",            # array16 for one element
    "dd 00000000",           # array32 for the empty array
    "de 0001 a161 01",       # map16 for one entry
    "df 00000000",           # map32 for the empty map
])
def test_non_minimal_length_header(hexdata: str) -> None:
    assert reason_of(bytes.fromhex(hexdata.replace(" ", ""))) == "non_canonical"


def test_non_minimal_str8_for_32_bytes_is_canonical() -> None:
    # The boundary the other way round: 32 bytes needs str8, and str8 is then canonical.
    s = "x" * 32
    assert decode(b"\xd9\x20" + s.encode()) == s
    assert reason_of(b"\xda\x00\x20" + s.encode()) == "non_canonical"


def test_non_canonical_inside_struct() -> None:
    obj = dataclasses.asdict(_header())
    good = mp(obj)
    assert Header.decode(good) == _header()
    # era = 0 as uint16: 0xa3 'era' 0x00 -> 0xa3 'era' 0xcd 0x00 0x00
    bad = good.replace(b"\xa3era\x00", b"\xa3era\xcd\x00\x00")
    assert bad != good
    assert reason_of(bad, Header.decode) == "non_canonical"


def test_unsorted_struct_fields() -> None:
    obj = dataclasses.asdict(_header())
    reordered = mp(obj, sort=False)  # dataclass field order, not sorted
    assert reordered != mp(obj)
    assert reason_of(reordered, Header.decode) == "non_canonical"


def test_duplicate_struct_field() -> None:
    obj = dataclasses.asdict(_header())
    pairs = Pairs(sorted(obj.items()))
    pairs.insert(1, ("era", 0))  # "era" twice, in order
    assert reason_of(mp(pairs), Header.decode) == "non_canonical"


# --- bad types -------------------------------------------------------------------------------


@pytest.mark.parametrize("hexdata", [
    "cb 3ff8000000000000",          # float64 1.5
    "cb 0000000000000000",          # float64 0.0
    "ca 3fc00000",                  # float32 1.5
    "ca 00000000",                  # float32 0.0
    "91 cb 3ff8000000000000",       # float64 inside an array
    "81 a161 ca 3fc00000",          # float32 as a map value
    "92 01 ca 3fc00000",            # float32 inside an array
])
def test_float_anywhere_is_bad_type(hexdata: str) -> None:
    assert reason_of(bytes.fromhex(hexdata.replace(" ", ""))) == "bad_type"


@pytest.mark.parametrize("hexdata", [
    "d4 01 00",                     # fixext1
    "d5 01 0000",                   # fixext2
    "c7 03 05 616263",              # ext8
    "d6 ff 00000001",               # timestamp 32 (ext -1)
    "d7 ff 0000000000000001",       # timestamp 64
    "91 d4 01 00",                  # ext in an array
    "81 a161 d4 01 00",             # ext as a map value
])
def test_ext_type_is_bad_type(hexdata: str) -> None:
    assert reason_of(bytes.fromhex(hexdata.replace(" ", ""))) == "bad_type"


def test_bytes_map_key_is_bad_type() -> None:
    assert reason_of(bytes.fromhex("81 c40161 01".replace(" ", ""))) == "bad_type"


@pytest.mark.parametrize("hexdata", ["81 01 02", "81 c0 02", "81 c3 02", "81 90 02"])
def test_non_str_map_key_is_rejected(hexdata: str) -> None:
    # Integer/nil/bool/array keys are refused by the unpacker itself (strict_map_key), which the
    # codec reports as malformed rather than bad_type; either way they never decode.
    assert reason_of(bytes.fromhex(hexdata.replace(" ", ""))) in {"bad_type", "malformed"}


# --- typed structs ---------------------------------------------------------------------------


def _header(**kw: object) -> Header:
    base = dict(chain_id="test-chain", era=0, height=7, prev_hash=b"\x01" * 32, time=1_700_000,
                tx_root=b"\x02" * 32, results_root=b"\x03" * 32, state_root=b"\x04" * 32,
                producer=b"\x05" * 32)
    base.update(kw)
    return Header(**base)  # type: ignore[arg-type]


def _header_obj(**kw: object) -> dict:
    obj = dataclasses.asdict(_header())
    obj.update(kw)
    return obj


def _header_reason(**kw: object) -> str:
    return reason_of(mp(_header_obj(**kw)), Header.decode)


def test_struct_encoding_is_sorted_map_of_fields() -> None:
    h = _header()
    assert h.encode() == mp(dataclasses.asdict(h))
    assert h.encode()[0] == 0x89  # fixmap of 9 fields
    assert Header.decode(h.encode()) == h


def test_struct_unknown_field() -> None:
    obj = _header_obj()
    obj["zzz"] = 1
    assert reason_of(mp(obj), Header.decode) == "unknown_field"


def test_struct_unknown_field_replacing_a_known_one() -> None:
    obj = _header_obj()
    del obj["time"]
    obj["timestamp"] = 1  # same number of fields, one name wrong
    assert reason_of(mp(obj), Header.decode) == "unknown_field"


@pytest.mark.parametrize("field", ["chain_id", "era", "height", "prev_hash", "time", "tx_root",
                                   "results_root", "state_root", "producer"])
def test_struct_missing_field(field: str) -> None:
    obj = _header_obj()
    del obj[field]
    with pytest.raises(DecodeError) as ei:
        Header.decode(mp(obj))
    assert ei.value.reason == "missing_field"
    assert field in str(ei.value)


def test_nested_struct_unknown_and_missing_field() -> None:
    ev = {"type": "t", "attrs": [{"key": "k", "value": "v", "extra": ""}]}
    assert reason_of(mp(ev), Event.decode) == "unknown_field"
    ev = {"type": "t", "attrs": [{"key": "k"}]}
    assert reason_of(mp(ev), Event.decode) == "missing_field"
    blk = {"header": {k: v for k, v in _header_obj().items() if k != "era"},
           "sig": b"\x00" * 64, "txs": []}
    assert reason_of(mp(blk), Block.decode) == "missing_field"


def test_struct_not_a_map() -> None:
    assert reason_of(mp([1, 2]), Header.decode) == "bad_type"
    assert reason_of(mp(None), Header.decode) == "bad_type"
    blk = {"header": [], "sig": b"\x00" * 64, "txs": []}
    assert reason_of(mp(blk), Block.decode) == "bad_type"


def test_struct_str_where_bytes() -> None:
    assert _header_reason(prev_hash="\x01" * 32) == "bad_type"


def test_struct_bin8_where_str() -> None:
    assert _header_reason(chain_id=b"test-chain") == "bad_type"


def test_struct_bool_where_int() -> None:
    assert _header_reason(height=True) == "bad_type"
    assert _header_reason(era=False) == "bad_type"


def test_struct_nil_where_value() -> None:
    assert _header_reason(height=None) == "bad_type"
    assert _header_reason(state_root=None) == "bad_type"


def test_struct_float_where_int() -> None:
    data = mp(_header_obj()).replace(b"\xa6height\x07", b"\xa6height\xcb" + struct.pack(">d", 7.0))
    assert reason_of(data, Header.decode) == "bad_type"


def test_struct_ext_where_int() -> None:
    data = mp(_header_obj()).replace(b"\xa6height\x07", b"\xa6height\xd4\x01\x07")
    assert reason_of(data, Header.decode) == "bad_type"


def test_struct_int_where_array_and_array_where_bytes() -> None:
    blk = {"header": _header_obj(), "sig": b"\x00" * 64, "txs": 5}
    assert reason_of(mp(blk), Block.decode) == "bad_type"
    blk = {"header": _header_obj(), "sig": b"\x00" * 64, "txs": [[1]]}
    assert reason_of(mp(blk), Block.decode) == "bad_type"
    assert _header_reason(tx_root=[1] * 32) == "bad_type"


def test_struct_int_out_of_range() -> None:
    assert _header_reason(height=-1) == "out_of_range"
    assert _header_reason(era=I64_MIN) == "out_of_range"
    # U16 result code
    ok = {"code": 65535, "events": [], "log": ""}
    assert TxResult.decode(mp(ok)).code == 65535
    assert reason_of(mp({"code": 65536, "events": [], "log": ""}), TxResult.decode) \
        == "out_of_range"
    assert reason_of(mp({"code": -1, "events": [], "log": ""}), TxResult.decode) \
        == "out_of_range"


def test_struct_u64_bounds_accepted() -> None:
    h = Header.decode(mp(_header_obj(height=U64_MAX, era=0, time=U64_MAX)))
    assert h.height == U64_MAX and h.time == U64_MAX


@pytest.mark.parametrize("n", [0, 31, 33, 64])
def test_struct_fixed_length_bytes_out_of_range(n: int) -> None:
    assert _header_reason(prev_hash=b"\x00" * n) == "out_of_range"


def test_struct_sig_length_out_of_range() -> None:
    for n in (63, 65):
        blk = {"header": _header_obj(), "sig": b"\x00" * n, "txs": []}
        assert reason_of(mp(blk), Block.decode) == "out_of_range"


def test_struct_text_length_out_of_range() -> None:
    assert Header.decode(mp(_header_obj(chain_id="c" * 50))).chain_id == "c" * 50
    assert _header_reason(chain_id="c" * 51) == "out_of_range"
    # the limit is in characters: 50 two-byte characters are fine
    assert Header.decode(mp(_header_obj(chain_id="\u00e9" * 50))).chain_id == "\u00e9" * 50
    ev = {"attrs": [], "type": "t" * 65}
    assert reason_of(mp(ev), Event.decode) == "out_of_range"


def test_struct_sequence_length_out_of_range() -> None:
    attrs = [{"key": "k", "value": str(i)} for i in range(64)]
    assert len(Event.decode(mp({"attrs": attrs, "type": "t"})).attrs) == 64
    attrs.append({"key": "k", "value": "64"})
    assert reason_of(mp({"attrs": attrs, "type": "t"}), Event.decode) == "out_of_range"


# --- struct round trips ----------------------------------------------------------------------

b32 = st.binary(min_size=32, max_size=32)
u64 = st.integers(0, U64_MAX)
headers = st.builds(
    Header, chain_id=st.text(min_size=1, max_size=50), era=u64, height=u64, prev_hash=b32, time=u64,
    tx_root=b32, results_root=b32, state_root=b32, producer=b32)
attrs_st = st.builds(Attr, key=st.text(max_size=64), value=st.text(max_size=200))
events = st.builds(Event, type=st.text(max_size=64),
                   attrs=st.lists(attrs_st, max_size=5).map(tuple))
results = st.builds(TxResult, code=st.integers(0, 2**16 - 1), log=st.text(max_size=200),
                    events=st.lists(events, max_size=4).map(tuple))
blocks = st.builds(Block, header=headers, sig=st.binary(min_size=64, max_size=64),
                   txs=st.lists(st.binary(max_size=300), max_size=8).map(tuple))


def _roundtrip(cls: type[Struct], v: Struct) -> None:
    assert dataclasses.is_dataclass(v)  # every wire type is a dataclass
    data = v.encode()
    assert data == mp(dataclasses.asdict(v))
    back = cls.decode(data)
    assert back == v
    assert type(back) is cls
    assert back.encode() == data
    # also through the untyped decoder
    assert encode(decode(data)) == data


@given(headers)
def test_header_roundtrip(h: Header) -> None:
    _roundtrip(Header, h)


@given(blocks)
def test_block_roundtrip(b: Block) -> None:
    _roundtrip(Block, b)
    assert Block.decode_block(b.encode()) == b


@given(results)
def test_txresult_roundtrip(r: TxResult) -> None:
    _roundtrip(TxResult, r)


@given(events)
def test_event_roundtrip(e: Event) -> None:
    _roundtrip(Event, e)


def test_event_of_and_as_dict() -> None:
    e = Event.of("transfer", to=b"\xab\xcd", amount=5)
    assert e.attrs == (Attr("amount", "5"), Attr("to", "abcd"))
    assert e.as_dict() == {"amount": "5", "to": "abcd"}
    assert Event.decode(e.encode()) == e


# --- nesting depth and odd keys (regressions) ------------------------------------------------


def test_deep_nesting_is_refused_with_a_decode_error() -> None:
    # ~1000 nested one-element arrays is only ~1 KB; it must be refused as a DecodeError,
    # never escape as RecursionError.
    for depth in (200, 990, 1000, 1020, 1023, 1024, 1025, 5000):
        data = b"\x91" * depth + b"\xc0"
        with pytest.raises(DecodeError):
            decode(data, max_size=1 << 16)
    for depth in (200, 1000):
        data = (b"\x81\xa1a") * depth + b"\xc0"
        with pytest.raises(DecodeError):
            decode(data, max_size=1 << 16)


def test_moderate_nesting_round_trips() -> None:
    data = b"\x91" * 64 + b"\xc0"
    v = decode(data)
    assert encode(v) == data


def test_encoder_refuses_what_the_decoder_refuses() -> None:
    x: object = None
    for _ in range(1000):
        x = [x]
    with pytest.raises(DecodeError):
        encode(x)


def test_struct_with_unknown_str_and_bytes_keys() -> None:
    obj = _header_obj()
    obj["zzz"] = 1
    data = mp(Pairs(sorted(obj.items()) + [(b"yyy", 1)]))
    with pytest.raises(DecodeError) as ei:
        Header.decode(data)
    assert ei.value.reason in {"bad_type", "unknown_field"}
    data = mp(Pairs(sorted(_header_obj().items()) + [(b"yyy", 1)]))
    with pytest.raises(DecodeError) as ei:
        Header.decode(data)
    assert ei.value.reason in {"bad_type", "unknown_field"}
