"""End-of-block funding: sample the premium, and at each funding interval move the index.

Per market, each block whose book has both a best bid and a best ask adds one premium sample
``(mid − oracle) / oracle`` in ppb (state/exchange/funding.py). When the block time reaches
``funding_time + funding_interval``, the rate is the average of the samples since the last
payment, clamped to ``± max_funding_rate_ppb``; the index moves by ONE interval's worth of
that rate at the current oracle price, ``funding_time`` advances by the whole intervals
elapsed, and the samples restart. After a halt, the intervals without samples pay nothing:
the index never jumps (the incident this project answers was an index reset to zero).
Positions settle lazily against the index, on their next fill or liquidation.
"""

from __future__ import annotations

from dataclasses import replace

from chain.block import Attr, Event
from state.context import TxContext
from state.exchange.book import best_orders
from state.exchange.funding import index_delta, premium_ppb, rate_from_premiums
from state.exchange.markets import get_market_state, put_market_state
from state.overlay import Overlay
from state.records import MARKET, Market

I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def _mid(view: Overlay, symbol: str) -> int | None:
    bid = next(best_orders(view, symbol, "buy"), None)
    ask = next(best_orders(view, symbol, "sell"), None)
    if bid is None or ask is None:
        return None
    return (bid.price + ask.price) // 2


def process_funding(view: Overlay, ctx: TxContext) -> list[Event]:
    events: list[Event] = []
    for key in list(view.iter_ordered(MARKET)):
        m = view.get_obj(key, Market)
        st = get_market_state(view, m.symbol) if m else None
        if m is None or st is None:
            continue
        new = st
        mid = _mid(view, m.symbol)
        if mid is not None:
            new = replace(new, premium_sum_ppb=new.premium_sum_ppb +
                          premium_ppb(mid, new.oracle_price),
                          premium_samples=new.premium_samples + 1)
        due = ctx.time - new.funding_time
        if due >= m.funding_interval_ms:
            intervals = due // m.funding_interval_ms
            rate = rate_from_premiums(new.premium_sum_ppb, new.premium_samples,
                                      m.max_funding_rate_ppb)
            index = new.funding_index + index_delta(rate, new.oracle_price)
            index = min(max(index, I64_MIN), I64_MAX)
            new = replace(new, funding_index=index,
                          funding_time=new.funding_time + intervals * m.funding_interval_ms,
                          premium_sum_ppb=0, premium_samples=0)
            events.append(Event("funding", (
                Attr("index", str(index)), Attr("intervals", str(intervals)),
                Attr("market", m.symbol), Attr("rate_ppb", str(rate)),
                Attr("samples", str(st.premium_samples + (mid is not None))))))
        if new != st:
            put_market_state(view, m.symbol, new)
    return events
