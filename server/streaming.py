"""Streamed NDJSON answers (``/classify/timeline`` with ``stream=true``, ``/archive/labels``) that
cannot outlive their bounds:

* a ``deadline`` for the whole response, sends included (the timeline's ``timeline_timeout_s``),
  and a limit on how long one send may wait for a client that reads nothing (``stall_s``): past
  either, the stream is cut (the connection closed) and what the request held is released;
* a server shutting down (SIGTERM) ends each stream with an error line, not a traceback;
* what the request held (its admission, its spooled upload) is released however the stream ends,
  even before the first line (Starlette then never starts the body, so the body cannot do it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
SHUTTING_DOWN = "the server is shutting down; send the request again (to another replica)"


class _Stalled(Exception):
    """A send did not complete in time: the client stopped reading, or the answer's deadline came."""


class GuardedStream(StreamingResponse):
    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        error_line: Callable[[int, str], bytes],
        stall_s: float,
        deadline: float | None = None,
        stopping: asyncio.Event | None = None,
        held: contextlib.AsyncExitStack | None = None,
    ) -> None:
        """``deadline``: ``loop.time()`` by which the whole answer must be sent; ``stall_s``: how
        long one send may wait for the client; ``stopping``: set when the server shuts down (then
        ``error_line(503, ...)`` is the last line); ``held``: closed when the stream ends."""
        self._content = content
        self._error_line = error_line
        self._stall_s = stall_s
        self._deadline = deadline
        self._stopping = stopping
        self._held = held or contextlib.AsyncExitStack()
        # a proxy in front (nginx) passes each line on at once instead of buffering the answer
        super().__init__(self._until_stopped(), media_type=NDJSON, headers={"X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()

        async def timed_send(message: Message) -> None:
            limit = loop.time() + self._stall_s
            why = f"the client read nothing for {self._stall_s:g} s"
            if self._deadline is not None and self._deadline < limit:
                limit, why = self._deadline, "the answer reached its deadline before the client read it"
            try:
                async with asyncio.timeout_at(limit):
                    await send(message)
            except TimeoutError:
                raise _Stalled(why) from None

        try:
            await super().__call__(scope, receive, timed_send)
        except _Stalled as why:
            # cut the connection at once: aborted, so the bytes queued for a client that reads
            # nothing are dropped with it (a graceful close keeps the socket and its buffer until
            # they are sent, which they never are), and free the slot
            abort = scope.get("extensions", {}).get("t4v.abort")
            if abort is not None:
                abort()
            log.warning("%s %s: %s; closed it", scope.get("method"), scope.get("path"), why)
        finally:
            await self._held.aclose()  # first: its exits wait on nothing, so a cancellation cannot skip them
            await self._content.aclose()  # type: ignore[attr-defined]  # stop the work still in flight

    async def _until_stopped(self) -> AsyncIterator[bytes]:
        """The content's lines, until the server begins to shut down: then an error line ends it."""
        if self._stopping is None:
            async for chunk in self._content:
                yield chunk
            return
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                pending: asyncio.Future[Any] = asyncio.ensure_future(anext(self._content))
                await asyncio.wait({pending, stop}, return_when=asyncio.FIRST_COMPLETED)
                if pending.done():
                    try:
                        text = pending.result()
                    except StopAsyncIteration:
                        return
                    yield text
                    continue
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await pending
                yield self._error_line(503, SHUTTING_DOWN)
                return
        finally:
            stop.cancel()
