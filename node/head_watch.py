"""Waking trio tasks when the chain head moves or the halt changes.

Block commits (and imports on a follower) run in worker threads, so the head's watchers are
plain callbacks; :class:`HeadWatch` turns them into an event trio tasks can wait on (the peer
server's push, a follower's forwarded ``broadcast_tx_commit`` waiting for its own copy of
the block, the exit-on-divergence watch).
"""

from __future__ import annotations

from collections.abc import Callable

import trio


class HeadWatch:
    """``poke`` may be called from any thread; ``wait`` returns at the next poke (or the
    timeout). Made inside ``trio.run`` (it keeps the run's token)."""

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._event = trio.Event()

    def poke(self) -> None:
        try:
            self._token.run_sync_soon(self._set)
        except trio.RunFinishedError:
            pass  # the node is stopping; nobody is waiting any more

    def _set(self) -> None:
        ev, self._event = self._event, trio.Event()
        ev.set()

    async def wait(self, timeout_s: float) -> None:
        with trio.move_on_after(timeout_s):
            await self._event.wait()

    async def until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``done()`` holds (checked at each poke), at most ``timeout_s``."""
        with trio.move_on_after(timeout_s):
            while not done():
                await self._event.wait()
            return True
        return done()
