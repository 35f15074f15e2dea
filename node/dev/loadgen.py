"""A load generator: signed transactions from funded accounts at a target rate, over RPC.

Transactions go out as JSON-RPC batches of ``broadcast_tx_sync`` from a single task, so each
sender's nonces reach the node in order. A refusal for a nonce reason makes the generator ask
the node for that sender's next nonce before using it again.

With markets (``market_payloads``) the traders quote, take, cancel single orders by id (an
order's id is the nonce that placed it, so the trader knows it without asking the node),
cancel all, and place take-profit / stop-loss orders; a good share of these fail on chain
(post-only orders that would cross, cancels of orders already filled, stops with no position
to protect), as real flow does. Recovery and replay are tested against this mix.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from chain.crypto import PrivateKey
from chain.tx import (
    CancelAll,
    CancelOrder,
    Deposit,
    OraclePrice,
    Payload,
    PlaceOrder,
    Transfer,
    Withdraw,
    make_tx,
)
from node.client.rpc_client import AsyncRPCClient, RPCCallError
from node.wire_json import b64

BATCH = 100


TICK_S = 0.1


@dataclass
class LoadStats:
    sent: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


class TransferLoad:
    """Drives ``tps`` transfers per second among ``keys`` until cancelled."""

    def __init__(self, client: AsyncRPCClient, chain_id: str, keys: list[PrivateKey],
                 tps: int, seed: int = 1,
                 payloads: Callable[[random.Random, PrivateKey, int], Payload] | None = None
                 ) -> None:
        if len(keys) < 2:
            raise ValueError("the load generator needs at least two funded accounts")
        self.client = client
        self.chain_id = chain_id
        self.keys = keys
        self.tps = tps
        self.stats = LoadStats()
        self._rng = random.Random(seed)
        self._nonce: dict[bytes, int] = {}
        self._stale: set[bytes] = set()
        self._next = 0
        self._payloads = payloads

    async def _sync_nonce(self, key: PrivateKey) -> None:
        acct = await self.client.call("account", address=key.public_key.hex())
        self._nonce[key.public_key] = int(acct["next_nonce"])

    async def sync_all(self) -> None:
        for k in self.keys:
            await self._sync_nonce(k)

    def _make_batch(self, n: int) -> list[tuple[bytes, str]]:
        out: list[tuple[bytes, str]] = []
        for _ in range(n):
            k = self.keys[self._next % len(self.keys)]
            self._next += 1
            if k.public_key in self._stale:
                continue
            nonce = self._nonce[k.public_key]
            if self._payloads is not None:
                payload = self._payloads(self._rng, k, nonce)
            else:
                to = self.keys[self._rng.randrange(len(self.keys))].public_key
                if to == k.public_key:
                    to = self.keys[(self._next) % len(self.keys)].public_key
                payload = Transfer(to, self._rng.randint(1, 1000))
            t = make_tx(k, self.chain_id, nonce, payload)
            self._nonce[k.public_key] = nonce + 1
            out.append((k.public_key, b64(t.raw)))
        return out

    async def send(self, n: int) -> None:
        """Sign and send ``n`` transfers now (in batches)."""
        while n > 0:
            batch = self._make_batch(min(n, BATCH))
            n -= BATCH
            if not batch:
                continue
            answers = await self.client.call_batch(
                [("broadcast_tx_sync", {"tx": raw}) for _, raw in batch])
            self.stats.sent += len(batch)
            for (sender, _), ans in zip(batch, answers, strict=True):
                if isinstance(ans, RPCCallError):
                    reason = (ans.data or {}).get("reason", str(ans.code)) \
                        if isinstance(ans.data, dict) else str(ans.code)
                    self.stats.rejected[reason] += 1
                    self._stale.add(sender)
                else:
                    self.stats.accepted += 1
        for k in self.keys:
            if k.public_key in self._stale:
                await self._sync_nonce(k)
                self._stale.discard(k.public_key)

    async def run(self) -> None:
        """Send at ``tps`` until cancelled; never builds a backlog above one second."""
        await self.sync_all()
        if self.tps <= 0:
            await trio.sleep_forever()
        start = trio.current_time()
        budget_sent = 0
        while True:
            now = trio.current_time()
            due = int((now - start) * self.tps) - budget_sent
            if due > self.tps:  # falling behind: drop the excess instead of bursting
                budget_sent += due - self.tps
                due = self.tps
            if due > 0:
                await self.send(due)
                budget_sent += due
            await trio.sleep(TICK_S)


class OracleFeed:
    """Posts a price per market every ``period_s``: a random walk of about ±0.2% per step,
    with an occasional sharp move (±5%, one step in ``sharp_every``), so a devnet sees real
    price action (and its leveraged traders get liquidated)."""

    def __init__(self, client: AsyncRPCClient, chain_id: str, key: PrivateKey,
                 markets: list[tuple[str, int, int, int]], period_s: float = 1.0,
                 seed: int = 7, sharp_every: int = 50) -> None:
        self.client = client
        self.chain_id = chain_id
        self.key = key
        self.prices = {sym: price for sym, price, _, _ in markets}
        self.ticks = {sym: tick for sym, _, tick, _ in markets}
        self.steps = {sym: step for sym, _, _, step in markets}
        self.period_s = period_s
        self.sharp_every = sharp_every
        self.posted = 0
        self._rng = random.Random(seed)

    def _step(self, symbol: str) -> int:
        price = self.prices[symbol]
        sharp = self._rng.randrange(self.sharp_every) == 0
        bp = self._rng.randint(-500, 500) if sharp else self._rng.randint(-20, 20)
        tick = self.ticks[symbol]
        new = max(tick, (price + price * bp // 10_000) // tick * tick)
        self.prices[symbol] = new
        return new

    async def run(self) -> None:

        acct = await self.client.call("account", address=self.key.public_key.hex())
        nonce = int(acct["next_nonce"])
        while True:
            now_ms = time.time_ns() // 1_000_000
            calls = []
            for symbol in sorted(self.prices):
                t = make_tx(self.key, self.chain_id, nonce,
                            OraclePrice(symbol, self._step(symbol), now_ms))
                nonce += 1
                calls.append(("broadcast_tx_sync", {"tx": b64(t.raw)}))
            answers = await self.client.call_batch(calls)
            if any(isinstance(a, RPCCallError) for a in answers):
                acct = await self.client.call("account", address=self.key.public_key.hex())
                nonce = int(acct["next_nonce"])
            else:
                self.posted += len(calls)
            await trio.sleep(self.period_s)


RECENT_QUOTES = 8
"""Quotes per trader remembered for single cancels (older ones are left to fill or rest)."""


def market_payloads(feed: OracleFeed) -> Callable[[random.Random, PrivateKey, int], Payload]:
    """Trader behaviour for a devnet: quotes around the oracle price (some post-only ones
    cross and fail), market orders that take them, cancels of a trader's own recent quotes
    by id (some already filled: they fail), take-profit / stop-loss orders (those with no
    position opposite them fail), and cancel-alls. Sizes are small so margin rarely binds.
    ``make(rng, key, nonce)`` is called with the nonce the payload will be signed with."""
    symbols = sorted(feed.prices)
    steps = dict(feed.steps)
    quotes: dict[bytes, list[tuple[str, int]]] = {}  # trader -> recent (market, order id)

    def make(rng: random.Random, key: PrivateKey, nonce: int) -> Payload:
        symbol = symbols[rng.randrange(len(symbols))]
        tick = feed.ticks[symbol]
        oracle = feed.prices[symbol]
        size = steps[symbol] * rng.randint(1, 20)
        side = rng.choice(("buy", "sell"))
        roll = rng.randrange(100)
        mine = quotes.setdefault(key.public_key, [])
        if roll < 50:  # a quote within 0.3% of the oracle, on its side of the book
            off = oracle * rng.randint(1, 30) // 10_000
            if roll < 3:
                off = -off  # on the wrong side: a post-only one fails, a gtc one takes
            price = oracle - off if side == "buy" else oracle + off
            tif = "post_only" if roll < 22 else "gtc"
            mine.append((symbol, nonce))  # its id, known before the block
            del mine[:-RECENT_QUOTES]
            return PlaceOrder(symbol, side, "limit", tif, max(tick, price // tick * tick),
                              size, False, 0)
        if roll < 78:  # take liquidity, at most 1% away
            off = oracle // 100
            worst = oracle + off if side == "buy" else max(tick, oracle - off)
            return PlaceOrder(symbol, side, "market", "ioc", max(tick, worst // tick * tick),
                              size, False, 0)
        if roll < 87 and mine:  # cancel one of its recent quotes, by id
            m, oid = mine.pop(rng.randrange(len(mine)))
            return CancelOrder(m, oid)
        if roll < 96:  # a take-profit or stop-loss 0.2%..2% away (reduce-only)
            kind = rng.choice(("take_profit", "stop_loss"))
            off = oracle * rng.randint(20, 200) // 10_000
            # a sell take-profit sits above, a sell stop-loss below (mirrored for buys)
            above = (side == "sell") == (kind == "take_profit")
            trigger = max(tick, (oracle + off if above else oracle - off) // tick * tick)
            worst = trigger + trigger // 100 if side == "buy" else trigger - trigger // 100
            return PlaceOrder(symbol, side, kind, "ioc", max(tick, worst // tick * tick),
                              size, True, trigger)
        return CancelAll(symbol)

    return make


class MarketMaker:
    """One well-funded account that keeps a deep book around each oracle price, as the
    market makers of a real perp exchange do: every ``period_s`` it cancels its quotes in
    each market and posts ``levels`` bids and asks, ``spread_bp`` basis points apart, each
    worth about ``notional`` micro-USDC. Without it the random traders' small quotes are the
    only liquidity, and leveraged traders could never build their positions."""

    def __init__(self, client: AsyncRPCClient, chain_id: str, key: PrivateKey,
                 feed: OracleFeed, levels: int = 3, spread_bp: int = 10,
                 notional: int = 25_000 * 10**6, period_s: float = 1.0) -> None:
        self.client = client
        self.chain_id = chain_id
        self.key = key
        self.feed = feed
        self.levels = levels
        self.spread_bp = spread_bp
        self.notional = notional
        self.period_s = period_s
        self.sent = 0

    def quotes(self, symbol: str) -> list[Payload]:
        """Cancel-all then the ladder, best level first, for one market."""
        oracle = self.feed.prices[symbol]
        tick, step = self.feed.ticks[symbol], self.feed.steps[symbol]
        size = max(step, self.notional * 10**8 // oracle // step * step)
        out: list[Payload] = [CancelAll(symbol)]
        for i in range(1, self.levels + 1):
            off = oracle * self.spread_bp * i // 10_000
            out.append(PlaceOrder(symbol, "buy", "limit", "gtc",
                                  max(tick, (oracle - off) // tick * tick), size, False, 0))
            out.append(PlaceOrder(symbol, "sell", "limit", "gtc",
                                  (oracle + off + tick - 1) // tick * tick, size, False, 0))
        return out

    async def run(self) -> None:
        acct = await self.client.call("account", address=self.key.public_key.hex())
        nonce = int(acct["next_nonce"])
        while True:
            calls = []
            for symbol in sorted(self.feed.prices):
                for payload in self.quotes(symbol):
                    t = make_tx(self.key, self.chain_id, nonce, payload)
                    nonce += 1
                    calls.append(("broadcast_tx_sync", {"tx": b64(t.raw)}))
            try:
                answers = await self.client.call_batch(calls)
            except RPCCallError:
                answers = [RPCCallError(0, "batch refused")]
            if any(isinstance(a, RPCCallError) for a in answers):
                acct = await self.client.call("account", address=self.key.public_key.hex())
                nonce = int(acct["next_nonce"])
            else:
                self.sent += len(calls)
            await trio.sleep(self.period_s)


class LeveragedTraders:
    """A few traders who run high leverage, so that a devnet's price moves liquidate someone.

    Each round (``step``), per trader: an account holding much more than ``stake`` first
    withdraws the excess (devnet accounts start rich, and a liquidation needs leverage); a
    flat account left with under half its stake (after a liquidation) is topped up by a
    faucet deposit; otherwise it adds to its position (long or short, chosen once per trader)
    with a market order until its notional is about ``leverage`` times its equity. Orders the
    node refuses (margin, liquidity) are simply tried again next round.
    """

    def __init__(self, client: AsyncRPCClient, chain_id: str, keys: list[PrivateKey],
                 faucet: PrivateKey | None, market: str, step_size: int, tick_size: int,
                 stake: int = 2_000 * 10**6, leverage: int = 15, seed: int = 3) -> None:
        self.client = client
        self.chain_id = chain_id
        self.keys = keys
        self.faucet = faucet
        self.market = market
        self.step_size = step_size
        self.tick_size = tick_size
        self.stake = stake
        self.leverage = leverage
        rng = random.Random(seed)
        self.long = {k.public_key: rng.random() < 0.5 for k in keys}
        self.sent: Counter[str] = Counter()

    async def _send(self, key: PrivateKey, payload: Payload) -> None:
        acct = await self.client.call("account", address=key.public_key.hex())
        t = make_tx(key, self.chain_id, int(acct["next_nonce"]), payload)
        try:
            await self.client.call("broadcast_tx_sync", tx=b64(t.raw))
            self.sent[type(payload).__name__] += 1
        except RPCCallError:
            self.sent["refused"] += 1

    async def step(self) -> None:

        m = await self.client.call("market", symbol=self.market)
        oracle = int(m["state"]["oracle_price"])
        for k in self.keys:
            acct = await self.client.call("account", address=k.public_key.hex())
            collateral, equity = int(acct["collateral"]), int(acct["equity"])
            pos = next((p for p in acct["positions"] if p["market"] == self.market), None)
            size = int(pos["size"]) if pos else 0
            if collateral > 3 * self.stake and size == 0:
                await self._send(k, Withdraw(collateral - self.stake))
            elif size == 0 and collateral < self.stake // 2:
                if self.faucet is not None:
                    await self._send(self.faucet, Deposit(k.public_key, self.stake))
            else:
                target = equity * self.leverage * 10**8 // oracle  # size at the target notional
                add = (target - abs(size)) // self.step_size * self.step_size
                if add <= 0:
                    continue
                long = self.long[k.public_key]
                worst = oracle + oracle // 100 if long else oracle - oracle // 100
                await self._send(k, PlaceOrder(self.market, "buy" if long else "sell",
                                               "market", "ioc",
                                               worst // self.tick_size * self.tick_size,
                                               add, False, 0))

    async def run(self, period_s: float = 1.0) -> None:
        while True:
            try:
                await self.step()
            except RPCCallError:
                pass  # e.g. the node restarting: next round
            await trio.sleep(period_s)
