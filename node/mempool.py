"""The mempool: checked transactions waiting for a block, in per-sender nonce order.

Admission rules, each with its own stable code (the JSON-RPC error code clients see):
the bytes decode canonically, are not too large, are for this chain, carry a valid signature,
are not already pending, and carry exactly the sender's next nonce (the committed nonce plus
the sender's pending count). Future nonces are refused rather than parked: a gap would block
the sender's queue and let anyone fill the pool with transactions that can never run.

Because every admitted transaction carries its sender's next nonce, arrival order is also
nonce order for each sender, so reaping in arrival order always yields an executable batch.

Spam (docs/PROTOCOL.md §8): a sender must be able to pay, as a minimum balance rather than a
fee. A sender with no account record in committed state is refused (a transaction of theirs
could never go in a block, state/accounts.py) unless a deposit or transfer to them is
pending, and one whose balance is below ``min_sender_balance`` is refused too (cancels
excepted). Fairness: a sender holds at most ``max_txs_per_sender`` pending transactions, and
a full mempool makes room for a sender under its share by evicting the newest transaction of
the sender holding the most. Genesis keys (faucet, oracles, operators) need no account and
have no per-sender cap.

Not thread-safe: the node calls it only from its trio thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from enum import IntEnum
from itertools import islice

from chain.block import MAX_BLOCK_BYTES
from chain.errors import ChainError, DecodeError, InvalidSignature, InvalidTransaction
from chain.tx import (
    CancelAll,
    CancelOrder,
    Deposit,
    OperatorCall,
    OraclePrice,
    Transaction,
    Transfer,
    decode_tx,
)
from state.params import ChainParams
from state.records import Account
from state.schema import account_key
from state.store import Store


class RejectCode(IntEnum):
    """Why a transaction was not admitted; the number is the JSON-RPC error code."""

    DECODE = 1001
    TOO_LARGE = 1002
    WRONG_CHAIN = 1003
    BAD_SIGNATURE = 1004
    DUPLICATE = 1005
    NONCE_TOO_LOW = 1006
    NONCE_GAP = 1007
    MEMPOOL_FULL = 1008
    INVALID_TX = 1009
    UNAUTHORIZED = 1010
    HALTED = 1011
    INTERNAL = 1012
    """The node failed while checking the transaction (a bug; it is logged)."""
    NO_ACCOUNT = 1013
    """The sender has no account record in committed state and none is pending."""
    LOW_BALANCE = 1014
    """The sender's committed balance is below ``mempool.min_sender_balance``."""
    SENDER_LIMIT = 1015
    """The sender already has ``mempool.max_txs_per_sender`` transactions pending."""


class MempoolReject(ChainError):
    """A transaction refused at admission, with its code and a readable reason."""

    def __init__(self, code: RejectCode, message: str) -> None:
        super().__init__(message, reason=code.name.lower())
        self.code = code


def precheck(raw: bytes, params: ChainParams, max_tx_bytes: int) -> Transaction:
    """Stateless admission checks (size, decode, chain, signature, payload, sender rights).

    Safe in any thread."""
    if len(raw) > max_tx_bytes:
        raise MempoolReject(RejectCode.TOO_LARGE,
                            f"transaction of {len(raw)} bytes exceeds {max_tx_bytes}")
    try:
        tx = decode_tx(raw)
    except DecodeError as e:
        raise MempoolReject(RejectCode.DECODE, f"cannot decode transaction: {e.message}") from e
    if tx.chain_id != params.chain_id:
        raise MempoolReject(
            RejectCode.WRONG_CHAIN,
            f"transaction is for chain {tx.chain_id!r}, this is {params.chain_id!r}",
        )
    try:
        tx.verify_signature()
    except InvalidSignature as e:
        raise MempoolReject(RejectCode.BAD_SIGNATURE, "signature does not verify") from e
    # Only a transaction its sender really signed gets told what else is wrong with it.
    try:
        tx.payload.check(tx.sender)
    except InvalidTransaction as e:
        raise MempoolReject(RejectCode.INVALID_TX, e.message) from e
    if isinstance(tx.payload, Deposit) and tx.sender != params.faucet:
        raise MempoolReject(RejectCode.UNAUTHORIZED, "only the faucet key may deposit")
    if isinstance(tx.payload, OraclePrice) and tx.sender not in params.oracles:
        raise MempoolReject(RejectCode.UNAUTHORIZED, "only genesis oracle keys may post prices")
    if isinstance(tx.payload, OperatorCall) and tx.sender not in params.operators:
        raise MempoolReject(RejectCode.UNAUTHORIZED,
                            "only genesis operator keys may send operator commands")
    return tx


