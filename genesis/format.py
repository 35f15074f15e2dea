"""The genesis file: JSON, with field names after CometBFT's genesis.json where they match.

Top level: ``chain_id``, ``genesis_time`` (RFC 3339, UTC), ``initial_height`` (decimal string
or integer), and ``app_state`` with the application's own data: the producer, faucet,
operator and oracle keys, initial accounts and (later) markets. Keys are lowercase hex of the
32-byte ed25519 public key; amounts are decimal strings (or integers) in base units.

Validation names the offending field by its JSON path (``app_state.accounts[3].balance``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from chain.codec import CHAIN_ID_MAX, encode
from chain.crypto import sha256
from chain.errors import InvalidGenesis
from state.records import SYMBOL_RE, Market, check_market

U64_MAX = 2**64 - 1
CHAIN_ID_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]*")
# RFC 3339 date-time (upper-case T/Z, as datetime.fromisoformat wants); the zone is optional
# here only so that a missing zone gets its own, clearer message below.
RFC3339_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.(\d+))?(?:Z|[+-]\d{2}:\d{2})?", re.ASCII)
KNOWN_TOP = {"chain_id", "genesis_time", "initial_height", "app_state"}
KNOWN_APP = {"producer", "faucet", "operators", "oracles", "accounts", "markets"}


@dataclass(frozen=True)
class NamedKey:
    """A public key with a human name (shown in logs and the audit trail)."""

    name: str
    pub_key: bytes


@dataclass(frozen=True)
class GenesisAccount:
    address: bytes
    balance: int


@dataclass(frozen=True)
class GenesisMarket:
    """A market's fixed parameters and its oracle price at genesis."""

    market: Market
    oracle_price: int


MARKET_U64 = ("tick_size", "step_size", "funding_interval_ms", "max_funding_rate_ppb",
              "oracle_max_age_ms")
MARKET_PPM = ("initial_margin_ppm", "maintenance_margin_ppm", "liquidation_penalty_ppm",
              "maker_fee_ppm", "taker_fee_ppm")
MARKET_FIELDS = {"symbol", "oracle_price", *MARKET_U64, *MARKET_PPM}


def market_json(gm: GenesisMarket) -> dict[str, Any]:
    m = gm.market
    doc: dict[str, Any] = {"symbol": m.symbol, "oracle_price": str(gm.oracle_price)}
    doc.update({f: str(getattr(m, f)) for f in MARKET_U64})
    doc.update({f: getattr(m, f) for f in MARKET_PPM})
    return doc


def _market(v: Any, field: str) -> GenesisMarket:
    if not isinstance(v, dict):
        raise InvalidGenesis(field, "must be an object (see docs/PROTOCOL.md, genesis markets)")
    extra = set(v) - MARKET_FIELDS
    if extra:
        raise InvalidGenesis(f"{field}.{sorted(extra)[0]}", "is not a known field")
    for name in sorted(MARKET_FIELDS):
        _need(v, name, field + ".")
    symbol = v["symbol"]
    if not isinstance(symbol, str) or not SYMBOL_RE.fullmatch(symbol):
        raise InvalidGenesis(f"{field}.symbol",
                             "must be 1-32 of A-Z 0-9 . _ - starting with a letter or digit")
    kwargs: dict[str, Any] = {f: _int(v[f], f"{field}.{f}") for f in MARKET_U64}
    kwargs.update({f: _int(v[f], f"{field}.{f}", 0, 2**32 - 1) for f in MARKET_PPM})
    market = Market(symbol=symbol, **kwargs)
    problem = check_market(market)
    if problem:
        raise InvalidGenesis(field, problem)
    price = _int(v["oracle_price"], f"{field}.oracle_price", 1)
    return GenesisMarket(market, price)


