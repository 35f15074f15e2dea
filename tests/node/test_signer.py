"""The producer's last-signed record: never two different blocks at one (era, height)."""

from __future__ import annotations

import base64
import json
import shutil
import stat
from pathlib import Path

import pytest

from chain.block import Block, Header
from chain.crypto import PrivateKey, sha256
from chain.merkle import merkle_root
from chain.tx import Transfer, make_tx
from node.dev.local import make_genesis, make_home
from node.keyfile import write_key
from node.node import open_node
from node.node_error import NodeError
from node.signer import DoubleSignRefused, Signer
from state.records import Account
from state.schema import account_key
from state.transition import apply_body

CHAIN = "test-chain"


def header(key: PrivateKey, height: int, *, era: int = 0, variant: int = 0,
           txs: tuple[bytes, ...] = ()) -> Header:
    """A well-formed header; ``variant`` changes its contents (and so its hash)."""
    return Header(
        chain_id=CHAIN,
        era=era,
        height=height,
        prev_hash=sha256(b"prev %d %d" % (era, height)),
        time=1_000_000 + height * 10 + variant,
        tx_root=merkle_root(list(txs)),
        results_root=merkle_root([]),
        state_root=sha256(b"state %d" % variant),
        producer=key.public_key,
    )


@pytest.fixture
def key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "data" / "priv_validator_state.json"


def new_signer(key: PrivateKey, state_file: Path) -> Signer:
    state_file.parent.mkdir(parents=True, exist_ok=True)
    return Signer(key, state_file)


def test_signs_and_records_durably(key: PrivateKey, state_file: Path) -> None:
    s = new_signer(key, state_file)
    assert (s.era, s.height) == (-1, -1)
    assert not state_file.exists()
    txs = (b"tx-one", b"tx-two")
    h = header(key, 1, txs=txs)
    block, raw = s.sign_block(h, txs)
    assert block.header == h and block.txs == txs
    assert raw == block.encode()
    assert Block.decode_block(raw) == block
    block.signed_header.verify(key.public_key)
    # The record is on disk, owner-only, and describes exactly this block.
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    doc = json.loads(state_file.read_text())
    assert doc["era"] == 0 and doc["height"] == 1
    assert doc["block_hash"] == h.hash.hex()
    assert base64.b64decode(doc["block"]) == raw
    assert (s.era, s.height, s.block_hash) == (0, 1, h.hash)


def test_refuses_a_different_block_at_the_same_height(key: PrivateKey,
                                                      state_file: Path) -> None:
    s = new_signer(key, state_file)
    s.sign_block(header(key, 5), ())
    before = state_file.read_bytes()
    for variant in (1, 2):
        with pytest.raises(DoubleSignRefused, match="different block at height 5"):
            s.sign_block(header(key, 5, variant=variant), ())
    other_txs = (b"sneaky",)
    with pytest.raises(DoubleSignRefused):
        s.sign_block(header(key, 5, txs=other_txs), other_txs)
    assert state_file.read_bytes() == before  # the record was not touched


def test_refuses_lower_height_and_lower_era(key: PrivateKey, state_file: Path) -> None:
    s = new_signer(key, state_file)
    s.sign_block(header(key, 10, era=1), ())
    for h in (header(key, 9, era=1), header(key, 1, era=1), header(key, 0, era=1)):
        with pytest.raises(DoubleSignRefused, match="refusing height"):
            s.sign_block(h, ())
    # An older era is refused even at a greater height.
    with pytest.raises(DoubleSignRefused, match="era"):
        s.sign_block(header(key, 11, era=0), ())
    # check() alone says the same without signing.
    with pytest.raises(DoubleSignRefused):
        s.check(header(key, 9, era=1))
    s.check(header(key, 11, era=1))


def test_higher_heights_and_a_new_era_are_allowed(key: PrivateKey, state_file: Path) -> None:
    s = new_signer(key, state_file)
    s.sign_block(header(key, 1), ())
    s.sign_block(header(key, 2), ())
    s.sign_block(header(key, 7), ())  # gaps are not the signer's business
    assert s.height == 7
    # After a rollback (new era), a lower height may be signed again.
    s.sign_block(header(key, 3, era=1), ())
    assert (s.era, s.height) == (1, 3)
    with pytest.raises(DoubleSignRefused):
        s.sign_block(header(key, 8, era=0), ())


def test_same_header_returns_the_identical_recorded_block(key: PrivateKey,
                                                          state_file: Path) -> None:
    s = new_signer(key, state_file)
    txs = (b"a", b"b")
    h = header(key, 4, txs=txs)
    block, raw = s.sign_block(h, txs)
    before = state_file.read_bytes()
    again, raw2 = s.sign_block(h, txs)
    assert raw2 == raw and again == block
    assert again.sig == block.sig
    # Even if the caller passes other transactions, the recorded block comes back: the
    # header (whose tx_root fixes the transactions) is what was signed.
    again2, raw3 = s.sign_block(h, ())
    assert raw3 == raw and again2.txs == txs
    assert state_file.read_bytes() == before


