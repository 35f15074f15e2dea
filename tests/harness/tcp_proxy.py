"""A fault-injecting TCP proxy, for testing what nodes do when the link between them fails.

Why: a follower's failure handling (reconnect with backoff, the 10 s liveness timeout, the
producer dropping a peer that went away) is only exercised by a link that fails the way
real links do, and killing or stopping processes does not produce those failures:

* a **reset** (a peer's host rebooted, a middlebox gave up): both ends get an error at once;
* a **blackhole** (a partition, a dead NAT entry, a cable pulled): nothing is refused, bytes
  just stop moving, and only a timeout tells;
* a **slow or lossy path**: latency, and the stalls by which TCP turns packet loss into
  retransmissions.

iptables and ``tc netem`` do these in the kernel but need root and the ``sch_netem`` module,
which a machine may not have; this proxy does them in user space on 127.0.0.1 (or any local
address), between a follower (``--follow <proxy address>``) and the producer's peer port.

Semantics, chosen to match TCP's own:

* :meth:`TcpProxy.cut` ``("reset")`` aborts every open connection with an RST on both sides
  (``SO_LINGER`` 0), and while cut accepts each new connection only to reset it at once (the
  listening port stays ours, so :meth:`TcpProxy.restore` needs no re-bind that another
  process could race for).
* ``cut("blackhole")`` freezes every open connection: nothing more is read or written on
  either side (bytes in flight wait, as segments that TCP keeps retransmitting do), and new
  connections are accepted but not connected onwards, so no byte flows on them either; an
  end that closes meanwhile is not seen closing by the other end until the restore. On
  :meth:`TcpProxy.restore` everything moves again, as after a partition that heals before
  TCP's retransmission timeout: an end that gave up meanwhile has closed its side, and the
  proxy then closes the other.
* ``delay_ms`` delivers each chunk (what one read returns, at most 64 KiB) that long after
  it was read, in order (a delay line, not a throughput cap); ``stall_prob`` makes a chunk
  "lost" with that probability and delivered ``stall_ms`` late, holding back everything
  after it, which is what a lost segment costs a TCP stream (a retransmission timeout, at
  least 200 ms on Linux). Bytes are never dropped or reordered: the stream stays valid, as
  TCP keeps it.

The proxy runs its own trio loop in a daemon thread, so that synchronous tests drive it;
every control method is thread-safe and returns once the change is in effect.
"""

from __future__ import annotations

import functools
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

import trio

CutMode = Literal["reset", "blackhole"]

CHUNK = 65536
"""Bytes read at most at once on one side of a connection."""

IN_FLIGHT = 64
"""Chunks one direction of a connection holds in its delay line before it stops reading
(so a slow reader pushes back on the writer, as a full TCP window does)."""

START_TIMEOUT_S = 10.0


@dataclass
class ProxyStats:
    """What went through the proxy (read from the test thread: plain counters)."""

    accepted: int = 0
    """Connections accepted (also those reset at once or held by a blackhole)."""
    resets: int = 0
    """Connections aborted with an RST (open ones at a cut, new ones while cut)."""
    upstream_failures: int = 0
    """Connections that could not be connected onwards (the upstream was down)."""
    bytes_up: int = 0
    """Client -> upstream, delivered."""
    bytes_down: int = 0
    """Upstream -> client, delivered."""
    accept_times: list[float] = field(default_factory=list)
    """``time.monotonic()`` of each accept."""


def _abort(stream: trio.SocketStream | None) -> None:
    """Close with an RST instead of a FIN."""
    if stream is None:
        return
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # already closed
    stream.socket.close()


class _Link:
    """One proxied connection: the accepted stream and, once connected, the upstream one."""

    def __init__(self, down: trio.SocketStream) -> None:
        self.down = down
        self.up: trio.SocketStream | None = None
        self.scope = trio.CancelScope()
        self.reset = False

    def abort(self) -> None:
        self.reset = True
        self.scope.cancel()  # the handler closes both sockets (with RST) as it unwinds


