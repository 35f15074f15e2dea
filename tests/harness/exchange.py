"""An in-process chain with the devnet markets, one block per call, and the order, oracle and
operator transactions the state tests build blocks from.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from chain.admin import make_command, sign_command
from chain.block import Block, Header, TxResult, sign_header
from chain.crypto import PrivateKey
from chain.tx import (
    OperatorCall,
    OraclePrice,
    PlaceOrder,
    Transaction,
    make_tx,
)
from genesis.builder import DevnetKeys
from genesis.initial_store import init_store
from node.dev.local import make_genesis
from state.accounts import get_account
from state.exchange.positions import account_positions, get_position
from state.params import load_params
from state.records import (
    BAD_DEBT,
    FEE_POOL,
    FUNDING_DUST,
    INSURANCE_ADDRESS,
    Pool,
)
from state.store import Store
from state.transition import apply_body, import_block


def build(store: Store, keys: DevnetKeys, txs: list[Transaction], dt: int = 1000,
          tamper: dict[str, object] | None = None) -> bytes:
    """A signed block over ``txs`` on the store's head (not committed)."""
    head = store.head()
    assert head is not None
    params = load_params(store.overlay())
    out = apply_body(store, params, head.height + 1, head.time + dt, txs)
    fields = dict(chain_id=params.chain_id, era=0, height=head.height + 1,
                  prev_hash=head.hash, time=head.time + dt, tx_root=out.tx_root,
                  results_root=out.results_root, state_root=out.state_root,
                  producer=keys.producer.public_key)
    fields.update(tamper or {})
    header = Header(**fields)  # type: ignore[arg-type]
    return Block(header, sign_header(keys.producer, header), tuple(t.raw for t in txs)).encode()


BTC = "BTC-USD-PERP"


USD = 10**6  # micro-USDC per USDC


BTC_SIZE = 10**8  # size units per BTC


START = 10_000 * USD


class Exchange:
    """A chain with markets; each ``block`` call commits one block of transactions."""

    def __init__(self, tmp: Path) -> None:
        self.g, self.keys = make_genesis(accounts=5, balance=START, markets=True)
        self.store = Store(tmp / "db")
        init_store(self.store, self.g)
        self.nonces: dict[bytes, int] = {}
        self.alice, self.bob, self.carol, self.dave, self.erin = self.keys.accounts

    def tx(self, key: PrivateKey, payload: object) -> Transaction:
        n = self.nonces.get(key.public_key, 0)
        self.nonces[key.public_key] = n + 1
        return make_tx(key, self.g.chain_id, n, payload)  # type: ignore[arg-type]

    def block(self, *txs: Transaction, dt: int = 1000) -> list:  # type: ignore[type-arg]
        import_block(self.store, build(self.store, self.keys, list(txs), dt=dt))
        h = self.store.head()
        assert h is not None
        from chain.block import TxResult

        return [TxResult.decode(r) for r in self.store.results(h.height) or []]

    @property
    def height(self) -> int:
        h = self.store.head()
        assert h is not None
        return h.height

    def collateral(self, key: PrivateKey) -> int:
        return get_account(self.store.overlay(), key.public_key).balance

    def position(self, key: PrivateKey) -> tuple[int, int]:
        p = get_position(self.store.overlay(), key.public_key, BTC)
        return (0, 0) if p is None else (p.size, p.cost)

    def fee_pool(self) -> int:
        p = self.store.overlay().get_obj(FEE_POOL, Pool)
        return p.amount if p else 0

    def conserved_scaled(self) -> int:
        """The guard's conserved quantity in 10^-14 micro-USDC: collateral (insurance fund
        included) − cost + fees − bad debt, plus funding dust, plus funding owed but unsettled
        (Σ size·index)."""
        ov = self.store.overlay()
        d = 10**14
        total = 0
        for key, sign in ((FEE_POOL, 1), (BAD_DEBT, -1)):
            p = ov.get_obj(key, Pool)
            total += sign * d * (p.amount if p else 0)
        dust = ov.get_obj(FUNDING_DUST, Pool)
        total += dust.amount if dust else 0
        for addr in [k.public_key for k in self.keys.accounts] + [INSURANCE_ADDRESS]:
            total += d * get_account(ov, addr).balance
            for _, pos in account_positions(ov, addr):
                total += pos.size * pos.funding_index - d * pos.cost
        return total

    def conserved(self) -> int:
        """Σ collateral − Σ cost basis + fee pool: trades and fees never change it."""
        ov = self.store.overlay()
        total = self.fee_pool()
        for k in self.keys.accounts:
            total += get_account(ov, k.public_key).balance
            for _, pos in account_positions(ov, k.public_key):
                total -= pos.cost
        return total


def limit(side: str, price_usd: float, size_btc: float, tif: str = "gtc",
          reduce_only: bool = False) -> PlaceOrder:
    return PlaceOrder(BTC, side, "limit", tif, int(round(price_usd * 10)) * 100_000,
                      int(round(size_btc * 10_000)) * 10_000, reduce_only, 0)


def market(side: str, worst_usd: float, size_btc: float, reduce_only: bool = False
           ) -> PlaceOrder:
    return PlaceOrder(BTC, side, "market", "ioc", int(round(worst_usd * 10)) * 100_000,
                      int(round(size_btc * 10_000)) * 10_000, reduce_only, 0)


def px(usd: float) -> int:
    return int(round(usd * 10)) * 100_000


def oracle(ex: Exchange, price: int, symbol: str = BTC, dt: int = 1000) -> Transaction:
    head = ex.store.head()
    assert head is not None
    return ex.tx(ex.keys.oracles[0], OraclePrice(symbol, price, head.time + dt))


def liq_events(ex: Exchange) -> list[dict[str, str]]:
    return [e for e in end_events(ex) if e["type"].startswith("liquidation")]


def open_long(ex: Exchange, btc: float) -> None:
    """Alice rests an ask of ``btc`` at 60,000; Dave buys it at market (taker fee 0.05%)."""
    ex.block(ex.tx(ex.alice, limit("sell", 60_000, btc)))
    [r] = ex.block(ex.tx(ex.dave, market("buy", 60_000, btc)))
    assert r.code == 0, r.log


def end_events(ex: Exchange) -> list[dict[str, str]]:
    h = ex.height
    block_txs = len(Block.decode_block(ex.store.block_bytes(h) or b"").txs)
    results = ex.store.results(h) or []
    return [e.as_dict() | {"type": e.type} for r in results[block_txs:]
            for e in TxResult.decode(r).events]


_nonces = itertools.count(1)


def op_tx(ex: Exchange, command: str, args: dict[str, str], *,
          keys: list[PrivateKey] | None = None, issued_at: int | None = None,
          nonce: int | None = None, sender: PrivateKey | None = None,
          chain_id: str | None = None) -> Transaction:
    head = ex.store.head()
    assert head is not None
    cmd = make_command(chain_id or ex.g.chain_id, command, args,
                       head.time if issued_at is None else issued_at,
                       next(_nonces) if nonce is None else nonce)
    env = sign_command(cmd, list(ex.keys.operators) if keys is None else keys)
    return ex.tx(sender or ex.keys.operators[0], OperatorCall(env.encode()))


def tpsl(kind: str, side: str, trigger: float, worst: float, size: float) -> PlaceOrder:
    return PlaceOrder(BTC, side, kind, "ioc", px(worst), int(round(size * 10_000)) * 10_000,
                      True, px(trigger))
