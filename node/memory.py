"""Bounding the node's native memory: glibc malloc arenas and heap trimming.

Under load the heap grows in C, not in Python objects: signature checks and block commits run
in worker threads, and glibc gives each thread its own malloc arena (up to 8 per core). Memory
freed after a flood stays split over those arenas and is not returned to the system, so the
resident set climbs with every flood although nothing is kept. Capping the arenas and trimming
the heap once the work is done keeps it flat (bench/memory.py, bench/RESULTS.md issue 11).
Elsewhere than glibc both are no-ops.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import time

log = logging.getLogger("appchain.memory")

M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter number for the arena cap (malloc.h)."""


def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (it has ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        for name in ("gnu_get_libc_version", "mallopt", "malloc_trim"):
            getattr(libc, name)
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc


_LIBC = _glibc()


def limit_arenas(n: int) -> bool:
    """Cap glibc's malloc arenas at ``n`` (0: leave glibc's default). Call it before worker
    threads start: arenas already made stay. True if the cap was set."""
    if n <= 0 or _LIBC is None:
        return False
    return bool(_LIBC.mallopt(M_ARENA_MAX, n))


def trim() -> bool:
    """Give the free memory at the top of every arena back to the system (and free pages
    inside them); True if glibc released any."""
    return _LIBC is not None and bool(_LIBC.malloc_trim(0))


class Trimmer:
    """Trims the heap at most every ``interval_s`` and only after work was noted (a
    transaction admitted or committed since the last trim): an idle node does nothing."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.enabled = interval_s > 0 and _LIBC is not None
        self._last = time.monotonic()
        self.trims = 0

    def due(self, work_seen: bool) -> bool:
        """Whether a trim should run now, given that work happened since the last one."""
        return self.enabled and work_seen and time.monotonic() - self._last >= self.interval_s

    def run(self) -> float:
        """Trim now (any thread); seconds it took."""
        t0 = time.monotonic()
        released = trim()
        self._last = time.monotonic()
        self.trims += 1
        took = self._last - t0
        log.debug("malloc_trim: released=%s in %.1f ms", released, took * 1000)
        return took
