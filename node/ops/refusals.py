"""Unauthenticated admin refusals: counted, rate-limited per peer, summarised in the audit log.

An envelope refused before a threshold of genesis operators has signed it (it does not decode,
names another chain, carries no, unknown, bad or too few signatures) proves nothing about who
sent it, so writing each one to the audit log, synced, with its arguments, let anyone who
reaches the admin port grow the store and the journal without bound (1,000 unsigned envelopes
took the store from 46 KB to 25.6 MB). Instead they are counted in a metric, answered, and
written to the audit log as ONE summary entry per interval (the first refusal after a quiet
interval at once, so an attack shows in the log when it starts). A peer that keeps sending
them is answered ``rate_limited`` after one signature check instead of all of them, until its
allowance refills; an envelope whose first signature is a genesis operator's still goes
through, so a sender sharing the operators' address (anyone on the host, for the loopback
default) cannot lock the operators out.

Refusals of envelopes that the operators did sign (``expired``, ``replayed``, a command's own
refusal) stay one audit entry each: those are the operators' own actions.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chain.admin import AdminEnvelope
from chain.crypto import is_valid_signature
from chain.errors import DecodeError

log = logging.getLogger("appchain.admin")


UNAUTHENTICATED = frozenset({"malformed", "wrong_chain", "unsigned", "unknown_key",
                             "bad_signature", "under_threshold"})
"""Refusal reasons of envelopes no threshold of operators has signed (docs/PROTOCOL.md §12.2)."""


RATE_LIMITED = "rate_limited"


MAX_PEERS = 4096
"""Peers whose allowance is tracked at once; the least recently seen are forgotten first."""


def vouched(raw: bytes, operators: frozenset[bytes]) -> bool:
    """The envelope decodes and its first signature is a genesis operator's, valid: the one
    check a rate-limited peer's envelope gets before it is refused unread."""
    try:
        env = AdminEnvelope.decode(raw)
    except DecodeError:
        return False
    if not env.signatures:
        return False
    first = env.signatures[0]
    return first.key in operators and is_valid_signature(first.key, first.sig,
                                                         env.command.signed_bytes())


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class _Window:
    """Refusals since the last summary entry."""

    since_ms: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    peers: Counter[str] = field(default_factory=Counter)

    def total(self) -> int:
        return sum(self.reasons.values())


class RefusalLimiter:
    """Per-peer token buckets for unauthenticated refusals, and the summary of the current
    interval. Owned by the trio thread (the admin service); not thread-safe."""

    def __init__(self, burst: int, per_second: int, summary_interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.per_second = per_second
        self.summary_interval_s = summary_interval_s
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._window = _Window()
        self._last_summary: float | None = None

    def allowed(self, peer: str) -> bool:
        """Whether ``peer`` may have another envelope checked now (a refusal spends one unit
        of its allowance, :meth:`refused`; an accepted command spends nothing)."""
        b = self._bucket(peer)
        return b.tokens >= 1

    def refused(self, peer: str, reason: str, now_ms: int) -> bool:
        """Count one unauthenticated refusal (or a ``rate_limited`` answer) of ``peer``;
        True if it is the first of its interval for this peer (worth a log line)."""
        if reason != RATE_LIMITED:
            b = self._bucket(peer)
            b.tokens = max(0.0, b.tokens - 1)
        w = self._window
        if not w.reasons:
            w.since_ms = now_ms
        first = w.peers[peer] == 0
        w.reasons[reason] += 1
        w.peers[peer] += 1
        return first

    def summary_due(self) -> bool:
        """A summary entry is due: refusals are pending and the interval since the last
        summary has passed (or there was none yet)."""
        if not self._window.reasons:
            return False
        return (self._last_summary is None
                or self._clock() - self._last_summary >= self.summary_interval_s)

    def take_summary(self, now_ms: int) -> dict[str, Any] | None:
        """The audit entry of the refusals pending (and start a new interval), or None."""
        w = self._window
        if not w.reasons:
            return None
        self._window = _Window()
        self._last_summary = self._clock()
        n = w.total()
        reasons = ", ".join(f"{r} {c}" for r, c in sorted(w.reasons.items()))
        top = sorted(w.peers.items(), key=lambda pc: (-pc[1], pc[0]))[:10]
        peers = ", ".join(f"{p} ({c})" for p, c in top)
        more = f" and {len(w.peers) - len(top)} more" if len(w.peers) > len(top) else ""
        return {"time_ms": now_ms, "command": "", "args": {}, "operators": [],
                "claimed_keys": [], "nonce": "", "outcome": "refused",
                "reason": "unauthenticated", "count": n, "since_ms": w.since_ms,
                "reasons": dict(sorted(w.reasons.items())),
                "message": f"{n} unauthenticated envelope(s) refused since {w.since_ms}: "
                           f"{reasons}; from {peers}{more}"}

    def _bucket(self, peer: str) -> _Bucket:
        now = self._clock()
        b = self._buckets.get(peer)
        if b is None:
            b = _Bucket(float(self.burst), now)
            self._buckets[peer] = b
            while len(self._buckets) > MAX_PEERS:
                self._buckets.popitem(last=False)
        else:
            b.tokens = min(float(self.burst), b.tokens + (now - b.at) * self.per_second)
            b.at = now
            self._buckets.move_to_end(peer)
        return b
