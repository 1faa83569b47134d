"""A deadline for a request's head: uvicorn's HTTP/1.1 protocol (h11) with nginx's
``client_header_timeout``.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but any byte cancels
that timer, so a client that connects and sends nothing, or sends its request line and headers a
byte at a time (slowloris), holds a connection, and a file descriptor, for ever: a few thousand of
them and the server accepts no one. Here the line and headers of each request must arrive within
``header_timeout_s`` of the connection (or of the previous response, on a kept-alive connection)
starting to send it; past that the answer is a 408 and the connection is closed. The body has its
own pace (``server/pace.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


def head_deadline_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """The protocol class ``uvicorn.Config(http=...)`` takes, with the head's deadline bound."""

    class HeadDeadline(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # a client that connects and sends nothing is cut too

        def data_received(self, data: bytes) -> None:
            if self._between_requests():
                self._arm()  # the first byte of a new request (or still its head)
            super().data_received(data)
            if not self._between_requests():  # the head was parsed: a request is in progress
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _between_requests(self) -> bool:
            cycle: Any = self.cycle
            return cycle is None or cycle.response_complete

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _too_slow(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or not self._between_requests():
                return
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            log.warning("%s sent no complete request head in %g s: closed (408)", client, header_timeout_s)
            body = json.dumps(
                {"detail": f"the request line and headers must arrive within {header_timeout_s:g} s"}
            ).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            self.transport.close()

    return HeadDeadline
