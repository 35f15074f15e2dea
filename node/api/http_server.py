"""A small HTTP/1.1 server on trio and ``h11``, for the public RPC and the operator endpoint.

Why our own: the node must bound what any client can hold. Every connection counts against a
cap (over it, a short 503 answer and an immediate close, so the excess holds no descriptor);
the request head and the body each have a total deadline (a body trickled a byte at a time is
cut off); an idle keep-alive connection is closed after a short wait; and the body limit is
enforced while the body streams in (the rest is never buffered). ``h11`` does the HTTP/1.1
parsing and framing (keep-alive, chunked bodies, ``Expect: 100-continue``); it does no I/O.

A client that goes away mid-body or mid-response costs one log line, never a traceback.
"""

from __future__ import annotations

import errno
import json
import logging
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import parse_qsl, unquote

import h11
import trio

from node.node_error import NodeError

log = logging.getLogger("appchain.http")

MAX_HEAD_BYTES = 16 * 1024
"""A request line plus headers larger than this is answered 431 (h11's own bound)."""
RECEIVE_BYTES = 64 * 1024
DRAIN_MAX_BYTES = 16 * 1024 * 1024
DRAIN_SECONDS = 2.0
"""After an early answer (413), up to four times the body limit (at most 16 MiB) of the
unread body is read and discarded (never kept), for at most 2 s, before the close, so a
client that writes all before it reads still sees the answer instead of a connection reset;
past it the connection is simply closed."""
REFUSE_SECONDS = 0.05
MAX_REFUSING = 32
"""Connections being refused at once (each holds its descriptor a few milliseconds); past
this the excess is closed without an answer."""
RESERVED_FDS = 96
"""Descriptors kept for the node itself: standard streams, listeners, trio's own, the
producer's file writes, LevelDB's log/lock/manifest/WAL, and the refusals in flight."""
ACCEPT_RETRY_SECONDS = 0.1

BUSY = -32001
"""JSON-RPC error code of the 503 answer: the server is at its connection cap."""
TIMEOUT = -32002
"""JSON-RPC error code of the 408 answer: the request head or body did not arrive in time."""
INVALID_REQUEST = -32600


class ListenError(NodeError):
    """A server cannot bind its address (taken, not local, not permitted)."""


async def open_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Bind ``host:port`` (any server of the node); a refusal is one :class:`ListenError`
    naming the address (taken, not local, not permitted)."""
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as e:
        reason = "address already in use" if e.errno == errno.EADDRINUSE else (
            (e.strerror or str(e)).lower())
        raise ListenError(f"cannot listen on {host}:{port}: {reason}") from None


@dataclass(frozen=True)
class HTTPLimits:
    """What one client may hold: a connection slot, and time for each part of a request."""

    max_connections: int
    header_timeout_s: float
    body_timeout_s: float
    idle_timeout_s: float
    max_body_bytes: int


@dataclass(frozen=True)
class HTTPRequest:
    """A complete request: ``path`` is percent-decoded, ``query`` the parsed query string,
    ``peer`` the client's address (no port: what per-client limits count by)."""

    method: str
    path: str
    query: dict[str, str]
    body: bytes
    peer: str


@dataclass(frozen=True)
class HTTPResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[HTTPRequest], Awaitable[HTTPResponse]]


def json_body(doc: Any) -> bytes:
    """ASCII-only JSON: an echoed id may hold a lone surrogate, which UTF-8 cannot encode."""
    return json.dumps(doc, ensure_ascii=True, allow_nan=False,
                      separators=(",", ":")).encode("ascii")


def error_response(status: int, code: int, message: str,
                   headers: tuple[tuple[str, str], ...] = ()) -> HTTPResponse:
    """A JSON-RPC error object with ``id`` null, as the body of an HTTP-level refusal."""
    return HTTPResponse(status, json_body({"jsonrpc": "2.0", "id": None,
                                           "error": {"code": code, "message": message}}),
                        headers=headers)


