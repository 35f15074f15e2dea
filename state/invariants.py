"""Guards: invariants every block must keep, checked on what the block changed, before commit.

A block that breaks one is not committed: ``check_block`` raises :class:`InvariantViolation`
(an ``InvalidBlock``) with the evidence, and a producer halts itself instead of signing it. The
checks cost O(keys the block changed), never a scan of the state:

* **conservation**: collateral (the insurance fund's included: it is an account), minus
  position cost bases, plus the fee pool, minus bad debt, plus funding owed but not yet
  settled, plus funding dust, changes only by the block's deposits and withdrawals. In units
  of 10^-14 micro-USDC (``D = 10^14``)::

      D·(ΔΣbalance − ΔΣcost + Δfees − Δbad_debt) + Δdust + ΔΣ(size·funding_index)
          == D·(deposited − withdrawn)

  where the sums run over the changed keys only. ``Σ size·funding_index`` over a market's
  positions is the funding owed and not yet settled (sizes sum to zero), so settling moves
  value between it and collateral, never creates any;
* **open interest**: in every changed market, long open interest equals short;
* **funding index**: between two states of a market, the index moves by at most the clamped
  maximum rate times the funding intervals that elapsed (at the higher of the two oracle
  prices); with no interval elapsed it does not move at all. A jump to zero is outside this;
* **positions have markets**: no position is written for a market that does not exist.
"""

from __future__ import annotations

from typing import Any

from chain.codec import Struct
from chain.errors import InvalidBlock
from state.exchange.funding import max_index_move
from state.overlay import Overlay
from state.records import (
    BAD_DEBT,
    FEE_POOL,
    FLAT,
    FUNDING_DUST,
    MARKET_STATE,
    POSITION,
    Account,
    Market,
    MarketState,
    Pool,
    Position,
    market_key,
)
from state.scales import FUNDING_DIVISOR
from state.schema import ACCOUNT


class InvariantViolation(InvalidBlock):
    """A block that would break a guard. ``check`` names the guard; ``evidence`` holds the
    values that show it (JSON-ready: integers as decimal strings, bytes as hex)."""

    reason = "invariant"

    def __init__(self, check: str, message: str, evidence: dict[str, Any]) -> None:
        super().__init__(f"invariant {check} violated: {message}", reason="invariant")
        self.check = check
        self.evidence = evidence


class StoredStateMismatch(InvariantViolation):
    """A value the block read from the store is not what the committed state tree holds for
    that key: something wrote into the store outside the blocks (the seed incident: a
    maintenance step reset funding indices to zero). The block is refused before anything
    builds on the value; the producer halts naming the keys. This is a failure of the
    node's own storage, not of any transaction."""

    def __init__(self, keys: list[tuple[bytes, bytes | None, bytes | None]]) -> None:
        first = keys[0][0]
        super().__init__(
            "stored_state",
            f"the stored value of {printable_key(first)} differs from the committed state "
            f"tree ({len(keys)} key(s); written outside a block?)",
            {"keys": [{"key": k.hex(), "key_text": printable_key(k),
                       "tree_value_hash": None if t is None else t.hex(),
                       "stored_value_hash": None if p is None else p.hex()}
                      for k, t, p in keys[:20]],
             "count": str(len(keys))})
        self.keys = [k for k, _, _ in keys]


def printable_key(key: bytes) -> str:
    """A state key for people, by its layout (docs/PROTOCOL.md §5.1): the ASCII prefix, then
    addresses as 64 hex digits and order ids as decimal (``acct/<hex>``,
    ``pos/<hex>/BTC-USD-PERP``, ``ord/<hex>/7``, ``mks/BTC-USD-PERP``); a key of no known
    layout as its ASCII prefix up to the first ``/`` and the rest in hex."""
    slash = key.find(b"/")
    if slash < 0:
        return key.hex()
    head, rest = key[:slash + 1], key[slash + 1:]
    try:
        prefix = head.decode("ascii")
    except UnicodeDecodeError:
        return key.hex()
    if prefix in _ADDRESSED and len(rest) >= 32:
        addr, tail = rest[:32].hex(), rest[32:]
        if not tail:
            return prefix + addr
        if len(tail) == 8 and prefix in ("ord/", "aord/"):
            return f"{prefix}{addr}/{int.from_bytes(tail, 'big')}"
        if tail[:1] == b"/" and tail[1:].isascii():
            return f"{prefix}{addr}/{tail[1:].decode()}"
        return f"{prefix}{addr}/{tail.hex()}"
    if rest.isascii() and all(0x20 <= b < 0x7F for b in rest):
        return prefix + rest.decode()
    return prefix + rest.hex()


