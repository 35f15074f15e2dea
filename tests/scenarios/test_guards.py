"""Guards against the incident this project answers: a block that would reset a funding index
to zero (or create collateral from nowhere) is refused, the producer halts itself, and nothing
of that block reaches the store.

The faulty code is simulated the way the incident happened, by a buggy step in the state
transition: the test replaces the funding step with one that also writes the corruption.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import trio

import state.block_end as block_end
from chain.tx import Deposit, OraclePrice, PlaceOrder, make_tx
from genesis.builder import DevnetKeys, build_devnet, devnet_markets
from genesis.format import GenesisMarket, parse_time
from node.client.admin_client import AdminClient
from node.client.rpc_client import RPCCallError, RPCClient
from node.dev.local import GENESIS_TIME, make_genesis, make_home, running_node
from node.mempool import MempoolReject, RejectCode
from node.node import Node, open_node
from node.wire_json import b64
from state.accounts import get_account, put_account
from state.exchange.markets import get_market_state, put_market_state
from state.invariants import InvariantViolation
from state.records import MarketState, market_state_key
from state.store import Store
from tests.harness.exchange import USD, px
from tests.harness.rpc_chain import Chain, admin_url, order
from tests.helpers import rewrite_behind_the_chain

BTC = "BTC-USD-PERP"


def fast_funding_node(tmp_path: Path) -> tuple[Node, DevnetKeys]:
    t, ms = parse_time(GENESIS_TIME)
    btc = devnet_markets()[0]
    fast = GenesisMarket(replace(btc.market, funding_interval_ms=1000), btc.oracle_price)
    g, keys = build_devnet("guard-chain", t, ms, accounts=3, balance=10**12, markets=(fast,))
    node = open_node(make_home(tmp_path / "n", g, keys.producer, block_interval_ms=60_000))
    return node, keys


async def grow_funding_index(node: Node, keys: DevnetKeys) -> int:
    """Quote a book with a premium and produce blocks until the index has moved."""
    alice, carol, _ = keys.accounts
    g = node.genesis
    px = 60_000 * 10**6
    for key, side, price in ((alice, "sell", px + 1_000 * 10**6), (carol, "buy", px + 900 * 10**6)):
        node.intake.submit(make_tx(key, g.chain_id, 0, PlaceOrder(BTC, side, "limit", "gtc", price,
                                                           10_000_000, False, 0)).raw)
    with trio.fail_after(20):
        while True:
            await node.produce_block()
            st = get_market_state(node.store.overlay(), BTC)
            assert st is not None
            if st.funding_index != 0:
                return st.funding_index
            await trio.sleep(0.1)


async def test_funding_index_reset_to_zero_is_refused_and_halts(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    node, keys = fast_funding_node(tmp_path)
    try:
        index = await grow_funding_index(node, keys)
        assert index > 0  # bids above the oracle: longs pay
        real = block_end.process_funding

        def faulty(view, ctx):  # type: ignore[no-untyped-def]
            events = real(view, ctx)
            st = get_market_state(view, BTC)
            put_market_state(view, BTC, replace(st, funding_index=0))  # the incident
            return events

        monkeypatch.setattr(block_end, "process_funding", faulty)
        head = node.head
        with pytest.raises(InvariantViolation) as e:
            await node.produce_block()
        assert e.value.check == "funding_index"
        assert e.value.evidence["after"] == "0"
        # Nothing of that block reached the store.
        assert node.store.head() == head
        assert node.store.block_bytes(head.height + 1) is None
        st = get_market_state(node.store.overlay(), BTC)
        assert st is not None and st.funding_index == index
        # The producer is halted, says why, and refuses transactions with its own code.
        assert node.halted is not None and node.halted.check == "funding_index"
        assert node.halted.evidence["before"] == str(index)
        t = make_tx(keys.accounts[2], node.genesis.chain_id, 0,
                    PlaceOrder(BTC, "buy", "limit", "gtc", 59_000 * 10**6, 10_000, False, 0))
        with pytest.raises(MempoolReject) as r:
            node.intake.submit(t.raw)
        assert r.value.code == RejectCode.HALTED
    finally:
        node.close()
    # The halt survives a restart: the producer does not resume by itself.
    monkeypatch.undo()
    node = open_node(node.home)
    try:
        assert node.halted is not None and node.halted.check == "funding_index"
    finally:
        node.close()


async def test_collateral_from_nowhere_is_refused(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    node, keys = fast_funding_node(tmp_path)
    try:
        await node.produce_block()
        real = block_end.process_funding
        who = keys.accounts[0].public_key

        def faulty(view, ctx):  # type: ignore[no-untyped-def]
            acct = get_account(view, who)
            put_account(view, who, replace(acct, balance=acct.balance + 1))
            return real(view, ctx)

        monkeypatch.setattr(block_end, "process_funding", faulty)
        head = node.head
        with pytest.raises(InvariantViolation) as e:
            await node.produce_block()
        assert e.value.check == "conservation"
        assert e.value.evidence["collateral_change"] == "1"
        assert node.store.head() == head
        assert get_account(node.store.overlay(), who).balance == 10**12
    finally:
        node.close()


def test_a_write_outside_the_blocks_is_refused_by_the_first_block_that_writes_the_key(
        tmp_path: Path) -> None:
    """The seed's corruption: a maintenance step writes a corrupted funding index straight
    into the store of the stopped node. ``maintenance end`` refuses; forced through with
    ``resume --force``, the first block that writes that market would build on the bad
    value: the prior-value check (the committed tree holds another value for the key)
    refuses it and the producer halts naming the key. The same corruption, rewritten
    thoroughly enough to get past this check, sets off a liquidation cascade
    (tests/scenarios/test_incident.py); here nobody is liquidated."""
    g, keys = make_genesis(accounts=3, balance=10_000 * USD, markets=True)
    alice, bob, carol = keys.accounts
    home = make_home(tmp_path / "n", g, keys.producer, block_interval_ms=50)
    ops = list(keys.operators)
    with running_node(home) as n, RPCClient(n.url) as c:
        ch = Chain(c, g.chain_id)
        ch.commit(keys.faucet, Deposit(alice.public_key, 500_000 * USD))
        ch.commit(alice, order("sell", "limit", 60_000, 3))
        ch.commit(bob, order("buy", "market", 60_100, 1, "ioc"))      # ~6x long
        ch.commit(carol, order("buy", "market", 60_100, 1.5, "ioc"))  # ~9x long
        with AdminClient(admin_url(home.root), ops) as adm:
            pinned = int(adm.run("maintenance_begin", {})["snapshot"]["height"])
        assert n.terminate() == 0
    with Store(home.store_dir) as s:
        st = MarketState.decode(s.state_get(market_state_key(BTC)) or b"")
    bad = replace(st, funding_index=st.funding_index + 9_000 * 10**12)
    rewrite_behind_the_chain(home.store_dir, [(market_state_key(BTC), bad.encode())],
                             tree_too=False)
    with running_node(home) as n, RPCClient(n.url) as c, \
            AdminClient(admin_url(home.root), ops) as adm:
        with pytest.raises(RPCCallError):
            adm.run("maintenance_end")
        adm.run("resume", {"force": "true"})
        price = make_tx(keys.oracles[0], g.chain_id, 0,
                        OraclePrice(BTC, px(60_000), time.time_ns() // 10**6))
        try:
            c.call("broadcast_tx_sync", tx=b64(price.raw))
        except RPCCallError:
            pass  # already halted by an earlier block that wrote the market
        deadline = time.monotonic() + 20
        halted = None
        while time.monotonic() < deadline:
            halted = c.call("status")["halted"]
            if halted is not None and halted["check"] == "stored_state":
                break
            time.sleep(0.05)
        assert halted is not None and halted["check"] == "stored_state", halted
        assert f"mks/{BTC}" in halted["reason"], halted
        [k] = halted["evidence"]["keys"]
        assert k["key_text"] == f"mks/{BTC}"
        head = int(c.call("status")["sync_info"]["latest_block_height"])
        # (blocks that did not write the market may have come before the refused one)
        assert Chain(c, g.chain_id).end_events(pinned + 1, head, "liquidation_settled") == []
        for who in (bob, carol):
            # (their positions read the changed market: refused typed, never served)
            with pytest.raises(RPCCallError) as refused:
                c.call("account", address=who.public_key.hex())
            assert refused.value.code == 1040
            assert refused.value.data == {"reason": "stored_state"}
        # The refused block wrote nothing: the head stays put while halted.
        assert int(c.call("status")["sync_info"]["latest_block_height"]) == head
        assert n.terminate() == 0


async def test_a_node_refuses_to_start_or_resume_on_a_tree_that_is_not_the_heads(
        tmp_path: Path) -> None:
    from node.node_error import NodeError
    from state.schema import META_HEAD

    node, keys = fast_funding_node(tmp_path)
    await node.produce_block()
    home, head = node.home, node.head
    node.close()
    with Store(home.store_dir) as s:
        st = MarketState.decode(s.state_get(market_state_key(BTC)) or b"")
    rewrite_behind_the_chain(home.store_dir, [(market_state_key(BTC), replace(
        st, oracle_price=1).encode())], tree_too=True)
    with Store(home.store_dir) as s:  # ... but the head record is put back: roots disagree
        s.db.put(META_HEAD, head.encode(), sync=True)
    with pytest.raises(NodeError) as e:
        open_node(home)
    assert "differs from the state root" in str(e.value) and "appchain verify" in str(e.value)


def test_keys_are_printed_by_their_layout() -> None:
    from state.invariants import printable_key

    addr = bytes(range(32))
    assert printable_key(b"acct/" + addr) == "acct/" + addr.hex()
    assert printable_key(b"pos/" + addr + b"/BTC-USD-PERP") == f"pos/{addr.hex()}/BTC-USD-PERP"
    assert printable_key(b"ord/" + addr + (7).to_bytes(8, "big")) == f"ord/{addr.hex()}/7"
    assert printable_key(b"mks/BTC-USD-PERP") == "mks/BTC-USD-PERP"
    assert printable_key(b"book/BTC/a" + bytes(8)) == "book/" + (b"BTC/a" + bytes(8)).hex()
    assert printable_key(b"\xff\x00") == "ff00"