def test_record_persists_across_signer_instances(key: PrivateKey, state_file: Path) -> None:
    s1 = new_signer(key, state_file)
    txs = (b"persisted",)
    h = header(key, 8, era=2, txs=txs)
    block, raw = s1.sign_block(h, txs)
    del s1

    s2 = Signer(key, state_file)  # e.g. after a restart
    assert (s2.era, s2.height, s2.block_hash, s2.block_bytes) == (2, 8, h.hash, raw)
    with pytest.raises(DoubleSignRefused):
        s2.sign_block(header(key, 8, era=2, variant=1), ())
    with pytest.raises(DoubleSignRefused):
        s2.sign_block(header(key, 7, era=2), ())
    with pytest.raises(DoubleSignRefused):
        s2.sign_block(header(key, 9, era=1), ())
    assert s2.sign_block(h, txs) == (block, raw)
    s2.sign_block(header(key, 9, era=2), ())

    s3 = Signer(key, state_file)
    assert (s3.era, s3.height) == (2, 9)


def test_pending_block_only_at_head_plus_one(key: PrivateKey, state_file: Path) -> None:
    s = new_signer(key, state_file)
    assert s.pending_block(0, 0) is None  # nothing signed yet
    _, raw = s.sign_block(header(key, 5, era=1), ())
    assert s.pending_block(1, 4) == raw
    assert s.pending_block(1, 5) is None  # already committed at the head
    assert s.pending_block(1, 3) is None  # the store is further behind: not ours to fix
    assert s.pending_block(1, 6) is None
    assert s.pending_block(0, 4) is None  # another era
    assert s.pending_block(2, 4) is None
    assert Signer(key, state_file).pending_block(1, 4) == raw


@pytest.mark.parametrize("text", [
    "", "{", "[]", '{"era": 0}', '{"era": 0, "height": 1, "block_hash": "zz"}',
    '{"era": "x", "height": 1, "block_hash": "", "block": ""}',
    '{"era": 0, "height": 1, "block_hash": "00", "block": "***"}',
])
def test_unreadable_record_refuses_to_sign(key: PrivateKey, state_file: Path,
                                           text: str) -> None:
    state_file.parent.mkdir(parents=True)
    state_file.write_text(text)
    with pytest.raises(DoubleSignRefused, match="unreadable"):
        Signer(key, state_file)


# -- the node uses the record on start --------------------------------------------------------


async def test_node_recommits_a_signed_but_uncommitted_block(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=2, balance=1000)
    home = make_home(tmp_path / "home", g, keys.producer, block_interval_ms=60_000)
    a, b = keys.accounts
    n = open_node(home)
    try:
        await n.produce_block()
        t = make_tx(a, g.chain_id, 0, Transfer(b.public_key, 40))
        n.intake.submit(t.raw)
        # What produce_block does, up to signing; then "crash" before the commit.
        txs = n.mempool.reap(10)
        height, time_ms = n.head.height + 1, n.head.time + 1
        out = apply_body(n.store, n.params, height, time_ms, txs)
        h = Header(chain_id=g.chain_id, era=n.head.era, height=height, prev_hash=n.head.hash,
                   time=time_ms, tx_root=out.tx_root, results_root=out.results_root,
                   state_root=out.state_root, producer=keys.producer.public_key)
        assert n.signer is not None
        _, raw = n.signer.sign_block(h, tuple(x.raw for x in txs))
        assert n.store.head().height == 1  # type: ignore[union-attr]
    finally:
        n.close()

    n = open_node(home)
    try:
        assert n.head.height == 2 and n.head.hash == h.hash
        assert n.store.block_bytes(2) == raw
        assert n.store.tx_location(t.hash) == (2, 0)
        bal = Account.decode(n.store.state_get(account_key(b.public_key)) or b"")
        assert bal.balance == 1040
        # Production continues above it.
        head = await n.produce_block()
        assert head.height == 3
    finally:
        n.close()


async def test_node_refuses_a_store_older_than_the_record(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=1)
    home = make_home(tmp_path / "home", g, keys.producer, block_interval_ms=60_000)
    n = open_node(home)
    try:
        await n.produce_block()
    finally:
        n.close()
    backup = tmp_path / "store-at-1"
    shutil.copytree(home.store_dir, backup)
    n = open_node(home)
    try:
        for _ in range(3):
            await n.produce_block()
        assert n.head.height == 4
    finally:
        n.close()
    # Restore the old copy: the producer already signed height 4, the store ends at 1.
    shutil.rmtree(home.store_dir)
    shutil.copytree(backup, home.store_dir)
    with pytest.raises(NodeError, match="already signed height 4"):
        open_node(home)
    # A node without the producer key (read-only) may still open it.
    home.producer_key_file.unlink()
    ro = open_node(home)
    try:
        assert ro.signer is None and ro.head.height == 1
    finally:
        ro.close()


async def test_node_refuses_a_key_that_is_not_the_genesis_producer(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=1)
    home = make_home(tmp_path / "home", g, keys.faucet)
    with pytest.raises(NodeError, match="not the genesis producer"):
        open_node(home)
    # Nothing was left locked: the right key opens the same home.
    home.producer_key_file.unlink()
    write_key(home.producer_key_file, keys.producer)
    n = open_node(home)
    try:
        assert n.signer is not None and n.head.height == 0
    finally:
        n.close()