class TcpProxy:
    """Forwards every connection made to :attr:`address` to ``upstream`` (``HOST:PORT``),
    with the faults described in the module docstring. Use as a context manager, or call
    :meth:`start` and :meth:`close`."""

    def __init__(self, upstream: str, *, listen_host: str = "127.0.0.1", delay_ms: float = 0,
                 stall_prob: float = 0.0, stall_ms: float = 200, seed: int = 0) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host.strip("[]"), int(port))
        self.listen_host = listen_host
        self.delay_ms = delay_ms
        self.stall_prob = stall_prob
        self.stall_ms = stall_ms
        self.stats = ProxyStats()
        self.port = 0
        self._rng = random.Random(seed)
        self._mode: Literal["pass", "reset", "blackhole"] = "pass"
        self._flowing = trio.Event()
        self._flowing.set()
        self._links: set[_Link] = set()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- control (from any thread but the proxy's own) --------------------------------

    @property
    def address(self) -> str:
        """``HOST:PORT`` to give a follower as ``--follow``."""
        return f"{self.listen_host}:{self.port}"

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def open_connections(self) -> int:
        return len(self._links)

    def start(self) -> TcpProxy:
        ready = threading.Event()

        def main() -> None:
            try:
                trio.run(self._main, ready)
            except BaseException as e:  # noqa: BLE001 - re-raised by close()
                self._error = e
                ready.set()

        self._thread = threading.Thread(target=main, name=f"tcp-proxy->{self.upstream}",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S):
            raise TimeoutError("the proxy did not start")
        if self._error is not None:
            raise RuntimeError("the proxy failed to start") from self._error
        return self

    def cut(self, how: CutMode = "reset") -> None:
        """Break the link: ``"reset"`` or ``"blackhole"`` (module docstring)."""
        self._run(self._cut, how)

    def restore(self) -> None:
        """Let bytes flow again; new connections are forwarded."""
        self._run(self._restore)

    def set_faults(self, *, delay_ms: float | None = None, stall_prob: float | None = None,
                   stall_ms: float | None = None) -> None:
        """Change the latency and stall emulation (applies to chunks read from now on)."""

        def apply() -> None:
            if delay_ms is not None:
                self.delay_ms = delay_ms
            if stall_prob is not None:
                self.stall_prob = stall_prob
            if stall_ms is not None:
                self.stall_ms = stall_ms

        self._run(apply)

    def close(self) -> None:
        """Stop listening and close every connection; re-raises a crash of the proxy."""
        if self._thread is None:
            return
        if self._thread.is_alive() and self._token is not None:
            try:
                self._run(self._stop)
            except trio.RunFinishedError:
                pass
        self._thread.join(START_TIMEOUT_S)
        alive = self._thread.is_alive()
        self._thread = None
        if self._error is not None:
            raise RuntimeError("the proxy crashed") from self._error
        if alive:
            raise TimeoutError("the proxy did not stop")

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _run(self, fn: Callable[..., None], *args: object) -> None:
        if self._token is None:
            raise RuntimeError("the proxy is not running")
        trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    # -- the proxy's own thread -------------------------------------------------------

    def _cut(self, how: CutMode) -> None:
        if how not in ("reset", "blackhole"):
            raise ValueError(f"cut how={how!r}: 'reset' or 'blackhole'")
        if how == "blackhole":
            if self._flowing.is_set():
                self._flowing = trio.Event()
        else:
            for link in list(self._links):
                link.abort()
            self._flowing.set()  # (a reset after a blackhole: nothing is held any more)
        self._mode = how

    def _restore(self) -> None:
        self._mode = "pass"
        self._flowing.set()

    def _stop(self) -> None:
        assert self._scope is not None
        self._scope.cancel()

    async def _main(self, ready: threading.Event) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                serve = functools.partial(trio.serve_tcp, host=self.listen_host)
                listeners = await nursery.start(serve, self._handle, 0)
                self.port = listeners[0].socket.getsockname()[1]
                ready.set()

    async def _gate(self) -> None:
        """Wait while blackholed (the event is replaced by each blackhole)."""
        while not self._flowing.is_set():
            await self._flowing.wait()

    async def _handle(self, down: trio.SocketStream) -> None:
        self.stats.accepted += 1
        self.stats.accept_times.append(time.monotonic())
        if self._mode == "reset":
            self.stats.resets += 1
            _abort(down)
            return
        link = _Link(down)
        self._links.add(link)
        try:
            with link.scope:
                await self._gate()  # a blackholed connection is not connected onwards yet
                try:
                    link.up = await trio.open_tcp_stream(*self.upstream)
                except OSError:
                    self.stats.upstream_failures += 1
                    link.reset = True
                    return
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._direction, link.down, link.up, True,
                                       nursery.cancel_scope)
                    nursery.start_soon(self._direction, link.up, link.down, False,
                                       nursery.cancel_scope)
        finally:
            self._links.discard(link)
            if link.reset:
                self.stats.resets += 1
                _abort(link.down)
                _abort(link.up)
            else:
                link.down.socket.close()
                if link.up is not None:
                    link.up.socket.close()

    async def _direction(self, src: trio.SocketStream, dst: trio.SocketStream, up: bool,
                         link_scope: trio.CancelScope) -> None:
        """One direction of a link: a reader feeding a delay line, a writer draining it.
        The link ends (both sides closed) when either direction is done."""
        send, receive = trio.open_memory_channel[tuple[float, bytes]](IN_FLIGHT)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, src, send, link_scope)
                nursery.start_soon(self._write, dst, receive, up)
        finally:
            link_scope.cancel()

    async def _read(self, src: trio.SocketStream,
                    send: trio.MemorySendChannel[tuple[float, bytes]],
                    link_scope: trio.CancelScope) -> None:
        last_due = 0.0
        async with send:  # closed at EOF: the writer delivers what is left, then ends
            while True:
                await self._gate()
                try:
                    data: bytes | None = await src.receive_some(CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    data = None
                # What arrives as a blackhole starts (bytes, a close, a reset) waits for the
                # restore like the rest: the other end must not learn anything meanwhile.
                await self._gate()
                if data is None:
                    link_scope.cancel()
                    return
                if not data:
                    return
                due = trio.current_time() + self.delay_ms / 1000
                if self.stall_prob and self._rng.random() < self.stall_prob:
                    due += self.stall_ms / 1000
                last_due = max(due, last_due)  # a stalled chunk holds back the later ones
                await send.send((last_due, data))

    async def _write(self, dst: trio.SocketStream,
                     receive: trio.MemoryReceiveChannel[tuple[float, bytes]], up: bool) -> None:
        async with receive:
            async for due, data in receive:
                await trio.sleep_until(due)
                await self._gate()
                try:
                    await dst.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
