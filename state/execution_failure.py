"""The one way a transaction handler says "this transaction fails": code and log."""

from __future__ import annotations

from chain.codes import ResultCode


class ExecutionFailure(Exception):
    """Raised inside a handler: the transaction fails with ``code`` and ``log``; its writes
    are reverted, its nonce stays consumed."""

    def __init__(self, code: ResultCode, log: str) -> None:
        super().__init__(log)
        self.code = code
        self.log = log
