"""The HTTP/1.1 server of both node servers (node/api/http_server.py), in process over real
sockets on 127.0.0.1: keep-alive and pipelining, Expect: 100-continue, chunked bodies, the
404/405 answers of the RPC routes, malformed requests, and the new config keys' checks."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
import trio

from node.api.http_server import HTTPLimits, HTTPRequest, HTTPResponse, HTTPServer, json_body
from node.api.server import route_error
from node.config import ConfigError, parse_config

LIMITS = HTTPLimits(max_connections=8, header_timeout_s=30, body_timeout_s=30,
                    idle_timeout_s=30, max_body_bytes=1000)


async def echo(request: HTTPRequest) -> HTTPResponse:
    refused = route_error(request, {"/": "POST", "/*": "GET"})
    if refused is not None:
        return refused
    return HTTPResponse(200, json_body({"method": request.method, "path": request.path,
                                        "query": request.query, "body": request.body.decode()}))


async def start(nursery: trio.Nursery) -> tuple[str, int]:
    url = await nursery.start(partial(HTTPServer("test", echo, LIMITS).serve, "127.0.0.1", 0))
    host, _, port = url.removeprefix("http://").rpartition(":")
    return host, int(port)


async def read_answers(stream: trio.SocketStream, n: int) -> list[tuple[int, dict[str, str],
                                                                      bytes]]:
    """``n`` responses (each with a content-length, or none for 1xx/204)."""
    buf = b""
    out: list[tuple[int, dict[str, str], bytes]] = []
    with trio.fail_after(30):
        while len(out) < n:
            if b"\r\n\r\n" in buf:
                head, _, rest = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip()
                           for k, v in (ln.split(":", 1) for ln in lines[1:])}
                size = int(headers.get("content-length", "0"))
                if len(rest) >= size:
                    out.append((int(lines[0].split()[1]), headers, rest[:size]))
                    buf = rest[size:]
                    continue
            data = await stream.receive_some(65536)
            assert data, f"closed early, got {out}"
            buf += data
    return out


def post(body: bytes, extra: str = "") -> bytes:
    return (f"POST / HTTP/1.1\r\nhost: x\r\n{extra}content-length: {len(body)}\r\n\r\n"
            ).encode() + body


async def test_keep_alive_pipelining_and_uri_form() -> None:
    async with trio.open_nursery() as nursery:
        host, port = await start(nursery)
        stream = await trio.open_tcp_stream(host, port)
        # Two requests in one write: two answers, in order, on one connection.
        await stream.send_all(post(b"one") + b"GET /status?height=%2212%22&x= HTTP/1.1\r\n"
                              b"host: x\r\n\r\n")
        (s1, _, b1), (s2, _, b2) = await read_answers(stream, 2)
        assert s1 == 200 and json.loads(b1)["body"] == "one"
        doc: dict[str, Any] = json.loads(b2)
        assert s2 == 200 and doc["path"] == "/status"
        assert doc["query"] == {"height": '"12"', "x": ""}
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_expect_100_continue_and_chunked_bodies() -> None:
    async with trio.open_nursery() as nursery:
        host, port = await start(nursery)
        stream = await trio.open_tcp_stream(host, port)
        await stream.send_all(b"POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
                              b"content-length: 5\r\n\r\n")
        [(code, _, _)] = await read_answers(stream, 1)
        assert code == 100
        await stream.send_all(b"hello")
        [(code, _, body)] = await read_answers(stream, 1)
        assert code == 200 and json.loads(body)["body"] == "hello"
        await stream.send_all(b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                              b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        [(code, _, body)] = await read_answers(stream, 1)
        assert code == 200 and json.loads(body)["body"] == "abcde"
        await stream.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /a/b HTTP/1.1\r\nhost: x\r\n\r\n", 404),
    (b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", 405),
    (b"PUT / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}", 405),
    (b"POST /status HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n", 405),
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    (b"GET /" + b"x" * 40_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n", 431),
])
async def test_refusals_are_json_rpc_errors(request_bytes: bytes, status: int) -> None:
    async with trio.open_nursery() as nursery:
        host, port = await start(nursery)
        stream = await trio.open_tcp_stream(host, port)
        await stream.send_all(request_bytes)
        [(code, headers, body)] = await read_answers(stream, 1)
        assert code == status
        doc = json.loads(body)
        assert doc["id"] is None and doc["error"]["code"] == -32600
        if status == 405:
            assert headers["allow"] in ("POST", "GET")
        await stream.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("key", ["max_connections", "header_timeout_ms", "body_timeout_ms",
                                 "idle_timeout_ms"])
@pytest.mark.parametrize("section", ["rpc", "admin"])
def test_the_limits_must_be_positive(section: str, key: str) -> None:
    assert getattr(getattr(parse_config({section: {key: 7}}), section), key) == 7
    with pytest.raises(ConfigError, match=f"{section}.{key} must be positive"):
        parse_config({section: {key: 0}})
