"""Transactions: envelope round trip, strict decoding, tamper evidence, domain separation."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.block import Header, SignedHeader, sign_header
from chain.crypto import TAG_ADMIN, TAG_HEADER, TAG_TX, PrivateKey, sha256, signing_bytes
from chain.errors import DecodeError, InvalidSignature, InvalidTransaction
from chain.tx import MAX_TX_BYTES, PAYLOAD_TYPES, Deposit, Transaction, Transfer, decode_tx, make_tx
from tests.harness.codec_vectors import Pairs, mp

ALICE = PrivateKey(bytes(range(32)))
BOB = PrivateKey(bytes(range(1, 33)))
CHAIN = "test-chain"


def _tx(key: PrivateKey = ALICE, chain_id: str = CHAIN, nonce: int = 3,
        payload: object = None) -> Transaction:
    if payload is None:
        payload = Transfer(BOB.public_key, 1234)
    return make_tx(key, chain_id, nonce, payload)  # type: ignore[arg-type]


def _envelope(tx: Transaction, **kw: object) -> dict:
    """The envelope as a plain dict (built from the tx's fields, not from its bytes)."""
    assert dataclasses.is_dataclass(tx.payload)  # every concrete payload is a dataclass
    obj = {
        "chain_id": tx.chain_id,
        "nonce": tx.nonce,
        "payload": dataclasses.asdict(tx.payload),
        "sender": tx.sender,
        "sig": tx.sig,
        "type": tx.type,
    }
    obj.update(kw)
    return obj


def _reason(data: bytes) -> str:
    with pytest.raises(DecodeError) as ei:
        decode_tx(data)
    return ei.value.reason


# ---------------------------------------------------------------------------------------------
# Round trip


@pytest.mark.parametrize("payload", [Transfer(BOB.public_key, 1),
                                     Deposit(BOB.public_key, 2**64 - 1)])
def test_make_and_decode_roundtrip(payload: object) -> None:
    tx = _tx(payload=payload)
    assert tx.raw == mp(_envelope(tx)), "raw must be the canonical envelope"
    back = decode_tx(tx.raw)
    assert back == tx
    assert back.payload == payload and type(back.payload) is type(payload)
    assert back.type == payload.TYPE  # type: ignore[attr-defined]
    assert back.sender == ALICE.public_key
    assert back.chain_id == CHAIN and back.nonce == 3
    assert back.hash == tx.hash == sha256(tx.raw)
    assert back.signed_bytes() == tx.signed_bytes()
    back.verify_signature()
    tx.verify_signature()


def test_signed_bytes_are_the_documented_layout() -> None:
    tx = _tx()
    body = {k: v for k, v in _envelope(tx).items() if k != "sig"}
    expected = TAG_TX + b"\x00" + mp({"chain_id": CHAIN, "msg": body})
    assert tx.signed_bytes() == expected
    assert decode_tx(tx.raw).signed_bytes() == expected
    assert signing_bytes(TAG_TX, CHAIN, body) == expected


b32 = st.binary(min_size=32, max_size=32)


@given(
    chain_id=st.text(min_size=1, max_size=50),
    nonce=st.integers(0, 2**64 - 1),
    to=b32,
    amount=st.integers(1, 2**64 - 1),
    deposit=st.booleans(),
)
def test_roundtrip_property(chain_id: str, nonce: int, to: bytes, amount: int,
                            deposit: bool) -> None:
    payload = Deposit(to, amount) if deposit else Transfer(to, amount)
    tx = make_tx(ALICE, chain_id, nonce, payload)
    back = decode_tx(tx.raw)
    assert back == tx
    back.verify_signature()


def test_distinct_nonces_give_distinct_hashes() -> None:
    assert _tx(nonce=1).hash != _tx(nonce=2).hash


# ---------------------------------------------------------------------------------------------
# Strict envelope decoding


def test_unknown_tx_type() -> None:
    tx = _tx()
    assert _reason(mp(_envelope(tx, type="mint"))) == "unknown_type"
    assert _reason(mp(_envelope(tx, type=""))) == "out_of_range"  # a type name is 1-32 chars
    assert "mint" not in PAYLOAD_TYPES


@pytest.mark.parametrize("field", ["chain_id", "nonce", "payload", "sender", "sig", "type"])
def test_missing_envelope_field(field: str) -> None:
    obj = _envelope(_tx())
    del obj[field]
    with pytest.raises(DecodeError) as ei:
        decode_tx(mp(obj))
    assert ei.value.reason == "missing_field"
    assert field in str(ei.value)


def test_unknown_envelope_field() -> None:
    assert _reason(mp(_envelope(_tx(), memo="hi"))) == "unknown_field"


def test_envelope_fields_out_of_order() -> None:
    assert _reason(mp(_envelope(_tx()), sort=False)) == "non_canonical"
    pairs = Pairs(sorted(_envelope(_tx()).items()))
    pairs[0], pairs[1] = pairs[1], pairs[0]
    assert _reason(mp(pairs)) == "non_canonical"


def test_envelope_with_a_bytes_key() -> None:
    pairs = Pairs(sorted(_envelope(_tx(), zz=1).items()) + [(b"yy", 1)])
    with pytest.raises(DecodeError) as ei:
        decode_tx(mp(pairs))
    assert ei.value.reason in {"bad_type", "unknown_field"}


@pytest.mark.parametrize("n", [0, 32, 63, 65, 128])
def test_bad_sig_length(n: int) -> None:
    assert _reason(mp(_envelope(_tx(), sig=b"\x00" * n))) == "out_of_range"


def test_sig_wrong_type() -> None:
    assert _reason(mp(_envelope(_tx(), sig="x" * 64))) == "bad_type"
    assert _reason(mp(_envelope(_tx(), sig=None))) == "bad_type"


def test_bad_envelope_field_types_and_ranges() -> None:
    tx = _tx()
    assert _reason(mp(_envelope(tx, nonce=-1))) == "out_of_range"
    assert _reason(mp(_envelope(tx, nonce=True))) == "bad_type"
    assert _reason(mp(_envelope(tx, sender=b"\x01" * 31))) == "out_of_range"
    assert _reason(mp(_envelope(tx, sender="a" * 32))) == "bad_type"
    assert _reason(mp(_envelope(tx, chain_id="c" * 51))) == "out_of_range"
    assert _reason(mp(_envelope(tx, chain_id=b"test-chain"))) == "bad_type"
    assert _reason(mp(_envelope(tx, type=1))) == "bad_type"
    assert _reason(mp(_envelope(tx, payload=[1, 2]))) == "bad_type"


def test_bad_payload_fields() -> None:
    tx = _tx()
    to = BOB.public_key
    assert _reason(mp(_envelope(tx, payload={"to": to}))) == "missing_field"
    assert _reason(mp(_envelope(tx, payload={"amount": 1, "to": to, "x": 0}))) \
        == "unknown_field"
    assert _reason(mp(_envelope(tx, payload={"amount": -1, "to": to}))) == "out_of_range"
    assert _reason(mp(_envelope(tx, payload={"amount": 2**64 - 1, "to": to[:31]}))) \
        == "out_of_range"
    assert _reason(mp(_envelope(tx, payload={"amount": "1", "to": to}))) == "bad_type"
    assert _reason(mp(_envelope(tx, payload={"amount": True, "to": to}))) == "bad_type"


def test_payload_with_unsorted_keys() -> None:
    pl = Pairs([("to", BOB.public_key), ("amount", 5)])
    assert _reason(mp(_envelope(_tx(), payload=pl))) == "non_canonical"


def test_not_a_map_and_trailing_bytes() -> None:
    assert _reason(mp([1])) == "bad_type"
    assert _reason(_tx().raw + b"\xc0") == "trailing_bytes"
    assert _reason(b"") == "malformed"


def test_oversize_tx() -> None:
    filler = "x" * MAX_TX_BYTES
    with pytest.raises(DecodeError) as ei:
        decode_tx(mp(_envelope(_tx(), chain_id=filler)))
    assert ei.value.reason == "oversize"


# ---------------------------------------------------------------------------------------------
# Tamper evidence


@pytest.mark.parametrize("mask", [0x01, 0xFF])
@pytest.mark.parametrize("payload", [Transfer(BOB.public_key, 1234), Deposit(BOB.public_key, 7)])
def test_tamper_every_byte(mask: int, payload: object) -> None:
    tx = _tx(payload=payload)
    raw = tx.raw
    decode_failures = sig_failures = 0
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= mask
        bad_bytes = bytes(bad)
        try:
            t2 = decode_tx(bad_bytes)
        except DecodeError:
            decode_failures += 1
            continue
        assert t2.raw == bad_bytes
        with pytest.raises(InvalidSignature):
            t2.verify_signature()
        sig_failures += 1
    assert decode_failures + sig_failures == len(raw)
    # Both kinds of failure must actually have been exercised.
    assert decode_failures > 0 and sig_failures > 0


def test_tampered_fields_change_signed_bytes() -> None:
    tx = _tx()
    for kw in ({"nonce": 4}, {"sender": BOB.public_key}, {"chain_id": "test-chaio"},
               {"payload": {"amount": 1235, "to": BOB.public_key}},
               {"type": "deposit"}):
        t2 = decode_tx(mp(_envelope(tx, **kw)))
        assert t2.signed_bytes() != tx.signed_bytes()
        with pytest.raises(InvalidSignature):
            t2.verify_signature()


def test_signature_from_another_key() -> None:
    tx = _tx()
    body = {k: v for k, v in _envelope(tx).items() if k != "sig"}
    bob_sig = BOB.sign(signing_bytes(TAG_TX, CHAIN, body))
    t2 = decode_tx(mp(_envelope(tx, sig=bob_sig)))
    with pytest.raises(InvalidSignature):
        t2.verify_signature()
    # Naming BOB as the sender does not help: BOB signed a body that names ALICE.
    t3 = decode_tx(mp(_envelope(tx, sig=bob_sig, sender=BOB.public_key)))
    with pytest.raises(InvalidSignature):
        t3.verify_signature()
    make_tx(BOB, CHAIN, tx.nonce, tx.payload).verify_signature()


def test_chain_relabel_fails() -> None:
    tx_a = _tx(chain_id="a")
    tx_a.verify_signature()
    relabelled = decode_tx(mp(_envelope(tx_a, chain_id="b")))
    assert relabelled.chain_id == "b"
    with pytest.raises(InvalidSignature):
        relabelled.verify_signature()
    # A genuine chain-"b" transaction with the same contents verifies but has another sig.
    tx_b = _tx(chain_id="b")
    tx_b.verify_signature()
    assert tx_b.sig != tx_a.sig


def test_header_signature_never_verifies_as_tx_signature() -> None:
    tx = _tx()
    body = {k: v for k, v in _envelope(tx).items() if k != "sig"}
    # Same signer, same chain, same message -- only the domain tag differs.
    for tag in (TAG_HEADER, TAG_ADMIN, b"", TAG_TX + b"x"):
        sig = ALICE.sign(signing_bytes(tag, CHAIN, body))
        forged = decode_tx(mp(_envelope(tx, sig=sig)))
        with pytest.raises(InvalidSignature):
            forged.verify_signature()
    # Positive control: the TX tag is what verifies.
    sig = ALICE.sign(signing_bytes(TAG_TX, CHAIN, body))
    decode_tx(mp(_envelope(tx, sig=sig))).verify_signature()


def test_real_header_signature_not_accepted_as_tx_and_vice_versa() -> None:
    header = Header(CHAIN, 0, 1, b"\x00" * 32, 1000, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32,
                    ALICE.public_key)
    hsig = sign_header(ALICE, header)
    SignedHeader(header, hsig).verify(ALICE.public_key)
    tx = _tx()
    with pytest.raises(InvalidSignature):
        decode_tx(mp(_envelope(tx, sig=hsig))).verify_signature()
    with pytest.raises(InvalidSignature):
        SignedHeader(header, tx.sig).verify(ALICE.public_key)
    # A tx signature over the header's own message under TAG_TX is not a header signature.
    cross = ALICE.sign(signing_bytes(TAG_TX, CHAIN, header.to_obj()))
    with pytest.raises(InvalidSignature):
        SignedHeader(header, cross).verify(ALICE.public_key)
    assert header.signed_bytes().startswith(TAG_HEADER + b"\x00")
    assert tx.signed_bytes().startswith(TAG_TX + b"\x00")


# ---------------------------------------------------------------------------------------------
# Stateless payload checks


@pytest.mark.parametrize("cls", [Transfer, Deposit])
def test_zero_amount(cls: type) -> None:
    with pytest.raises(InvalidTransaction) as ei:
        cls(BOB.public_key, 0).check(ALICE.public_key)
    assert ei.value.reason == "zero_amount"
    cls(BOB.public_key, 1).check(ALICE.public_key)


@pytest.mark.parametrize("cls", [Transfer, Deposit])
def test_make_tx_refuses_zero_amount(cls: type) -> None:
    with pytest.raises(InvalidTransaction) as ei:
        make_tx(ALICE, CHAIN, 0, cls(BOB.public_key, 0))
    assert ei.value.reason == "zero_amount"


def test_zero_amount_still_decodes() -> None:
    # Amount 0 is well-formed on the wire; rejecting it is the payload check's job.
    tx = _tx()
    t2 = decode_tx(mp(_envelope(tx, payload={"amount": 0, "to": BOB.public_key})))
    assert t2.payload == Transfer(BOB.public_key, 0)
    with pytest.raises(InvalidTransaction):
        t2.payload.check(t2.sender)
