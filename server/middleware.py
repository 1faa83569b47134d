"""ASGI wrappers: the key checked before a body is read, the body's size cap and pace (enforced
while it streams in), the Host check, relative redirects, request metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastapi.routing import iter_route_contexts
from starlette.requests import Request
from starlette.routing import Match, Router

from text4vis.models.errors import T4VError
from text4vis.server.metrics import Metrics
from text4vis.server.pace import UploadPace

log = logging.getLogger(__name__)

Scope = dict[str, Any]
ASGIApp = Callable[..., Any]


class _Refused(Exception):
    """The body broke a rule while it streamed in: answered with ``status`` and ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        self.status, self.detail = status, detail


class BodyLimit:
    """Answer 413 as soon as a body goes past ``limit_for(path)`` bytes (never buffer it first),
    and 408 (the connection closed) when a body that ``pace_for(path)`` paces does not arrive in
    time: ``timeout_s`` plus one second per ``min_rate`` bytes received (nginx's
    ``client_body_timeout``, Apache's mod_reqtimeout rule; the uploads keep their own pace,
    ``server/uploads.py``). A request head followed by nothing no longer holds its connection."""

    def __init__(
        self,
        app: ASGIApp,
        limit_for: Callable[[str], int],
        pace_for: Callable[[str], UploadPace | None] = lambda _path: None,
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.pace_for = pace_for

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, pace = self.limit_for(scope["path"]), self.pace_for(scope["path"])
        headers = dict(scope.get("headers") or [])
        if b"content-length" in headers and b"transfer-encoding" in headers:
            # RFC 9112 6.3: such a message may be framed differently by a proxy in front of us
            # (request smuggling); a server may refuse it, and one behind proxies should
            return await _send_json(send, 400, "a request may not carry both Content-Length and Transfer-Encoding")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _send_413(send, limit)
        loop = asyncio.get_running_loop()
        began, received = loop.time(), 0
        refused: _Refused | None = None
        started = body_done = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, refused, body_done
            if pace is None or body_done:  # once the body is in, a receive waits for the disconnect
                message = await receive()
            else:
                try:
                    async with asyncio.timeout_at(began + pace.allowed_s(received)):
                        message = await receive()
                except TimeoutError:
                    refused = _Refused(408, pace.too_slow(received, loop.time() - began, "the request body"))
                    log.info("%s %s: %s", scope.get("method"), scope.get("path"), refused.detail)
                    raise refused from None
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > limit:
                    refused = _Refused(413, f"the upload is larger than {limit} bytes")
                    raise refused
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            # the framework may turn our exception into its own error response (FastAPI answers
            # 400 for any failure while parsing a body): once refused, the answer is ours
            nonlocal started
            if refused is not None:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _send_json(send, refused.status, refused.detail)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _Refused as why:
            if not started:
                await _send_json(send, why.status, why.detail)


class KeyFirst:
    """The API key is checked as soon as the request's head is in, before its body is awaited:
    the route's own key dependencies (``server/deps.py``: ``require_key`` and its kin, the one
    place each route says what it needs) are found by matching the route, and run here first. A
    client without a key can then hold no connection open by sending a head and no body."""

    def __init__(self, app: ASGIApp, router: Router, guards: Collection[Callable[..., None]], state: Any) -> None:
        self.app = app
        self.router = router
        self.guards = frozenset(guards)
        self.state = state
        self._routes: list[tuple[Any, list[Callable[..., None]]]] | None = None

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and self.state.api_keys.enabled:  # no keys: no route to match
            try:
                for guard in self._guards_of(scope):
                    guard(request=Request(scope), service=self.state)
            except T4VError as exc:  # Unauthorized: the same answer the dependency gives
                headers = [(b"www-authenticate", b'Bearer realm="t4v"'), (b"connection", b"close")]
                return await _send_json(send, 401, str(exc), headers)
        await self.app(scope, receive, send)

    def _guards_of(self, scope: Scope) -> list[Callable[..., None]]:
        if self._routes is None:  # the app's routes, flattened through included routers, with their guards
            self._routes = [
                (ctx, _guards(getattr(ctx, "dependant", None), self.guards))
                for ctx in iter_route_contexts(self.router.routes)
            ]
        for route, guards in self._routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return guards
        return []


def _guards(dependant: Any, guards: frozenset[Callable[..., None]]) -> list[Callable[..., None]]:
    """The key guards among a route's dependencies (its own and its router's)."""
    if dependant is None:
        return []
    return [d.call for d in dependant.dependencies if d.call in guards]


async def _send_413(send: Callable, limit: int) -> None:
    await _send_json(send, 413, f"the upload is larger than {limit} bytes")


async def _send_json(
    send: Callable, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or [(b"connection", b"close")]),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class AllowedHosts:
    """``T4V_ALLOWED_HOSTS``: a request whose Host header names another host gets a 400 (what
    Starlette's TrustedHostMiddleware does, with the JSON error every other route answers).
    ``*.example.com`` matches its subdomains."""

    def __init__(self, app: ASGIApp, hosts: list[str]) -> None:
        self.app = app
        self.exact = {h.lower() for h in hosts if not h.startswith("*.")}
        self.suffixes = tuple(h[1:].lower() for h in hosts if h.startswith("*."))

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").lower()
        host = host[: host.rindex("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
        if host in self.exact or (self.suffixes and host.endswith(self.suffixes)):
            return await self.app(scope, receive, send)
        await _send_json(send, 400, "the Host header names a host this server does not answer to (T4V_ALLOWED_HOSTS)")


class RelativeRedirects:
    """The router's redirects (``/vocab/`` -> ``/vocab``) with a relative ``Location`` (RFC 9110
    10.2.2): Starlette builds an absolute one from the request's Host header, so a forged Host
    would be echoed back as a redirect to another site."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def relative(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] in (301, 302, 307, 308):
                headers = []
                for name, value in message.get("headers", []):
                    if name.lower() == b"location":
                        parts = urlsplit(value.decode("latin-1"))
                        value = urlunsplit(("", "", parts.path or "/", parts.query, parts.fragment)).encode("latin-1")
                    headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, relative)


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class RequestMetrics:
    """Count and time requests by route template (not raw path: vocabulary names stay out).

    Every label value comes from a closed set, so no client can grow the series (a method name is
    any token to HTTP: ``FOO1``, ``FOO2``... would each make a new series): the method is one of
    :data:`METHODS` or ``other``, the route a template of the app or ``unmatched``, the status a
    three-digit code."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500
        t0 = time.perf_counter()

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - t0)
