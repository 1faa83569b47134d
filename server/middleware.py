"""ASGI wrappers: the upload cap (enforced while the body streams in) and request metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

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
