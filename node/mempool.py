"""The mempool: checked transactions waiting for a block, in per-sender nonce order.

Admission rules, each with its own stable code (the JSON-RPC error code clients see):
the bytes decode canonically, are not too large, are for this chain, carry a valid signature,
are not already pending, and carry exactly the sender's next nonce (the committed nonce plus
the sender's pending count). Future nonces are refused rather than parked: a gap would block
the sender's queue and let anyone fill the pool with transactions that can never run.

Because every admitted transaction carries its sender's next nonce, arrival order is also
nonce order for each sender, so reaping in arrival order always yields an executable batch.

Not thread-safe: the node calls it only from its trio thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import IntEnum
from itertools import islice

from chain.block import MAX_BLOCK_BYTES
from chain.errors import ChainError, DecodeError, InvalidSignature, InvalidTransaction
from chain.tx import Deposit, OperatorCall, OraclePrice, Transaction, decode_tx
from state.params import ChainParams


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


class Mempool:
    """Pending transactions, deduplicated by hash and ordered by arrival."""

    def __init__(self, params: ChainParams, committed_nonce: Callable[[bytes], int], *,
                 max_size: int = 100_000, max_tx_bytes: int = 65_536) -> None:
        self.params = params
        self.max_size = max_size
        self.max_tx_bytes = max_tx_bytes
        self._committed_nonce = committed_nonce
        self._txs: dict[bytes, Transaction] = {}
        self._next_nonce: dict[bytes, int] = {}
        self._pending: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._txs

    def check(self, raw: bytes) -> Transaction:
        """Full admission of raw bytes: stateless checks, then :meth:`add`."""
        return self.add(precheck(raw, self.params, self.max_tx_bytes))

    def add(self, tx: Transaction) -> Transaction:
        """Admit a transaction that passed :func:`precheck`; raises ``MempoolReject``."""
        h = tx.hash
        if h in self._txs:
            raise MempoolReject(RejectCode.DUPLICATE, "transaction is already in the mempool")
        sender = tx.sender
        expected = self._next_nonce.get(sender)
        if expected is None:
            expected = self._committed_nonce(sender)
        if tx.nonce < expected:
            raise MempoolReject(
                RejectCode.NONCE_TOO_LOW,
                f"nonce {tx.nonce} already used or pending; next is {expected}",
            )
        if tx.nonce > expected:
            raise MempoolReject(
                RejectCode.NONCE_GAP, f"nonce {tx.nonce} leaves a gap; next is {expected}"
            )
        if len(self._txs) >= self.max_size:
            raise MempoolReject(RejectCode.MEMPOOL_FULL,
                                f"mempool is full ({self.max_size} transactions)")
        self._txs[h] = tx
        self._next_nonce[sender] = expected + 1
        self._pending[sender] = self._pending.get(sender, 0) + 1
        return tx

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

    def remove(self, txs: Iterable[Transaction]) -> None:
        """Forget transactions that were committed (or dropped)."""
        for tx in txs:
            if self._txs.pop(tx.hash, None) is None:
                continue
            s = tx.sender
            left = self._pending[s] - 1
            if left:
                self._pending[s] = left
            else:
                del self._pending[s]
                del self._next_nonce[s]

    def evict(self, tx: Transaction) -> list[Transaction]:
        """Drop a transaction that cannot run, with every later one from its sender.

        The later ones depend on its nonce and could never run either; the sender's next
        expected nonce falls back to the committed one. Returns what was dropped.
        """
        if tx.hash not in self._txs:
            return []
        dropped = [t for t in self._txs.values() if t.sender == tx.sender and
                   t.nonce >= tx.nonce]
        for t in dropped:
            del self._txs[t.hash]
        s = tx.sender
        left = self._pending[s] - len(dropped)
        if left:
            self._pending[s] = left
            self._next_nonce[s] = tx.nonce
        else:
            del self._pending[s]
            del self._next_nonce[s]
        return dropped

    def drain(self) -> list[Transaction]:
        """Empty the mempool; its transactions in arrival order (to re-admit later, e.g.
        after a rollback moved the committed nonces back)."""
        out = list(self._txs.values())
        self._txs.clear()
        self._next_nonce.clear()
        self._pending.clear()
        return out

    def pending_nonce(self, sender: bytes) -> int | None:
        """The next nonce the mempool expects from ``sender``, if it holds any of theirs."""
        return self._next_nonce.get(sender)
