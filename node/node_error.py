"""The node's own error: it cannot start or continue as configured (a failure, not a
rejection of anyone's input: chain/errors.py)."""

from __future__ import annotations

from chain.errors import Failure


class NodeError(Failure):
    """The node cannot start or continue; the message says what the operator should do."""

    reason = "node_failure"


def unwrap_group(eg: BaseExceptionGroup, kind: type[Exception]) -> BaseException:
    """The first ``kind`` inside a (nested) task-group error, else the group itself: an
    expected failure inside a trio nursery is one ``Error:`` line at the CLI, not a
    traceback of task groups."""
    group = eg.subgroup(kind)
    if group is None:
        return eg
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found
