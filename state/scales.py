"""Fixed-point scales of the exchange, and the integer division helpers every rounding uses.

Consensus arithmetic is integer-only: every node must compute bit-identical results, so no
floats anywhere, and every division names its rounding direction. The scales:

=================  =====================================  ===================================
quantity           unit (Python ``int``)                  example
=================  =====================================  ===================================
collateral, fees   micro-USDC (``QUOTE_SCALE`` = 10^6)    3,000 USDC = 3_000_000_000
price              micro-USDC per ONE WHOLE base unit     BTC at 60,000 USD = 60_000_000_000
size               10^-8 base units (``SIZE_SCALE``),     0.5 BTC long = 50_000_000
                   signed: long > 0, short < 0
notional           micro-USDC = abs(size)*price/10^8      0.5 BTC at 60,000 = 30_000_000_000
fractions          parts per million (``PPM`` = 10^6)     5% initial margin = 50_000
funding rate       parts per billion (``RATE_SCALE`` =    0.01% per interval = 100_000
                   10^9) of the oracle price, per
                   funding interval, signed
funding index      pico-USDC per whole base unit          +6 USDC per BTC = 6_000_000_000_000
                   (micro-USDC per base * ``INDEX_SCALE``
                   = 10^6), signed, cumulative
funding payment    size * delta_index / 10^14             1 BTC long, +6e12 -> pays 6 USDC
                   (``FUNDING_DIVISOR`` = SIZE_SCALE *
                   INDEX_SCALE) micro-USDC
=================  =====================================  ===================================

Rounding (each rule is chosen so the protocol never creates money or calls an unsafe account
safe; the modules that apply them say why):

* trade notional ``abs(size)*price // SIZE_SCALE`` floors; both sides of a fill use the same
  value, so it is exactly conserved whichever way it rounds (state/exchange/positions.py);
* margin requirements and fees round UP (state/exchange/margin.py, state/exchange/positions.py);
* unrealized PnL rounds toward negative infinity (state/exchange/margin.py);
* funding index deltas and premium averages truncate toward zero (:func:`div_trunc`), so a
  positive and a negative rate of equal size move the index by equal amounts;
* funding payments floor: a payer pays the ceiling of what it owes, a receiver gets the floor,
  and the fraction left over is tracked as dust (state/exchange/funding.py).
"""

from __future__ import annotations

QUOTE_SCALE = 10**6
"""Micro-USDC per USDC: collateral, notional, fees, PnL and prices are in micro-USDC."""
SIZE_SCALE = 10**8
"""Size units per whole base unit (sizes are in 10^-8 base units)."""
PPM = 10**6
"""Parts per million: margin fractions, fees, liquidation penalty."""
RATE_SCALE = 10**9
"""Parts per billion: funding rates and premiums, per funding interval."""
INDEX_SCALE = 10**6
"""Funding index units per (micro-USDC per whole base unit): the index is in pico-USDC."""
FUNDING_DIVISOR = SIZE_SCALE * INDEX_SCALE
"""``size * index`` is in 10^-14 micro-USDC: divide by this for micro-USDC (10^14)."""
INDEX_DELTA_DIVISOR = RATE_SCALE // INDEX_SCALE
"""``rate_ppb * price // this`` is the index delta (= price * rate / 10^9 * 10^6; 1000)."""

assert FUNDING_DIVISOR == 10**14 and INDEX_DELTA_DIVISOR == 1000


def div_floor(a: int, b: int) -> int:
    """``a / b`` rounded toward negative infinity (Python's ``//``; here for explicitness)."""
    if b == 0:
        raise ZeroDivisionError("division by zero")
    return a // b


def div_ceil(a: int, b: int) -> int:
    """``a / b`` rounded toward positive infinity."""
    if b == 0:
        raise ZeroDivisionError("division by zero")
    return -((-a) // b)


def div_trunc(a: int, b: int) -> int:
    """``a / b`` rounded toward zero (as C, Go and Rust integer division do; ``//`` floors)."""
    if b == 0:
        raise ZeroDivisionError("division by zero")
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def sign(x: int) -> int:
    """-1, 0 or 1."""
    return (x > 0) - (x < 0)