_ADDRESSED = ("acct/", "pos/", "ord/", "aord/", "lqa/")
"""State key prefixes followed by a 32-byte address."""


def _decode(raw: bytes | None, cls: type[Struct], default: Any) -> Any:
    return default if raw is None else cls.decode(raw)


def check_block(view: Overlay, deposited: int, withdrawn: int) -> None:
    """Raise :class:`InvariantViolation` if the block's changes break a guard."""
    changes = view.changes()
    priors = view.priors
    d_balance = d_cost = d_pools = d_dust = d_si = 0
    for key, new_raw in changes:
        old_raw = priors.get(key)
        if key.startswith(ACCOUNT):  # typed reads reuse the block's decoded values
            new_a = view.get_obj(key, Account)
            old_a = view.prior_obj(key, Account)
            d_balance += ((new_a.balance if new_a else 0) - (old_a.balance if old_a else 0))
        elif key.startswith(POSITION):
            new = view.get_obj(key, Position) or FLAT
            old = view.prior_obj(key, Position) or FLAT
            d_cost += new.cost - old.cost
            d_si += new.size * new.funding_index - old.size * old.funding_index
            if new_raw is not None:
                symbol = key[len(POSITION) + 33:].decode()
                if view.get(market_key(symbol)) is None:
                    raise InvariantViolation("position_without_market",
                                             f"position in unknown market {symbol!r}",
                                             {"key": key.hex(), "market": symbol})
        elif key == FEE_POOL:
            d_pools += (_decode(new_raw, Pool, Pool(0)).amount
                        - _decode(old_raw, Pool, Pool(0)).amount)
        elif key == BAD_DEBT:
            d_pools -= (_decode(new_raw, Pool, Pool(0)).amount
                        - _decode(old_raw, Pool, Pool(0)).amount)
        elif key == FUNDING_DUST:
            d_dust += (_decode(new_raw, Pool, Pool(0)).amount
                       - _decode(old_raw, Pool, Pool(0)).amount)
        elif key.startswith(MARKET_STATE):
            _check_market(view, key, old_raw, new_raw)
    lhs = FUNDING_DIVISOR * (d_balance - d_cost + d_pools) + d_dust + d_si
    rhs = FUNDING_DIVISOR * (deposited - withdrawn)
    if lhs != rhs:
        raise InvariantViolation(
            "conservation", "value appeared or vanished",
            {"collateral_change": str(d_balance), "cost_change": str(d_cost),
             "pool_change": str(d_pools), "dust_change": str(d_dust),
             "unsettled_funding_change": str(d_si), "deposited": str(deposited),
             "withdrawn": str(withdrawn), "imbalance_scaled": str(lhs - rhs)})


def _check_market(view: Overlay, key: bytes, old_raw: bytes | None,
                  new_raw: bytes | None) -> None:
    symbol = key[len(MARKET_STATE):].decode()
    if new_raw is None:
        raise InvariantViolation("market_deleted", f"market state of {symbol} removed",
                                 {"market": symbol})
    new = MarketState.decode(new_raw)
    if new.open_interest_long != new.open_interest_short:
        raise InvariantViolation(
            "open_interest", f"{symbol}: long {new.open_interest_long} != short "
            f"{new.open_interest_short}",
            {"market": symbol, "long": str(new.open_interest_long),
             "short": str(new.open_interest_short)})
    if old_raw is None:
        return
    old = MarketState.decode(old_raw)
    m = view.get_obj(market_key(symbol), Market)
    if m is None:
        raise InvariantViolation("market_missing", f"no parameters for {symbol}",
                                 {"market": symbol})
    if new.funding_time < old.funding_time:
        raise InvariantViolation("funding_time", f"{symbol}: funding time went backwards",
                                 {"market": symbol, "before": str(old.funding_time),
                                  "after": str(new.funding_time)})
    intervals = (new.funding_time - old.funding_time) // m.funding_interval_ms
    # One interval's worth per payment is what the chain applies; allowing every elapsed
    # interval is the looser bound a guard can check without the samples.
    bound = max_index_move(m.max_funding_rate_ppb, max(old.oracle_price, new.oracle_price),
                           intervals)
    if abs(new.funding_index - old.funding_index) > bound:
        raise InvariantViolation(
            "funding_index", f"{symbol}: funding index moved from {old.funding_index} to "
            f"{new.funding_index}, more than the clamped rate allows ({bound})",
            {"market": symbol, "before": str(old.funding_index),
             "after": str(new.funding_index), "max_move": str(bound),
             "intervals": str(intervals)})
