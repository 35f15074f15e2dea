"""Guards against the incident this project answers: a block that would reset a funding index
to zero (or create collateral from nowhere) is refused, the producer halts itself, and nothing
of that block reaches the store.

The faulty code is simulated the way the incident happened, by a buggy step in the state
transition: the test replaces the funding step with one that also writes the corruption.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio

import state.funding_step as funding_step
from chain.tx import PlaceOrder, make_tx
from genesis.devnet import build_devnet, devnet_markets
from genesis.format import GenesisMarket, parse_time
from node.mempool import MempoolReject, RejectCode
from node.node import Node, open_node
from state.accounts import get_account, put_account
from state.invariants import InvariantViolation
from state.markets import get_market_state, put_market_state
from tests.helpers import GENESIS_TIME, make_home

BTC = "BTC-USD-PERP"


def fast_funding_node(tmp_path: Path) -> tuple[Node, object]:
    t, ms = parse_time(GENESIS_TIME)
    btc = devnet_markets()[0]
    fast = GenesisMarket(replace(btc.market, funding_interval_ms=1000), btc.oracle_price)
    g, keys = build_devnet("guard-chain", t, ms, accounts=3, balance=10**12, markets=(fast,))
    node = open_node(make_home(tmp_path / "n", g, keys.producer, block_interval_ms=60_000,
                               sync=False))
    return node, keys


async def grow_funding_index(node: Node, keys) -> int:  # type: ignore[no-untyped-def]
    """Quote a book with a premium and produce blocks until the index has moved."""
    alice, carol, _ = keys.accounts
    g = node.genesis
    px = 60_000 * 10**6
    for key, side, price in ((alice, "sell", px + 1_000 * 10**6), (carol, "buy", px + 900 * 10**6)):
        node.submit(make_tx(key, g.chain_id, 0, PlaceOrder(BTC, side, "limit", "gtc", price,
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
        real = funding_step.process_funding

        def faulty(view, ctx):  # type: ignore[no-untyped-def]
            events = real(view, ctx)
            st = get_market_state(view, BTC)
            put_market_state(view, BTC, replace(st, funding_index=0))  # the incident
            return events

        monkeypatch.setattr(funding_step, "process_funding", faulty)
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
        assert node.halted is not None and node.halted["check"] == "funding_index"
        assert node.halted["evidence"]["before"] == str(index)
        t = make_tx(keys.accounts[2], node.genesis.chain_id, 0,
                    PlaceOrder(BTC, "buy", "limit", "gtc", 59_000 * 10**6, 10_000, False, 0))
        with pytest.raises(MempoolReject) as r:
            node.submit(t.raw)
        assert r.value.code == RejectCode.HALTED
    finally:
        node.close()
    # The halt survives a restart: the producer does not resume by itself.
    monkeypatch.undo()
    node = open_node(node.home)
    try:
        assert node.halted is not None and node.halted["check"] == "funding_index"
    finally:
        node.close()


async def test_collateral_from_nowhere_is_refused(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    node, keys = fast_funding_node(tmp_path)
    try:
        await node.produce_block()
        real = funding_step.process_funding
        who = keys.accounts[0].public_key

        def faulty(view, ctx):  # type: ignore[no-untyped-def]
            acct = get_account(view, who)
            put_account(view, who, replace(acct, balance=acct.balance + 1))
            return real(view, ctx)

        monkeypatch.setattr(funding_step, "process_funding", faulty)
        head = node.head
        with pytest.raises(InvariantViolation) as e:
            await node.produce_block()
        assert e.value.check == "conservation"
        assert e.value.evidence["collateral_change"] == "1"
        assert node.store.head() == head
        assert get_account(node.store.overlay(), who).balance == 10**12
    finally:
        node.close()
