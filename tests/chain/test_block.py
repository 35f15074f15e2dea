"""Headers and blocks: signatures, tamper evidence, tx root, hashes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from chain.block import (
    ZERO_HASH,
    Block,
    Event,
    Header,
    SignedHeader,
    TxResult,
    results_root,
    sign_header,
)
from chain.crypto import TAG_HEADER, PrivateKey, sha256, signing_bytes
from chain.errors import DecodeError, InvalidBlock, InvalidSignature
from chain.merkle import EMPTY_ROOT, merkle_root
from chain.tx import Transfer, make_tx
from tests.harness.codec_vectors import mp

PRODUCER = PrivateKey(b"\x07" * 32)
OTHER = PrivateKey(b"\x08" * 32)
USER = PrivateKey(b"\x09" * 32)
CHAIN = "test-chain"


def _txs(n: int) -> tuple[bytes, ...]:
    return tuple(make_tx(USER, CHAIN, i, Transfer(OTHER.public_key, i + 1)).raw
                 for i in range(n))


def _header(txs: tuple[bytes, ...] = (), producer: PrivateKey = PRODUCER, **kw: object
            ) -> Header:
    base = dict(chain_id=CHAIN, era=1, height=42, prev_hash=b"\xaa" * 32, time=1_767_225_600_000,
                tx_root=merkle_root(txs), results_root=b"\xbb" * 32, state_root=b"\xcc" * 32,
                producer=producer.public_key)
    base.update(kw)
    return Header(**base)  # type: ignore[arg-type]


def _block(n: int = 3) -> Block:
    txs = _txs(n)
    h = _header(txs)
    return Block(h, sign_header(PRODUCER, h), txs)


# ---------------------------------------------------------------------------------------------
# Signed headers


def test_signed_header_roundtrip_and_verify() -> None:
    h = _header()
    sh = SignedHeader(h, sign_header(PRODUCER, h))
    data = sh.encode()
    assert data == mp({"header": dataclasses.asdict(h), "sig": sh.sig})
    back = SignedHeader.decode(data)
    assert back == sh
    back.verify(PRODUCER.public_key)


def test_header_signed_bytes_layout() -> None:
    h = _header()
    assert h.signed_bytes() == TAG_HEADER + b"\x00" + mp(
        {"chain_id": CHAIN, "msg": dataclasses.asdict(h)})
    assert h.signed_bytes() == signing_bytes(TAG_HEADER, CHAIN, h.to_obj())


@pytest.mark.parametrize("mask", [0x01, 0xFF])
def test_tamper_every_byte_of_signed_header(mask: int) -> None:
    h = _header(_txs(2))
    raw = SignedHeader(h, sign_header(PRODUCER, h)).encode()
    decode_failures = sig_failures = 0
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= mask
        try:
            sh = SignedHeader.decode(bytes(bad))
        except DecodeError:
            decode_failures += 1
            continue
        assert sh.encode() == bytes(bad)
        with pytest.raises(InvalidSignature):
            sh.verify(PRODUCER.public_key)
        sig_failures += 1
    assert decode_failures + sig_failures == len(raw)
    assert decode_failures > 0 and sig_failures > 0


def _with_field(h: Header, field: str, value: object) -> Header:
    """``h`` with one field, named at run time, replaced (the value's type is the test's)."""
    changes: dict[str, Any] = {field: value}
    return dataclasses.replace(h, **changes)


@pytest.mark.parametrize("field, value", [
    ("chain_id", "test-chaim"), ("era", 2), ("height", 43), ("prev_hash", b"\xab" * 32),
    ("time", 1_767_225_600_001), ("tx_root", b"\x00" * 32), ("results_root", b"\x00" * 32),
    ("state_root", b"\x00" * 32),
])
def test_changed_header_field_breaks_signature(field: str, value: object) -> None:
    h = _header()
    sig = sign_header(PRODUCER, h)
    h2 = _with_field(h, field, value)
    assert h2.hash != h.hash
    with pytest.raises(InvalidSignature):
        SignedHeader(h2, sig).verify(PRODUCER.public_key)


def test_verify_with_wrong_producer() -> None:
    h = _header()
    sh = SignedHeader(h, sign_header(PRODUCER, h))
    with pytest.raises(InvalidSignature):
        sh.verify(OTHER.public_key)


def test_header_naming_other_producer_signed_by_producer() -> None:
    # The header names OTHER but PRODUCER signed it: verifying as OTHER fails on the signature,
    # verifying as PRODUCER fails because the header names someone else.
    h = _header(producer=OTHER)
    sh = SignedHeader(h, sign_header(PRODUCER, h))
    with pytest.raises(InvalidSignature):
        sh.verify(OTHER.public_key)
    with pytest.raises(InvalidSignature):
        sh.verify(PRODUCER.public_key)


def test_header_signed_by_other_key() -> None:
    h = _header()
    sh = SignedHeader(h, sign_header(OTHER, h))
    with pytest.raises(InvalidSignature):
        sh.verify(PRODUCER.public_key)


def test_header_signature_bound_to_chain() -> None:
    h = _header()
    # A signature over the same header message under another chain id does not verify.
    sig = PRODUCER.sign(signing_bytes(TAG_HEADER, "other-chain", h.to_obj()))
    with pytest.raises(InvalidSignature):
        SignedHeader(h, sig).verify(PRODUCER.public_key)


def test_zero_signature() -> None:
    h = _header()
    with pytest.raises(InvalidSignature):
        SignedHeader(h, b"\x00" * 64).verify(PRODUCER.public_key)


# ---------------------------------------------------------------------------------------------
# Blocks


def test_block_roundtrip_and_hash() -> None:
    b = _block(3)
    data = b.encode()
    assert data == mp({"header": dataclasses.asdict(b.header), "sig": b.sig, "txs": list(b.txs)})
    back = Block.decode_block(data)
    assert back == b
    assert back.hash == b.header.hash == sha256(b.header.encode())
    back.signed_header.verify(PRODUCER.public_key)
    back.check_tx_root()


def test_block_hash_changes_with_any_header_field() -> None:
    h = _header()
    hashes = {h.hash}
    for field, value in [("era", 0), ("height", 1), ("time", 5), ("producer", b"\x00" * 32),
                         ("state_root", ZERO_HASH)]:
        hashes.add(_with_field(h, field, value).hash)
    assert len(hashes) == 6


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8])
def test_check_tx_root_accepts_matching_root(n: int) -> None:
    _block(n).check_tx_root()


def test_empty_block_root() -> None:
    h = _header(())
    assert h.tx_root == EMPTY_ROOT
    Block(h, sign_header(PRODUCER, h), ()).check_tx_root()
    with pytest.raises(InvalidBlock):
        Block(_header((), tx_root=ZERO_HASH), b"\x00" * 64, ()).check_tx_root()


def test_check_tx_root_rejects_mismatch() -> None:
    b = _block(4)
    txs = b.txs
    variants = [
        txs[:-1],                                 # dropped tx
        txs + (txs[0],),                          # duplicated tx
        (txs[1], txs[0]) + txs[2:],               # reordered
        (txs[0][:-1] + bytes([txs[0][-1] ^ 1]),) + txs[1:],  # modified tx bytes
        (),                                       # emptied
        txs + (b"",),                             # extra empty tx
    ]
    for v in variants:
        with pytest.raises(InvalidBlock):
            dataclasses.replace(b, txs=v).check_tx_root()


def test_check_tx_root_rejects_wrong_header_root() -> None:
    b = _block(2)
    bad = dataclasses.replace(b, header=dataclasses.replace(b.header, tx_root=b"\x00" * 32))
    with pytest.raises(InvalidBlock):
        bad.check_tx_root()


def test_block_decode_rejections() -> None:
    b = _block(1)
    obj: dict[str, object] = {"header": dataclasses.asdict(b.header), "sig": b.sig,
                              "txs": list(b.txs)}
    obj["txs"] = ["not bytes"]
    with pytest.raises(DecodeError) as ei:
        Block.decode_block(mp(obj))
    assert ei.value.reason == "bad_type"
    obj["txs"] = list(b.txs)
    obj["extra"] = 0
    with pytest.raises(DecodeError) as ei:
        Block.decode_block(mp(obj))
    assert ei.value.reason == "unknown_field"
    with pytest.raises(DecodeError) as ei:
        Block.decode_block(b.encode() + b"\x00")
    assert ei.value.reason == "trailing_bytes"


# ---------------------------------------------------------------------------------------------
# Results


def test_results_root_commits_to_code_and_events_but_not_the_log() -> None:
    ev = (Event.of("transfer", amount=5, to=b"\x01"),)
    rs = [TxResult(0, "", ()), TxResult(3, "insufficient funds", ev)]
    from chain.codec import encode as enc

    leaves = [enc({"code": 0, "events": []}),
              enc({"code": 3, "events": [e.to_obj() for e in ev]})]
    assert results_root(rs) == merkle_root(leaves)
    reworded = [rs[0], TxResult(3, "not enough balance", ev)]
    assert results_root(reworded) == results_root(rs)
    assert results_root([rs[0], TxResult(1, "insufficient funds", ev)]) != results_root(rs)
    assert results_root([rs[0], TxResult(3, "insufficient funds", ())]) != results_root(rs)
