"""Prometheus metrics, one registry per node (so tests can run several nodes in a process)."""

from __future__ import annotations

from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class NodeMetrics:
    """What an operator graphs: height, block interval, mempool size, transactions per second."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.height = Gauge("appchain_height", "Height of the last committed block",
                            registry=self.registry)
        self.era = Gauge("appchain_era", "Recovery era of the head", registry=self.registry)
        self.mempool_size = Gauge("appchain_mempool_size", "Pending transactions",
                                  registry=self.registry)
        self.block_interval = Histogram(
            "appchain_block_interval_seconds", "Wall time between consecutive commits",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=self.registry)
        self.block_txs = Histogram(
            "appchain_block_txs", "Transactions per block",
            buckets=(0, 1, 10, 100, 1000, 5000, 10000, 50000), registry=self.registry)
        self.txs_total = Counter("appchain_txs_committed", "Transactions committed",
                                 registry=self.registry)
        self.tx_rejected = Counter("appchain_mempool_rejected", "Transactions refused",
                                   ["reason"], registry=self.registry)
        self.tps = Gauge("appchain_tx_per_second",
                         "Committed transactions per second over the last 10 blocks",
                         registry=self.registry)
        self.commit_seconds = Histogram(
            "appchain_block_commit_seconds", "Time to apply and commit one block",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5), registry=self.registry)
        self.liquidations = Counter("appchain_liquidations", "Accounts liquidated",
                                    registry=self.registry)
        self.funding_payments = Counter("appchain_funding_payments",
                                        "Funding payments applied (one per market and payment)",
                                        registry=self.registry)
        self.admin_unauthenticated = Counter(
            "appchain_admin_unauthenticated_refused",
            "Admin envelopes refused before a threshold of operators signed them (not audited "
            "one by one; rate_limited: not read)", ["reason"], registry=self.registry)
        self._window: deque[tuple[float, int]] = deque(maxlen=11)
        self._last_commit: float | None = None

    def block_committed(self, now: float, height: int, era: int, n_txs: int,
                        commit_seconds: float) -> None:
        self.height.set(height)
        self.era.set(era)
        self.txs_total.inc(n_txs)
        self.block_txs.observe(n_txs)
        self.commit_seconds.observe(commit_seconds)
        if self._last_commit is not None:
            self.block_interval.observe(now - self._last_commit)
        self._last_commit = now
        self._window.append((now, n_txs))
        if len(self._window) >= 2:
            span = self._window[-1][0] - self._window[0][0]
            txs = sum(n for _, n in list(self._window)[1:])
            self.tps.set(txs / span if span > 0 else 0.0)

    def block_events(self, types: list[str]) -> None:
        """Count the block's own events (end-of-block steps) an operator graphs."""
        self.liquidations.inc(types.count("liquidation_settled"))
        self.funding_payments.inc(types.count("funding"))

    def render(self) -> bytes:
        return generate_latest(self.registry)
