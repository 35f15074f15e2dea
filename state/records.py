"""What state keys hold: the value types of the state and the keys they live under.

Every node, light client and independent client decodes the same records, so they live in
one module that imports nothing but the codec and the scales: a light client reads them
without loading the store or the exchange engine (docs/PROTOCOL.md §5.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from chain.codec import I64, U32, U64, Bytes32, Length, Struct
from state.scales import PPM, RATE_SCALE, SIZE_SCALE, div_trunc
from state.schema import _U64


@dataclass(frozen=True, slots=True)
class Account(Struct):
    """State value under ``acct/<address>``."""

    balance: U64
    """Settlement-asset units held (see docs/PROTOCOL.md for the scale)."""
    nonce: U64
    """Nonce the account's next transaction must carry."""


EMPTY = Account(0, 0)


SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,31}")


Symbol = Annotated[str, Length(1, 32)]


MODES = ("active", "post-only", "cancel-only", "paused")


MARKET = b"mkt/"


MARKET_STATE = b"mks/"


@dataclass(frozen=True, slots=True)
class Market(Struct):
    """A perpetual market's rules, fixed at genesis."""

    symbol: Symbol
    """Name, e.g. ``BTC-USD-PERP``: 1-32 of ``A-Z 0-9 . _ -``, first alphanumeric."""
    tick_size: U64
    """Prices are multiples of this (micro-USDC per whole base unit)."""
    step_size: U64
    """Sizes are multiples of this (10^-8 base units)."""
    initial_margin_ppm: U32
    """Initial margin fraction: opening needs this share of the notional as equity."""
    maintenance_margin_ppm: U32
    """Maintenance margin fraction: below this share of notional, an account is liquidated."""
    funding_interval_ms: U64
    """Funding is paid once per interval of block time."""
    max_funding_rate_ppb: U64
    """Clamp on the funding rate per interval (ppb of the oracle price)."""
    liquidation_penalty_ppm: U32
    """Share of a liquidated notional paid to the insurance fund."""
    maker_fee_ppm: U32
    """Fee on the resting side of a fill."""
    taker_fee_ppm: U32
    """Fee on the aggressing side of a fill."""
    oracle_max_age_ms: U64
    """An oracle price observed longer ago than this (against block time) is refused."""


@dataclass(frozen=True, slots=True)
class MarketState(Struct):
    """What changes block by block."""

    oracle_price: U64
    """Last accepted oracle price (micro-USDC per whole base unit)."""
    oracle_time: U64
    """Observation time of that price (ms); updates must be strictly later."""
    funding_index: I64
    """Cumulative funding index (pico-USDC per whole base unit); only ever moves by the
    clamped rate times the elapsed intervals."""
    funding_time: U64
    """Block time of the last funding interval boundary applied (ms)."""
    premium_sum_ppb: I64
    """Sum of the premium samples since the last funding payment."""
    premium_samples: U32
    """How many samples ``premium_sum_ppb`` holds."""
    open_interest_long: U64
    """Total size of long positions (10^-8 base units)."""
    open_interest_short: U64
    """Total size of short positions; always equal to the long side."""
    mode: Annotated[str, Length(1, 16)]
    """``active``, ``post-only``, ``cancel-only`` or ``paused``."""
    price_band_ppm: U32
    """In ``post-only`` mode, orders must be priced within this fraction of the oracle price
    (0: no band). Set by the operators' ``market_mode`` command."""
    liquidation_wait: U32
    """Oracle updates this market must still receive before liquidations resume in it (set
    on reopening after a rollback, so stale prices cannot liquidate anyone)."""


def market_key(symbol: str) -> bytes:
    return MARKET + symbol.encode()


def market_state_key(symbol: str) -> bytes:
    return MARKET_STATE + symbol.encode()


def check_market(m: Market) -> str | None:
    """What is wrong with a market's parameters, or None (used by genesis validation)."""
    if not SYMBOL_RE.fullmatch(m.symbol):
        return "symbol must be 1-32 of A-Z 0-9 . _ - starting with a letter or digit"
    if m.tick_size < 1 or m.step_size < 1:
        return "tick_size and step_size must be at least 1"
    if not 0 < m.maintenance_margin_ppm < m.initial_margin_ppm <= PPM:
        return "need 0 < maintenance_margin_ppm < initial_margin_ppm <= 1000000"
    if m.liquidation_penalty_ppm > m.maintenance_margin_ppm:
        return "liquidation_penalty_ppm may not exceed maintenance_margin_ppm"
    if m.funding_interval_ms < 1000:
        return "funding_interval_ms must be at least 1000"
    if m.max_funding_rate_ppb > RATE_SCALE:
        return "max_funding_rate_ppb may not exceed 1000000000 (100% per interval)"
    if m.maker_fee_ppm > PPM // 10 or m.taker_fee_ppm > PPM // 10:
        return "fees may not exceed 100000 ppm (10%)"
    if m.oracle_max_age_ms < 1000:
        return "oracle_max_age_ms must be at least 1000"
    return None


