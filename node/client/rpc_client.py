"""JSON-RPC clients (blocking and trio) used by the CLI, the load generator and the tests."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

from chain.errors import AppchainError, ChainError

DEFAULT_NODE = "http://127.0.0.1:26657"


class RPCCallError(ChainError):
    """The node answered with a JSON-RPC error (``code``, ``message``, ``data``)."""

    reason = "node_refused"

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
        self.data = data


class NodeUnreachable(AppchainError):
    """No answer from the node at all (not running, wrong address, timeout)."""

    reason = "node_unreachable"


_ids = itertools.count(1)


def _timeout(timeout_s: float | None) -> float | httpx._client.UseClientDefault:
    return httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s


def _unwrap(url: str, resp: httpx.Response) -> Any:
    try:
        doc = resp.json()
    except ValueError as e:
        raise NodeUnreachable(f"{url} answered HTTP {resp.status_code} without JSON") from e
    if not isinstance(doc, dict):
        raise NodeUnreachable(f"{url} answered with something that is not a JSON-RPC object")
    if "error" in doc:
        err = doc["error"] or {}
        raise RPCCallError(int(err.get("code", 0)), str(err.get("message", "")), err.get("data"))
    return doc.get("result")


def _payload(method: str, params: dict[str, Any] | None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params or {}}


class RPCClient:
    """Blocking client (for the CLI)."""

    def __init__(self, url: str = DEFAULT_NODE, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/") + "/"
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RPCClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, **params: Any) -> Any:
        try:
            resp = self._http.post(self.url, json=_payload(method, params))
        except httpx.HTTPError as e:
            raise NodeUnreachable(f"cannot reach a node at {self.url}: {e}") from e
        return _unwrap(self.url, resp)


class AsyncRPCClient:
    """trio client (for the load generator, devnet and tests)."""

    def __init__(self, url: str = DEFAULT_NODE, timeout: float = 30.0,
                 max_connections: int = 64) -> None:
        self.url = url.rstrip("/") + "/"
        self._http = httpx.AsyncClient(
            timeout=timeout, limits=httpx.Limits(max_connections=max_connections))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRPCClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def call(self, method: str, *, timeout_s: float | None = None, **params: Any) -> Any:
        """One call; ``timeout_s`` overrides the client's timeout for it."""
        try:
            resp = await self._http.post(self.url, json=_payload(method, params),
                                         timeout=_timeout(timeout_s))
        except httpx.HTTPError as e:
            raise NodeUnreachable(f"cannot reach a node at {self.url}: {e}") from e
        return _unwrap(self.url, resp)

    async def call_batch(self, calls: list[tuple[str, dict[str, Any]]],
                         timeout_s: float | None = None) -> list[Any | RPCCallError]:
        """One HTTP request with a JSON-RPC batch; answers in call order (errors as values)."""
        reqs = [_payload(m, p) for m, p in calls]
        try:
            resp = await self._http.post(self.url, json=reqs,
                                         timeout=_timeout(timeout_s))
        except httpx.HTTPError as e:
            raise NodeUnreachable(f"cannot reach a node at {self.url}: {e}") from e
        try:
            docs = resp.json()
        except ValueError as e:
            raise NodeUnreachable(f"{self.url} answered HTTP {resp.status_code}") from e
        if not isinstance(docs, list):
            _unwrap(self.url, resp)  # raises the batch-level error
            raise NodeUnreachable(f"{self.url} did not answer the batch with a list")
        by_id = {d.get("id"): d for d in docs if isinstance(d, dict)}
        out: list[Any | RPCCallError] = []
        for r in reqs:
            d = by_id.get(r["id"], {"error": {"code": 0, "message": "no answer"}})
            if "error" in d:
                err = d["error"] or {}
                out.append(RPCCallError(int(err.get("code", 0)), str(err.get("message", "")),
                                        err.get("data")))
            else:
                out.append(d.get("result"))
        return out

    async def raw_post(self, body: bytes, headers: dict[str, str] | None = None
                       ) -> httpx.Response:
        """Send arbitrary bytes (for tests of malformed requests)."""
        return await self._http.post(self.url, content=body, headers=headers or {})