def store_accounts(store: Store) -> Callable[[bytes], Account | None]:
    """Reads a sender's committed account record (None: no record) for :class:`Mempool`."""
    get = store.state_get

    def read(sender: bytes) -> Account | None:
        raw = get(account_key(sender))
        return None if raw is None else Account.decode(raw)

    return read


_FREE = (CancelOrder, CancelAll)
"""Payloads admitted below the minimum balance: a trader can always take orders down."""


class Mempool:
    """Pending transactions, deduplicated by hash and ordered by arrival."""

    def __init__(self, params: ChainParams, committed_account: Callable[[bytes], Account | None],
                 *, max_size: int = 100_000, max_tx_bytes: int = 65_536,
                 min_sender_balance: int = 1, max_txs_per_sender: int = 1_000) -> None:
        self.params = params
        self.max_size = max_size
        self.max_tx_bytes = max_tx_bytes
        self.min_sender_balance = min_sender_balance
        self.max_txs_per_sender = max_txs_per_sender
        self._committed_account = committed_account
        self._txs: dict[bytes, Transaction] = {}
        self._next_nonce: dict[bytes, int] = {}
        self._queues: dict[bytes, deque[Transaction]] = {}
        """Each sender's pending transactions, in nonce order."""
        self._by_count: dict[int, dict[bytes, None]] = {}
        """Senders by how many transactions they have pending (to find the largest)."""
        self._top = 0
        """The largest pending count of any sender (0: empty)."""
        self._credits: dict[bytes, int] = {}
        """How many pending deposits and transfers credit each address."""
        self.evicted = 0
        """Transactions evicted so far to make room for a sender under its share."""
        self._genesis = {params.faucet, *params.oracles, *params.operators}

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._txs

    def check(self, raw: bytes) -> Transaction:
        """Full admission of raw bytes: stateless checks, then :meth:`add`."""
        return self.add(precheck(raw, self.params, self.max_tx_bytes))

    def _first_nonce(self, tx: Transaction) -> int:
        """Admission of a sender with nothing pending: may they send (an account record, or
        a credit pending, or a genesis key; enough balance)? Their committed nonce."""
        sender = tx.sender
        acct = self._committed_account(sender)
        if sender in self._genesis:
            return 0 if acct is None else acct.nonce
        if acct is None:
            if sender in self._credits:
                return 0  # funded by a pending deposit or transfer, which runs first
            raise MempoolReject(RejectCode.NO_ACCOUNT,
                                "sender has no account: fund it first (a deposit or a "
                                "transfer to it)")
        if (acct.balance < self.min_sender_balance and sender not in self._credits
                and not isinstance(tx.payload, _FREE)):
            raise MempoolReject(RejectCode.LOW_BALANCE,
                                f"sender balance {acct.balance} is below the minimum "
                                f"{self.min_sender_balance} to send")
        return acct.nonce

    def add(self, tx: Transaction) -> Transaction:
        """Admit a transaction that passed :func:`precheck`; raises ``MempoolReject``."""
        h = tx.hash
        if h in self._txs:
            raise MempoolReject(RejectCode.DUPLICATE, "transaction is already in the mempool")
        sender = tx.sender
        expected = self._next_nonce.get(sender)
        if expected is None:
            expected = self._first_nonce(tx)
        if tx.nonce < expected:
            raise MempoolReject(
                RejectCode.NONCE_TOO_LOW,
                f"nonce {tx.nonce} already used or pending; next is {expected}",
            )
        if tx.nonce > expected:
            raise MempoolReject(
                RejectCode.NONCE_GAP, f"nonce {tx.nonce} leaves a gap; next is {expected}"
            )
        queue = self._queues.get(sender)
        count = 0 if queue is None else len(queue)
        if count >= self.max_txs_per_sender and sender not in self._genesis:
            raise MempoolReject(RejectCode.SENDER_LIMIT,
                                f"sender has {count} transactions pending (the limit)")
        if len(self._txs) >= self.max_size:
            if self._top <= count + 1:  # no one holds more than this sender would
                raise MempoolReject(RejectCode.MEMPOOL_FULL,
                                    f"mempool is full ({self.max_size} transactions)")
            self._evict_newest_of_largest()
        self._txs[h] = tx
        self._next_nonce[sender] = expected + 1
        if queue is None:
            queue = self._queues[sender] = deque()
        queue.append(tx)
        # inline _recount(sender, count, count + 1): this runs for every admission
        by = self._by_count
        if count:
            bucket = by[count]
            del bucket[sender]
            if not bucket:
                del by[count]
        count += 1
        into = by.get(count)
        if into is None:
            by[count] = {sender: None}
        else:
            into[sender] = None
        if count > self._top:
            self._top = count
        p = tx.payload
        if type(p) is Transfer or type(p) is Deposit:
            self._credits[p.to] = self._credits.get(p.to, 0) + 1
        return tx

    def _credit(self, tx: Transaction, delta: int) -> None:
        p = tx.payload
        if type(p) is Transfer or type(p) is Deposit:
            left = self._credits.get(p.to, 0) + delta
            if left > 0:
                self._credits[p.to] = left
            else:
                self._credits.pop(p.to, None)

    def _recount(self, sender: bytes, old: int, new: int) -> None:
        """Move ``sender`` from the senders with ``old`` pending to those with ``new``."""
        if old:
            bucket = self._by_count[old]
            del bucket[sender]
            if not bucket:
                del self._by_count[old]
        if new:
            self._by_count.setdefault(new, {})[sender] = None
            if new > self._top:
                self._top = new
        while self._top and self._top not in self._by_count:
            self._top -= 1

    def _evict_newest_of_largest(self) -> None:
        """Make room: drop the newest pending transaction of a sender holding the most (only
        the newest can go: the others' successors depend on their nonces)."""
        sender = next(iter(self._by_count[self._top]))
        queue = self._queues[sender]
        tx = queue.pop()
        del self._txs[tx.hash]
        self._next_nonce[sender] = tx.nonce
        self._recount(sender, len(queue) + 1, len(queue))
        self._credit(tx, -1)
        self.evicted += 1

    def get(self, tx_hash: bytes) -> Transaction | None:
        """The pending transaction with this hash, if any."""
        return self._txs.get(tx_hash)

    def reap(self, max_txs: int, max_bytes: int = MAX_BLOCK_BYTES - (1 << 20)) -> list[Transaction]:
        """The oldest pending transactions, at most ``max_txs`` of them and ``max_bytes`` in
        all (a block must stay decodable). They stay until :meth:`remove`."""
        out: list[Transaction] = []
        size = 0
        for tx in islice(self._txs.values(), max_txs):
            size += len(tx.raw) + 5  # bin32 header of each entry
            if size > max_bytes:
                break
            out.append(tx)
        return out

    def _forget_sender(self, sender: bytes) -> None:
        del self._queues[sender]
        del self._next_nonce[sender]

    def remove(self, txs: Iterable[Transaction]) -> None:
        """Forget transactions that were committed (or dropped)."""
        pool, queues, by, credits = self._txs, self._queues, self._by_count, self._credits
        for tx in txs:
            if pool.pop(tx.hash, None) is None:
                continue
            s = tx.sender
            queue = queues[s]
            if queue[0] is tx:
                queue.popleft()
            else:
                queue.remove(tx)
            left = len(queue)
            # inline _recount(s, left + 1, left): this runs for every committed transaction
            bucket = by[left + 1]
            del bucket[s]
            if not bucket:
                del by[left + 1]
                if self._top == left + 1:
                    self._top = left  # s itself now holds ``left`` (or no one holds any)
            if left:
                into = by.get(left)
                if into is None:
                    by[left] = {s: None}
                else:
                    into[s] = None
            else:
                del queues[s]
                del self._next_nonce[s]
            p = tx.payload
            if type(p) is Transfer or type(p) is Deposit:
                n = credits[p.to] - 1
                if n:
                    credits[p.to] = n
                else:
                    del credits[p.to]

    def evict(self, tx: Transaction) -> list[Transaction]:
        """Drop a transaction that cannot run, with every later one from its sender.

        The later ones depend on its nonce and could never run either; the sender's next
        expected nonce falls back to the committed one. Returns what was dropped.
        """
        if tx.hash not in self._txs:
            return []
        s = tx.sender
        queue = self._queues[s]
        before = len(queue)
        dropped = [t for t in queue if t.nonce >= tx.nonce]
        for t in dropped:
            del self._txs[t.hash]
            queue.remove(t)
            self._credit(t, -1)
        self._recount(s, before, len(queue))
        if queue:
            self._next_nonce[s] = tx.nonce
        else:
            self._forget_sender(s)
        return dropped

    def drain(self) -> list[Transaction]:
        """Empty the mempool; its transactions in arrival order (to re-admit later, e.g.
        after a rollback moved the committed nonces back)."""
        out = list(self._txs.values())
        self._txs.clear()
        self._next_nonce.clear()
        self._queues.clear()
        self._by_count.clear()
        self._credits.clear()
        self._top = 0
        return out

    def pending_nonce(self, sender: bytes) -> int | None:
        """The next nonce the mempool expects from ``sender``, if it holds any of theirs."""
        return self._next_nonce.get(sender)

    def pending_count(self, sender: bytes) -> int:
        """How many transactions ``sender`` has pending."""
        queue = self._queues.get(sender)
        return 0 if queue is None else len(queue)