def initial_state(oracle_price: int, genesis_time_ms: int) -> MarketState:
    """A market's state at genesis: the genesis oracle price, index 0, no open interest."""
    return MarketState(
        oracle_price=oracle_price,
        oracle_time=genesis_time_ms,
        funding_index=0,
        funding_time=genesis_time_ms,
        premium_sum_ppb=0,
        premium_samples=0,
        open_interest_long=0,
        open_interest_short=0,
        mode="active",
        price_band_ppm=0,
        liquidation_wait=0,
    )


ORDER = b"ord/"


@dataclass(frozen=True, slots=True)
class Order(Struct):
    """An open order (resting limit order, or a take-profit/stop-loss waiting to trigger)."""

    owner: Bytes32
    id: U64
    """The nonce of the transaction that placed it: ``(owner, id)`` names the order."""
    market: Annotated[str, Length(1, 32)]
    side: Annotated[str, Length(3, 4)]
    """``buy`` or ``sell``."""
    kind: Annotated[str, Length(1, 16)]
    """``limit``, ``take_profit`` or ``stop_loss`` (market orders never rest)."""
    tif: Annotated[str, Length(1, 16)]
    price: U64
    """Limit price (for TP/SL: the worst price accepted once triggered)."""
    size: U64
    """Remaining size (10^-8 base units)."""
    orig_size: U64
    reduce_only: bool
    trigger_price: U64
    """For TP/SL: the oracle price that triggers it; 0 otherwise."""
    arrival: U64
    """Time priority: ``height * 2^20 + tx index`` of its placement on this chain."""

    def ref(self) -> bytes:
        """owner(32) + id(8): the suffix of its ``ord/`` key and of its index keys."""
        return self.owner + _U64.pack(self.id)


def order_key(owner: bytes, oid: int) -> bytes:
    return ORDER + owner + _U64.pack(oid)


@dataclass(frozen=True, slots=True)
class Position(Struct):
    """One account's position in one market."""

    size: I64
    """Signed size in 10^-8 base units: long > 0, short < 0."""
    cost: I64
    """Cost basis in micro-USDC, same sign as ``size`` (0 when flat): what opening the
    position's remaining part cost, net of the proportional parts already closed."""
    funding_index: I64
    """Funding index the position last settled at (pico-USDC per whole base unit)."""
    realized_pnl: I64
    """Cumulative realized trading PnL in micro-USDC (excluding fees and funding)."""

    def entry_price(self) -> int | None:
        """Average entry price for display, ``cost * 10^8 / size`` truncated; None when flat."""
        if self.size == 0:
            return None
        return div_trunc(self.cost * SIZE_SCALE, self.size)


FLAT = Position(0, 0, 0, 0)


POSITION = b"pos/"


POOL = b"pool/"


FEE_POOL = POOL + b"fees"


FUNDING_DUST = POOL + b"funding_dust"
"""Funding rounding remainders in 10^-14 micro-USDC; always below 10^14 (swept on)."""


BAD_DEBT = POOL + b"bad_debt"
"""Value the exchange owes and does not hold (micro-USDC): shortfalls of bankrupt accounts
the insurance fund could not pay, and losses of the fund's own positions beyond its balance.
Only ever grows; counted negatively by the guard."""


INSURANCE_ADDRESS = bytes(32)
"""The insurance fund is the account at this address (32 zero bytes). No private key
exists for it (it is not a valid ed25519 key), so it never signs anything: it receives
liquidation penalties, swept funding dust and transfers (donations), pays bankrupt accounts'
shortfalls, and is the counterparty that takes over liquidated positions."""


@dataclass(frozen=True, slots=True)
class Pool(Struct):
    """A balance held by the exchange itself (fees, funding dust)."""

    amount: U64


def position_key(owner: bytes, market: str) -> bytes:
    return POSITION + owner + b"/" + market.encode()
