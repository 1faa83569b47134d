"""Connections: a deadline for each request's head and a bound on how many are open, on uvicorn's
HTTP/1.1 protocol (h11), as nginx's ``client_header_timeout`` and ``limit_conn``.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but any byte cancels
that timer, so a client that connects and sends nothing, or sends its request line and headers a
byte at a time (slowloris), holds a connection, and a file descriptor, for ever: a few thousand of
them and the server accepts no one. Here the line and headers of each request must arrive within
``header_timeout_s`` of the connection (or of the previous response, on a kept-alive connection)
starting to send it; past that the answer is a 408 and the connection is closed. The body has its
own pace (``server/pace.py``, ``server/middleware.py``).

Open connections are bounded in total (``max_connections``) and per client address
(``max_connections_per_client``): one past a bound is answered 503 and closed at once, so a
flood costs a file descriptor for a moment, never the server's last one. The warnings of a flood
are rate-limited (one line per kind every few seconds, with the count of those not shown).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0


class RateLimitedLog:
    """At most one line per key every ``every_s`` seconds; the next one shown counts the lines
    that were not (a flood of refusals makes a line per 10 s, not a line per connection)."""

    def __init__(self, logger: logging.Logger, every_s: float = LOG_EVERY_S) -> None:
        self.logger, self.every_s = logger, every_s
        self._last: dict[str, float] = {}
        self._held: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self.every_s) < self.every_s:
                self._held[key] += 1
                return
            self._last[key] = now
            held = self._held.pop(key, 0)
        suffix = f" ({held} more like it not logged in the last {self.every_s:g} s)" if held else ""
        self.logger.warning(message + suffix, *args)


class RateLimitedRecords(logging.Filter):
    """For a library's logger (asyncio's "socket.accept() out of system resource", logged once per
    failed accept with its traceback): at most one record per message every ``every_s`` seconds."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._held: collections.Counter[str] = collections.Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)[:200]
        now = time.monotonic()
        if now - self._last.get(key, -self.every_s) < self.every_s:
            self._held[key] += 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it not logged in the last {self.every_s:g} s)"
        return True


@dataclass
class ConnectionLimits:
    """How many connections are open, in all and per client address (event loop only)."""

    max_total: int
    max_per_client: int
    total: int = 0
    per_client: collections.Counter[str] = field(default_factory=collections.Counter)
    refused: int = 0

    def refusal(self, address: str) -> str | None:
        """Why one more connection from ``address`` is refused, or None (then it is counted)."""
        if self.total >= self.max_total:
            return f"{self.total} connections are open (the server's max_connections)"
        if self.per_client[address] >= self.max_per_client:
            return f"{self.per_client[address]} connections from {address} are open (max_connections_per_client)"
        self.total += 1
        self.per_client[address] += 1
        return None

    def closed(self, address: str) -> None:
        self.total -= 1
        self.per_client[address] -= 1
        if self.per_client[address] <= 0:
            del self.per_client[address]


FLOODS = RateLimitedLog(log)


class BoundedH11(H11Protocol):
    """uvicorn's h11 protocol with the head's deadline and the connection bounds (subclassed with
    them by :func:`bounded_protocol`)."""

    header_timeout_s: ClassVar[float] = 10.0
    limits: ClassVar[ConnectionLimits] = ConnectionLimits(1 << 30, 1 << 30)
    _head_timer: asyncio.TimerHandle | None = None
    _counted: str | None = None  # the client address this connection is counted under

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else "unknown"
        why = self.limits.refusal(address)
        if why is not None:
            self.limits.refused += 1
            FLOODS.warning("refused", "a connection from %s refused (503): %s", address, why)
            _answer(self.transport, 503, f"this server has too many open connections ({why}); retry in a moment")
            return
        self._counted = address
        self._arm()  # a client that connects and sends nothing is cut too

    def data_received(self, data: bytes) -> None:
        if self._counted is None:
            return  # refused: its answer is on its way, the connection closing
        if self._between_requests():
            self._arm()  # the first byte of a new request (or still its head)
        super().data_received(data)
        if not self._between_requests():  # the head was parsed: a request is in progress
            self._disarm()
            # a stream cut for not reading is aborted, not closed gracefully with its unsent
            # bytes still queued for a client that never reads them (server/streaming.py)
            extensions: dict[str, Any] = self.cycle.scope.setdefault("extensions", {})  # type: ignore[union-attr,assignment]
            extensions["t4v.abort"] = self.transport.abort

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted is not None:
            self.limits.closed(self._counted)
            self._counted = None
        super().connection_lost(exc)

    def _between_requests(self) -> bool:
        cycle: Any = self.cycle
        return cycle is None or cycle.response_complete

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._between_requests():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        FLOODS.warning("head", "%s sent no complete request head in %g s: closed (408)", client, self.header_timeout_s)
        _answer(self.transport, 408, f"the request line and headers must arrive within {self.header_timeout_s:g} s")


def bounded_protocol(header_timeout_s: float, limits: ConnectionLimits) -> type[H11Protocol]:
    """The protocol class ``uvicorn.Config(http=...)`` takes, with the head's deadline and the
    connection bounds bound."""
    return type("Bounded", (BoundedH11,), {"header_timeout_s": header_timeout_s, "limits": limits})


def _answer(transport: asyncio.BaseTransport, status: int, detail: str) -> None:
    """Write a whole JSON error answer and close (the connection never reaches the app)."""
    assert isinstance(transport, asyncio.WriteTransport)
    reason = {408: "Request Timeout", 503: "Service Unavailable"}[status]
    body = json.dumps({"detail": detail}).encode()
    retry = b"retry-after: 1\r\n" if status == 503 else b""
    transport.write(
        f"HTTP/1.1 {status} {reason}\r\n".encode()
        + b"content-type: application/json\r\nconnection: close\r\n"
        + retry
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    transport.close()