def descriptor_budget(store_files: int) -> tuple[int, int]:
    """(soft RLIMIT_NOFILE, descriptors left for connections after the store and the node)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return soft, soft - store_files - RESERVED_FDS


def raw_response(resp: HTTPResponse) -> bytes:
    """``resp`` as bytes with ``connection: close``, for answers outside h11's exchange (a
    refused connection, a request whose head never completed)."""
    head = (f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Error')}\r\n"
            f"content-type: {resp.content_type}\r\ncontent-length: {len(resp.body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode("ascii") + resp.body


REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class _Closed(Exception):
    """The exchange is over (an answer was sent or the client left): close the connection."""


@dataclass
class HTTPServer:
    """Serves ``handler`` under ``limits``; ``name`` (rpc, admin) labels logs and metrics."""

    name: str
    handler: Handler
    limits: HTTPLimits
    on_refused: Callable[[str], None] = lambda reason: None
    active: int = 0
    refusing: int = 0
    _accept_failing: bool = field(default=False, repr=False)

    async def serve(self, host: str, port: int, *,
                    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; reports ``http://host:port`` once bound."""
        listeners = await open_listeners(host, port)
        bound = listeners[0].socket.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)
            task_status.started(f"http://{shown}:{bound}")

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as e:  # out of descriptors or buffers: wait, never crash
                    if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS,
                                       errno.ENOMEM):
                        raise
                    if not self._accept_failing:
                        log.warning("%s: cannot accept connections: %s; retrying",
                                    self.name, e.strerror)
                        self._accept_failing = True
                    self.on_refused("descriptors")
                    await trio.sleep(ACCEPT_RETRY_SECONDS)
                    continue
                if self._accept_failing:
                    log.info("%s: accepting connections again", self.name)
                    self._accept_failing = False
                if self.active >= self.limits.max_connections:
                    self.on_refused("max_connections")
                    if self.refusing >= MAX_REFUSING:
                        stream.socket.close()
                    else:
                        nursery.start_soon(self._refuse, stream)
                    continue
                self.active += 1
                nursery.start_soon(self._serve_connection, stream)

    async def _refuse(self, stream: trio.SocketStream) -> None:
        """Answer 503 at once and close, holding the descriptor for milliseconds only."""
        self.refusing += 1
        try:
            resp = error_response(503, BUSY, f"server busy: {self.limits.max_connections} "
                                  "connections open, try again later")
            with trio.move_on_after(REFUSE_SECONDS):
                await stream.send_all(raw_response(resp))
                # Read what the client already sent, so the close is a FIN and not a reset
                # that could discard the answer before the client reads it.
                await stream.receive_some(RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self.refusing -= 1
            stream.socket.close()

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
            host, client = str(peer[0]), f"{peer[0]}:{peer[1]}"
        except OSError:
            host = client = "unknown"
        try:
            await _Connection(self, stream, client, host).run()
        except _Closed:
            pass
        except Exception:  # a bug here must not take the server (or the node) down
            log.exception("%s: error serving %s", self.name, client)
        finally:
            self.active -= 1
            stream.socket.close()


class _Connection:
    """One client connection: requests in turn (keep-alive), each within the limits."""

    def __init__(self, server: HTTPServer, stream: trio.SocketStream, client: str,
                 host: str) -> None:
        self.server, self.stream, self.client, self.host = server, stream, client, host
        self.limits = server.limits
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)

    async def run(self) -> None:
        first = True
        while True:
            req = await self._read_head(self.limits.header_timeout_s if first
                                        else self.limits.idle_timeout_s)
            first = False
            if req is None:
                return
            body = await self._read_body(req)
            target = req.target.decode("ascii", "replace")
            path, _, query = target.partition("?")
            request = HTTPRequest(req.method.decode("ascii", "replace"), unquote(path),
                                  dict(parse_qsl(query, keep_blank_values=True)), body,
                                  self.host)
            try:
                resp = await self.server.handler(request)
            except Exception:
                log.exception("%s: internal error answering %s", self.server.name, target)
                resp = error_response(500, -32603, "internal error")
            await self._send(resp)
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return
            self.h11.start_next_cycle()

    async def _receive(self, deadline: float, phase: str, size: int = RECEIVE_BYTES) -> bool:
        """Feed h11 one chunk; False on the deadline."""
        with trio.move_on_at(deadline):
            try:
                data = await self.stream.receive_some(size)
            except (trio.BrokenResourceError, OSError) as e:
                self._gone(phase, e)
            self.h11.receive_data(data)
            return True
        return False

    def _gone(self, phase: str, err: BaseException | None = None) -> NoReturn:
        if phase != "idle":
            why = f": {err}" if err is not None else ""
            log.info("%s: client %s disconnected %s%s", self.server.name, self.client, phase,
                     why)
        raise _Closed

    async def _read_head(self, first_byte_s: float) -> h11.Request | None:
        """The next request's head, or None when the client closes or stays idle too long."""
        deadline = trio.current_time() + first_byte_s
        started = False
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as e:
                await self._answer_raw(error_response(
                    e.error_status_hint, INVALID_REQUEST, f"bad HTTP request: {e}"))
            if event is h11.NEED_DATA:
                if self.h11.their_state is h11.IDLE and not self._buffered():
                    phase = "idle"
                else:
                    phase = "mid-head"
                    if not started:
                        started = True
                        deadline = trio.current_time() + self.limits.header_timeout_s
                # At most MAX_HEAD_BYTES at a time, so h11 sees an oversized head (431)
                # before it holds more than twice that.
                if not await self._receive(deadline, phase, MAX_HEAD_BYTES):
                    if phase == "idle":
                        return None  # idle or silent: close without an answer
                    await self._answer_raw(error_response(
                        408, TIMEOUT, "request head not received in time"))
                continue
            if isinstance(event, h11.Request):
                return event
            if isinstance(event, h11.ConnectionClosed):
                return None
            raise _Closed  # nothing else can come before a request

    def _buffered(self) -> bool:
        return bool(self.h11.trailing_data[0])

    async def _read_body(self, req: h11.Request) -> bytes:
        limit = self.limits.max_body_bytes
        too_big = error_response(413, INVALID_REQUEST, f"request body exceeds {limit} bytes")
        declared = dict(req.headers).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse_early(too_big, drain=True)
        if self.h11.they_are_waiting_for_100_continue:
            await self._send_event(h11.InformationalResponse(status_code=100, headers=[]))
        deadline = trio.current_time() + self.limits.body_timeout_s
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:
                self._gone("mid-body")
            if event is h11.NEED_DATA:
                if not await self._receive(deadline, "mid-body"):
                    await self._refuse_early(error_response(
                        408, TIMEOUT, "request body not received in time"), drain=False)
                continue
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    await self._refuse_early(too_big, drain=True)
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                self._gone("mid-body")

    async def _answer_raw(self, resp: HTTPResponse) -> NoReturn:
        """Answer a request whose head is incomplete or malformed, then close."""
        with trio.move_on_after(REFUSE_SECONDS * 20):
            try:
                await self.stream.send_all(raw_response(resp))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        raise _Closed

    async def _refuse_early(self, resp: HTTPResponse, *, drain: bool) -> NoReturn:
        """Answer before the request is complete, then close (draining a bounded amount)."""
        await self._send(resp, close=True)
        if drain:
            with trio.move_on_after(DRAIN_SECONDS):
                try:
                    await self.stream.send_eof()
                    left = min(DRAIN_MAX_BYTES, 4 * self.limits.max_body_bytes)
                    while left > 0:
                        data = await self.stream.receive_some(RECEIVE_BYTES)
                        if not data:
                            break
                        left -= len(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
        raise _Closed

    async def _send(self, resp: HTTPResponse, *, close: bool = False) -> None:
        headers = [(name, value) for name, value in resp.headers]
        if resp.status != 204:
            headers += [("content-type", resp.content_type),
                        ("content-length", str(len(resp.body)))]
        if close:
            headers.append(("connection", "close"))
        try:
            await self._send_event(h11.Response(status_code=resp.status, headers=headers))
            if resp.body:
                await self._send_event(h11.Data(data=resp.body))
            await self._send_event(h11.EndOfMessage())
        except h11.LocalProtocolError as e:  # e.g. the request was refused mid-flight
            log.info("%s: cannot answer %s: %s", self.server.name, self.client, e)
            raise _Closed from None

    async def _send_event(self, event: Any) -> None:
        data = self.h11.send(event)
        if not data:
            return
        with trio.move_on_after(self.limits.body_timeout_s) as scope:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                self._gone("mid-response", e)
        if scope.cancelled_caught:
            log.info("%s: client %s did not read the answer in time", self.server.name,
                     self.client)
            raise _Closed

