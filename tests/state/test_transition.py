"""The state transition: per-transaction rules and block import checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.block import Block, sign_header
from chain.codes import ResultCode
from chain.crypto import PrivateKey
from chain.errors import InvalidBlock
from chain.tx import Deposit, Transaction, Transfer, Withdraw, make_tx
from genesis.builder import DevnetKeys
from genesis.format import Genesis
from genesis.initial_store import init_store
from node.dev.local import make_genesis
from state.accounts import account_record, get_account
from state.params import load_params
from state.records import Account
from state.schema import account_key
from state.store import Store
from state.transition import BlockOutcome, apply_body, commit, import_block
from tests.harness.exchange import build

Chain = tuple[Store, Genesis, DevnetKeys]


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    g, keys = make_genesis(accounts=3, balance=1000)
    s = Store(tmp_path / "db")
    init_store(s, g)
    yield s, g, keys
    s.close()


def run(store: Store, txs: list[Transaction]) -> tuple[list[int], BlockOutcome]:
    head = store.head()
    assert head is not None
    params = load_params(store.overlay())
    out = apply_body(store, params, head.height + 1, head.time + 1, txs)
    return [r.code for r in out.results], out


def test_transfer_moves_balance_and_bumps_nonce(chain: Chain) -> None:
    store, g, keys = chain
    a, b, _ = keys.accounts
    codes, out = run(store, [make_tx(a, g.chain_id, 0, Transfer(b.public_key, 300))])
    assert codes == [0]
    assert get_account(out.overlay, a.public_key) == Account(700, 1)
    assert get_account(out.overlay, b.public_key) == Account(1300, 0)
    ev = out.results[0].events[0]
    assert ev.type == "transfer"
    assert ev.as_dict() == {"amount": "300", "recipient": b.public_key.hex(),
                            "sender": a.public_key.hex()}


def test_failed_transfer_consumes_nonce_and_changes_nothing_else(chain: Chain) -> None:
    store, g, keys = chain
    a, b, _ = keys.accounts
    codes, out = run(store, [make_tx(a, g.chain_id, 0, Transfer(b.public_key, 1001))])
    assert codes == [ResultCode.INSUFFICIENT_FUNDS]
    assert "1000" in out.results[0].log
    assert get_account(out.overlay, a.public_key) == Account(1000, 1)
    assert get_account(out.overlay, b.public_key) == Account(1000, 0)


def test_self_transfer_keeps_balance(chain: Chain) -> None:
    store, g, keys = chain
    a = keys.accounts[0]
    codes, out = run(store, [make_tx(a, g.chain_id, 0, Transfer(a.public_key, 400))])
    assert codes == [0]
    assert get_account(out.overlay, a.public_key) == Account(1000, 1)


def test_deposit_only_from_faucet(chain: Chain) -> None:
    store, g, keys = chain
    a = keys.accounts[0]
    codes, out = run(store, [
        make_tx(keys.faucet, g.chain_id, 0, Deposit(a.public_key, 50)),
        make_tx(a, g.chain_id, 0, Deposit(a.public_key, 50)),
    ])
    assert codes == [0, ResultCode.UNAUTHORIZED]
    assert get_account(out.overlay, a.public_key) == Account(1050, 1)


def test_deposit_overflow_fails(chain: Chain) -> None:
    store, g, keys = chain
    a = keys.accounts[0]
    codes, out = run(store, [make_tx(keys.faucet, g.chain_id, 0, Deposit(a.public_key, 2**64 - 1))])
    assert codes == [ResultCode.OVERFLOW]
    assert get_account(out.overlay, a.public_key).balance == 1000


def test_nonce_out_of_order_makes_the_block_invalid(chain: Chain) -> None:
    store, g, keys = chain
    a, b, _ = keys.accounts
    with pytest.raises(InvalidBlock) as e:
        run(store, [make_tx(a, g.chain_id, 1, Transfer(b.public_key, 1))])
    assert e.value.tx_index == 0
    assert e.value.reason == "nonce_mismatch"


def test_import_block_commits_a_valid_block(chain: Chain) -> None:
    store, g, keys = chain
    a, b, _ = keys.accounts
    t = make_tx(a, g.chain_id, 0, Transfer(b.public_key, 1))
    raw = build(store, keys, [t])
    new_head = import_block(store, raw)
    assert new_head.height == 1
    assert store.tx_location(t.hash) == (1, 0)
    assert Account.decode(store.state_get(b"acct/" + a.public_key) or b"") == Account(999, 1)


@pytest.mark.parametrize("tamper,reason", [
    ({"height": 2}, "height"),
    ({"prev_hash": b"\x07" * 32}, "prev_hash"),
    ({"time": 0}, "time"),
    ({"era": 1}, "era"),
    ({"chain_id": "other"}, "chain"),
    ({"state_root": b"\x05" * 32}, "state_root"),
    ({"tx_root": b"\x05" * 32}, "tx_root"),
    ({"results_root": b"\x05" * 32}, "results_root"),
])
def test_import_refuses_bad_headers_and_writes_nothing(
        chain: Chain, tamper: dict[str, object], reason: str) -> None:
    store, g, keys = chain
    a, b, _ = keys.accounts
    raw = build(store, keys, [make_tx(a, g.chain_id, 0, Transfer(b.public_key, 1))],
                tamper=tamper)
    before = list(store.db.iterator())
    with pytest.raises(InvalidBlock, match=reason):
        import_block(store, raw)
    assert list(store.db.iterator()) == before


def test_import_refuses_a_block_signed_by_another_key(chain: Chain) -> None:
    store, g, keys = chain
    raw = build(store, keys, [])
    blk = Block.decode_block(raw)
    forged = Block(blk.header, sign_header(keys.accounts[0], blk.header), blk.txs).encode()
    with pytest.raises(InvalidBlock, match="signature"):
        import_block(store, forged)
    assert store.head().height == 0  # type: ignore[union-attr]


def test_import_refuses_a_tx_with_a_bad_signature(chain: Chain) -> None:
    store, g, keys = chain
    a, b, _ = keys.accounts
    t = make_tx(a, g.chain_id, 0, Transfer(b.public_key, 1))
    sig_at = bytes(t.raw).index(t.sig)
    bad = bytearray(t.raw)
    bad[sig_at] ^= 1
    from chain.tx import decode_tx

    forged = decode_tx(bytes(bad))
    raw = build(store, keys, [forged])
    with pytest.raises(InvalidBlock, match="transaction 0"):
        import_block(store, raw)


def test_same_blocks_give_byte_identical_state(tmp_path: Path) -> None:
    g, keys = make_genesis(accounts=4, balance=10_000)
    a, b, c, d = keys.accounts
    s1 = Store(tmp_path / "one")
    s2 = Store(tmp_path / "two")
    init_store(s1, g)
    init_store(s2, g)
    blocks = []
    nonces = dict.fromkeys([a.public_key, b.public_key, c.public_key, d.public_key], 0)
    for i in range(5):
        txs = []
        for k, to in ((a, b), (b, c), (c, d), (d, a)):
            txs.append(make_tx(k, g.chain_id, nonces[k.public_key],
                               Transfer(to.public_key, 7 * i + 1)))
            nonces[k.public_key] += 1
        raw = build(s1, keys, txs)
        import_block(s1, raw)
        blocks.append(raw)
    for raw in blocks:
        import_block(s2, raw)
    assert s1.dump_state() == s2.dump_state()
    assert s1.head() == s2.head()
    s1.close()
    s2.close()


def test_commit_helper_links_head(chain: Chain) -> None:
    store, g, keys = chain
    raw = build(store, keys, [])
    blk = Block.decode_block(raw)
    params = load_params(store.overlay())
    out = apply_body(store, params, 1, blk.header.time, [])
    h = commit(store, blk, raw, [], out)
    assert h.hash == blk.hash and store.head() == h


# -- includability: a sender needs an account record (state/accounts.py) ---------------------


def test_tx_from_key_without_account_makes_the_block_invalid(chain: Chain) -> None:
    """Not a failed result: the transaction cannot be in a block at all, so it neither
    creates an account record nor can be included again and again (no nonce to consume)."""
    store, g, keys = chain
    a = keys.accounts[0]
    fresh = PrivateKey.generate()
    bad = make_tx(fresh, g.chain_id, 0, Transfer(a.public_key, 1))
    ok = make_tx(a, g.chain_id, 0, Transfer(keys.accounts[1].public_key, 1))
    with pytest.raises(InvalidBlock) as ei:
        run(store, [ok, bad])
    assert ei.value.reason == "no_account" and ei.value.tx_index == 1


def test_producer_leaves_out_senders_without_account(chain: Chain) -> None:
    store, g, keys = chain
    a, b, _ = keys.accounts
    fresh, funded = PrivateKey.generate(), PrivateKey.generate()
    head = store.head()
    assert head is not None
    params = load_params(store.overlay())
    txs = [
        make_tx(fresh, g.chain_id, 0, Transfer(a.public_key, 1)),
        make_tx(a, g.chain_id, 0, Transfer(funded.public_key, 10)),  # creates funded's record
        make_tx(funded, g.chain_id, 0, Transfer(b.public_key, 5)),  # so this one runs
        make_tx(a, g.chain_id, 1, Transfer(fresh.public_key, 10)),
        make_tx(fresh, g.chain_id, 1, Transfer(a.public_key, 1)),  # follows a left-out one
        make_tx(b, g.chain_id, 0, Transfer(a.public_key, 10_000)),  # fails, still included
    ]
    out = apply_body(store, params, head.height + 1, head.time + 1, txs, leave_out=True)
    assert out.included == [txs[1], txs[2], txs[3], txs[5]]
    assert out.left_out == [txs[0], txs[4]]
    assert [r.code for r in out.results] == [0, 0, 0, ResultCode.INSUFFICIENT_FUNDS]
    assert get_account(out.overlay, funded.public_key) == Account(5, 1)
    assert get_account(out.overlay, b.public_key) == Account(1005, 1)  # failed: nonce bumped
    # The block of what was included imports strictly, with the same roots.
    strict = apply_body(store, params, head.height + 1, head.time + 1, out.included)
    assert (strict.tx_root, strict.state_root) == (out.tx_root, out.state_root)


def test_failing_tx_never_creates_an_account_record(chain: Chain) -> None:
    store, g, keys = chain
    a = keys.accounts[0]
    fresh = PrivateKey.generate()
    head = store.head()
    assert head is not None
    params = load_params(store.overlay())
    txs = [make_tx(fresh, g.chain_id, 0, Transfer(a.public_key, 1)),
           make_tx(fresh, g.chain_id, 0, Withdraw(1))]
    out = apply_body(store, params, head.height + 1, head.time + 1, txs, leave_out=True)
    assert out.included == [] and account_record(out.overlay, fresh.public_key) is None
    assert all(k != account_key(fresh.public_key) for k, _ in out.overlay.changes())


def test_genesis_keys_send_without_an_account(chain: Chain) -> None:
    """The faucet, oracles and operators need no record: their first transaction makes the
    one that holds their nonce."""
    store, g, keys = chain
    assert account_record(store.overlay(), keys.faucet.public_key) is None
    codes, out = run(store, [
        make_tx(keys.faucet, g.chain_id, 0, Deposit(keys.accounts[0].public_key, 5))])
    assert codes == [0]
    assert account_record(out.overlay, keys.faucet.public_key) == Account(0, 1)