@dataclass(frozen=True)
class Genesis:
    """A validated genesis document."""

    chain_id: str
    genesis_time: str
    genesis_time_ms: int
    initial_height: int
    producer: NamedKey
    faucet: NamedKey
    operators: tuple[NamedKey, ...]
    operator_threshold: int
    oracles: tuple[NamedKey, ...]
    accounts: tuple[GenesisAccount, ...]
    markets: tuple[GenesisMarket, ...] = ()

    def to_json_obj(self) -> dict[str, Any]:
        """The normalised JSON document (what ``genesis new`` writes)."""

        def key(k: NamedKey) -> dict[str, str]:
            return {"name": k.name, "pub_key": k.pub_key.hex()}

        return {
            "chain_id": self.chain_id,
            "genesis_time": self.genesis_time,
            "initial_height": str(self.initial_height),
            "app_state": {
                "producer": key(self.producer),
                "faucet": key(self.faucet),
                "operators": {
                    "keys": [key(k) for k in self.operators],
                    "threshold": self.operator_threshold,
                },
                "oracles": [key(k) for k in self.oracles],
                "accounts": [
                    {"address": a.address.hex(), "balance": str(a.balance)}
                    for a in self.accounts
                ],
                "markets": [market_json(m) for m in self.markets],
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.to_json_obj(), indent=2) + "\n"

    @property
    def hash(self) -> bytes:
        """SHA-256 of the canonical msgpack of the normalised document.

        Whitespace and key order in the file do not change it; any value does.
        """
        return sha256(encode(self.to_json_obj()))


def _need(obj: dict[str, Any], name: str, path: str) -> Any:
    if name not in obj:
        raise InvalidGenesis(f"{path}{name}", "is required")
    return obj[name]


def _int(v: Any, field: str, lo: int = 0, hi: int = U64_MAX) -> int:
    if isinstance(v, bool):
        raise InvalidGenesis(field, "must be an integer, not a boolean")
    if isinstance(v, str):
        if not re.fullmatch(r"0|[1-9][0-9]*", v):
            raise InvalidGenesis(field, f"{v!r} is not a non-negative decimal integer")
        if len(v) > len(str(hi)):  # also keeps int() below its digit limit
            raise InvalidGenesis(field, f"{v[:24]}... is outside [{lo}, {hi}]")
        v = int(v)
    if not isinstance(v, int):
        raise InvalidGenesis(field, "must be an integer or a decimal string")
    if not lo <= v <= hi:
        raise InvalidGenesis(field, f"{v} is outside [{lo}, {hi}]")
    return v


def _key(v: Any, field: str) -> bytes:
    if not isinstance(v, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", v):
        raise InvalidGenesis(field, "must be 64 hex characters (a 32-byte ed25519 public key)")
    return bytes.fromhex(v)


def _named_key(v: Any, field: str) -> NamedKey:
    if not isinstance(v, dict):
        raise InvalidGenesis(field, 'must be an object {"name": ..., "pub_key": ...}')
    name = v.get("name", "")
    if not isinstance(name, str) or len(name) > 64:
        raise InvalidGenesis(f"{field}.name", "must be a string of at most 64 characters")
    extra = set(v) - {"name", "pub_key"}
    if extra:
        raise InvalidGenesis(f"{field}.{sorted(extra)[0]}", "is not a known field")
    return NamedKey(name, _key(v.get("pub_key"), f"{field}.pub_key"))


def _key_list(v: Any, field: str) -> tuple[NamedKey, ...]:
    if not isinstance(v, list):
        raise InvalidGenesis(field, "must be a list")
    keys = tuple(_named_key(x, f"{field}[{i}]") for i, x in enumerate(v))
    seen: set[bytes] = set()
    for i, k in enumerate(keys):
        if k.pub_key in seen:
            raise InvalidGenesis(f"{field}[{i}].pub_key", "is listed twice")
        seen.add(k.pub_key)
    if len(keys) > 64:
        raise InvalidGenesis(field, "has more than 64 keys")
    return keys


def parse_time(v: Any, field: str = "genesis_time") -> tuple[str, int]:
    """RFC 3339 time with a zone -> (its normalised spelling, milliseconds since the epoch)."""
    if not isinstance(v, str):
        raise InvalidGenesis(field, "must be an RFC 3339 string such as 2026-01-01T00:00:00Z")
    m = RFC3339_RE.fullmatch(v)
    try:
        if m is None:
            raise ValueError(v)
        t = datetime.fromisoformat(v)
    except ValueError as e:
        raise InvalidGenesis(field, f"{v!r} is not an RFC 3339 time") from e
    if t.tzinfo is None:
        raise InvalidGenesis(field, "must carry a time zone (use a trailing Z for UTC)")
    # fromisoformat silently drops digits beyond microseconds: check the text itself.
    if (m.group(1) or "")[3:].strip("0"):
        raise InvalidGenesis(field, "must not be more precise than milliseconds")
    # Exact integer arithmetic: datetime.timestamp() is a float.
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    delta = t - epoch
    ms = (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if ms <= 0:
        raise InvalidGenesis(field, "must be after 1970-01-01")
    if ms > MAX_TIME_MS:
        raise InvalidGenesis(field, "must be before 10000-01-01T00:00:00Z")
    return format_time_ms(ms), ms


MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant RFC 3339 spells


def format_time_ms(ms: int) -> str:
    """The one RFC 3339 spelling used in normalised genesis documents (UTC, milliseconds):
    two spellings of the same instant must not give two genesis hashes."""
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_genesis(doc: Any) -> Genesis:
    """Validate a parsed JSON document; raise ``InvalidGenesis`` naming the bad field."""
    if not isinstance(doc, dict):
        raise InvalidGenesis("(top level)", "must be a JSON object")
    extra = set(doc) - KNOWN_TOP
    if extra:
        raise InvalidGenesis(sorted(extra)[0], "is not a known field")
    chain_id = _need(doc, "chain_id", "")
    if not isinstance(chain_id, str) or not CHAIN_ID_RE.fullmatch(chain_id) or not (
        1 <= len(chain_id) <= CHAIN_ID_MAX
    ):
        raise InvalidGenesis(
            "chain_id",
            f"must be 1-{CHAIN_ID_MAX} characters of letters, digits, '.', '_' or '-'",
        )
    gtime, gms = parse_time(_need(doc, "genesis_time", ""))
    initial_height = _int(doc.get("initial_height", "1"), "initial_height", 1, 2**62)
    app = _need(doc, "app_state", "")
    if not isinstance(app, dict):
        raise InvalidGenesis("app_state", "must be an object")
    extra = set(app) - KNOWN_APP
    if extra:
        raise InvalidGenesis(f"app_state.{sorted(extra)[0]}", "is not a known field")
    producer = _named_key(_need(app, "producer", "app_state."), "app_state.producer")
    faucet = _named_key(_need(app, "faucet", "app_state."), "app_state.faucet")
    ops = _need(app, "operators", "app_state.")
    if not isinstance(ops, dict):
        raise InvalidGenesis("app_state.operators", 'must be {"keys": [...], "threshold": N}')
    extra = set(ops) - {"keys", "threshold"}
    if extra:
        raise InvalidGenesis(f"app_state.operators.{sorted(extra)[0]}", "is not a known field")
    operators = _key_list(_need(ops, "keys", "app_state.operators."), "app_state.operators.keys")
    if not operators:
        raise InvalidGenesis("app_state.operators.keys", "must name at least one operator")
    threshold = _int(
        _need(ops, "threshold", "app_state.operators."), "app_state.operators.threshold",
        1, len(operators),
    )
    oracles = _key_list(app.get("oracles", []), "app_state.oracles")
    accounts_doc = app.get("accounts", [])
    if not isinstance(accounts_doc, list):
        raise InvalidGenesis("app_state.accounts", "must be a list")
    accounts: list[GenesisAccount] = []
    seen: set[bytes] = set()
    for i, a in enumerate(accounts_doc):
        f = f"app_state.accounts[{i}]"
        if not isinstance(a, dict):
            raise InvalidGenesis(f, 'must be an object {"address": ..., "balance": ...}')
        extra = set(a) - {"address", "balance"}
        if extra:
            raise InvalidGenesis(f"{f}.{sorted(extra)[0]}", "is not a known field")
        addr = _key(a.get("address"), f"{f}.address")
        if addr in seen:
            raise InvalidGenesis(f"{f}.address", "is listed twice")
        seen.add(addr)
        accounts.append(GenesisAccount(addr, _int(_need(a, "balance", f + "."), f"{f}.balance")))
    markets_doc = app.get("markets", [])
    if not isinstance(markets_doc, list):
        raise InvalidGenesis("app_state.markets", "must be a list")
    markets = tuple(_market(m, f"app_state.markets[{i}]") for i, m in enumerate(markets_doc))
    symbols: set[str] = set()
    for i, gm in enumerate(markets):
        if gm.market.symbol in symbols:
            raise InvalidGenesis(f"app_state.markets[{i}].symbol", "is listed twice")
        symbols.add(gm.market.symbol)
    return Genesis(
        chain_id=chain_id,
        genesis_time=gtime,
        genesis_time_ms=gms,
        initial_height=initial_height,
        producer=producer,
        faucet=faucet,
        operators=operators,
        operator_threshold=threshold,
        oracles=oracles,
        accounts=tuple(accounts),
        markets=markets,
    )


def load_genesis(path: str | Path) -> Genesis:
    """Read and validate a genesis file; errors name the file and the field."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidGenesis("(file)", f"cannot read {p}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise InvalidGenesis("(file)", f"{p} is not UTF-8 text: {e}") from e
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, over-long int, deep nesting
        raise InvalidGenesis("(file)", f"{p} is not valid JSON: {e}") from e
    return parse_genesis(doc)
