"""Test-only crash injection: lets scenario tests SIGKILL the node at an exact step of a
long operation (tests/scenarios/test_recovery_crash.py). Inert unless the variable is set."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any


def test_kill_hook(var: str) -> Callable[[Any], None] | None:
    """With ``var=N`` in the environment, a hook that SIGKILLs this process on its N-th call
    (after the N-th step of the operation); None when unset."""
    n = int(os.environ.get(var, "0") or 0)
    if n <= 0:
        return None
    steps = [0]

    def hook(_: Any) -> None:
        steps[0] += 1
        if steps[0] >= n:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook
