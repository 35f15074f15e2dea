"""Oracle price updates: signed by genesis oracle keys, in order, fresh, not from the future."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.codec import encode
from chain.codes import ResultCode
from chain.crypto import TAG_TX, signing_bytes
from chain.tx import OraclePrice, decode_tx, make_tx
from genesis.builder import DevnetKeys
from genesis.format import Genesis
from genesis.initial_store import init_store
from node.dev.local import make_genesis
from node.mempool import Mempool, MempoolReject, RejectCode
from state.exchange.markets import get_market, get_market_state
from state.params import load_params
from state.records import Account
from state.store import Store
from state.transition import apply_body

BTC = "BTC-USD-PERP"


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[Store, Genesis, DevnetKeys]]:
    g, keys = make_genesis(accounts=2, markets=True)
    s = Store(tmp_path / "db")
    init_store(s, g)
    yield s, g, keys
    s.close()


def run(store: Store, txs: list, block_time: int):  # type: ignore[no-untyped-def]
    head = store.head()
    assert head is not None
    return apply_body(store, load_params(store.overlay()), head.height + 1, block_time, txs)


def test_genesis_markets_are_in_state(chain) -> None:  # type: ignore[no-untyped-def]
    store, g, _ = chain
    ov = store.overlay()
    m = get_market(ov, BTC)
    st = get_market_state(ov, BTC)
    assert m is not None and st is not None
    assert m.initial_margin_ppm == 50_000 and m.maintenance_margin_ppm == 30_000
    assert (st.oracle_price, st.oracle_time) == (60_000 * 10**6, g.genesis_time_ms)
    assert (st.funding_index, st.open_interest_long, st.mode) == (0, 0, "active")


def test_oracle_updates_accepted_in_order(chain) -> None:  # type: ignore[no-untyped-def]
    store, g, keys = chain
    oracle = keys.oracles[0]
    t0 = g.genesis_time_ms
    out = run(store, [
        make_tx(oracle, g.chain_id, 0, OraclePrice(BTC, 61_000 * 10**6, t0 + 1_000)),
        make_tx(oracle, g.chain_id, 1, OraclePrice(BTC, 61_500 * 10**6, t0 + 2_000)),
    ], block_time=t0 + 2_500)
    assert [r.code for r in out.results] == [0, 0]
    st = get_market_state(out.overlay, BTC)
    assert st is not None and (st.oracle_price, st.oracle_time) == (61_500 * 10**6, t0 + 2_000)
    assert out.results[1].events[0].as_dict() == {
        "market": BTC, "price": str(61_500 * 10**6), "time": str(t0 + 2_000)}


@pytest.mark.parametrize("who,market,price,dt,block_dt,code", [
    ("account", BTC, 61_000, 1_000, 2_000, ResultCode.UNAUTHORIZED),
    ("oracle", "DOGE-USD-PERP", 1, 1_000, 2_000, ResultCode.UNKNOWN_MARKET),
    ("oracle", BTC, 61_000, 0, 2_000, ResultCode.STALE_PRICE),          # not after genesis price
    ("oracle", BTC, 61_000, 1_000, 1_000 + 60_001, ResultCode.STALE_PRICE),  # too old
    ("oracle", BTC, 61_000, 3_000, 2_000, ResultCode.FUTURE_PRICE),
    ("oracle", BTC, 0, 1_000, 2_000, ResultCode.INVALID_PAYLOAD),
])
def test_refused_updates_change_nothing(chain, who, market, price, dt, block_dt, code  # type: ignore[no-untyped-def]
                                        ) -> None:
    store, g, keys = chain
    key = keys.oracles[0] if who == "oracle" else keys.accounts[0]
    t0 = g.genesis_time_ms
    # Signed by hand: make_tx refuses a zero price, which this table also sends.
    body = {"chain_id": g.chain_id, "nonce": 0,
            "payload": {"market": market, "price": price * 10**6, "time": t0 + dt},
            "sender": key.public_key, "type": "oracle_price"}
    sig = key.sign(signing_bytes(TAG_TX, g.chain_id, body))
    tx = decode_tx(encode({**body, "sig": sig}))
    out = run(store, [tx], block_time=t0 + block_dt)
    assert out.results[0].code == code
    st = get_market_state(out.overlay, BTC)
    assert st is not None and st.oracle_price == 60_000 * 10**6


def test_out_of_order_within_one_block(chain) -> None:  # type: ignore[no-untyped-def]
    store, g, keys = chain
    oracle = keys.oracles[0]
    t0 = g.genesis_time_ms
    out = run(store, [
        make_tx(oracle, g.chain_id, 0, OraclePrice(BTC, 61_000 * 10**6, t0 + 2_000)),
        make_tx(oracle, g.chain_id, 1, OraclePrice(BTC, 59_000 * 10**6, t0 + 1_000)),
    ], block_time=t0 + 3_000)
    assert [r.code for r in out.results] == [0, ResultCode.STALE_PRICE]
    st = get_market_state(out.overlay, BTC)
    assert st is not None and st.oracle_price == 61_000 * 10**6


def test_mempool_refuses_prices_from_non_oracles(chain) -> None:  # type: ignore[no-untyped-def]
    store, g, keys = chain
    from genesis.state import chain_params

    mp = Mempool(chain_params(g), lambda _: Account(10**6, 0))
    t = make_tx(keys.accounts[0], g.chain_id, 0, OraclePrice(BTC, 1, g.genesis_time_ms + 1))
    with pytest.raises(MempoolReject) as e:
        mp.check(t.raw)
    assert e.value.code == RejectCode.UNAUTHORIZED
    ok = make_tx(keys.oracles[0], g.chain_id, 0, OraclePrice(BTC, 1, g.genesis_time_ms + 1))
    assert mp.check(ok.raw).hash == ok.hash
