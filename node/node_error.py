"""The node's own error: it cannot start or continue as configured (a failure, not a
rejection of anyone's input: chain/errors.py)."""

from __future__ import annotations

from chain.errors import Failure


class NodeError(Failure):
    """The node cannot start or continue; the message says what the operator should do."""

    reason = "node_failure"
