"""ASGI wrappers: the upload cap (enforced while the body streams in) and request metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from text4vis.server.metrics import Metrics

Scope = dict[str, Any]
ASGIApp = Callable[..., Any]


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Answer 413 as soon as a body goes past ``limit_for(path)`` bytes; never buffer it first."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        headers = dict(scope.get("headers") or [])
        if b"content-length" in headers and b"transfer-encoding" in headers:
            # RFC 9112 6.3: such a message may be framed differently by a proxy in front of us
            # (request smuggling); a server may refuse it, and one behind proxies should
            return await _send_json(send, 400, "a request may not carry both Content-Length and Transfer-Encoding")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _send_413(send, limit)
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            # the framework may turn our exception into its own error response (FastAPI answers
            # 400 for any failure while parsing a body): once over the limit, the answer is 413
            nonlocal started
            if exceeded:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _send_413(send, limit)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not started:
                await _send_413(send, limit)


async def _send_413(send: Callable, limit: int) -> None:
    await _send_json(send, 413, f"the upload is larger than {limit} bytes")


async def _send_json(send: Callable, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
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
