"""Domain errors -> HTTP status, in exactly one place. Unknown errors: a generic 500, logged.

(413 is answered by ``server/middleware.py`` while the body streams in, before any route runs.)
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from engine.errors import DeadlineExceeded, Overloaded, PreconditionFailed, StoreUnavailable, VocabNotFound
from models.errors import InputError, MediaError, MediaLimitExceeded, T4VError

log = logging.getLogger(__name__)


class NotReady(T4VError):
    """The model is still loading or warming up."""


STATUS: list[tuple[type[Exception], int]] = [
    (MediaLimitExceeded, 413),
    (MediaError, 415),
    (InputError, 422),
    (VocabNotFound, 404),
    (PreconditionFailed, 412),
    (Overloaded, 503),
    (StoreUnavailable, 503),
    (DeadlineExceeded, 503),
    (NotReady, 503),
]
RETRY_AFTER: dict[type[Exception], str] = {Overloaded: "1", NotReady: "5", DeadlineExceeded: "1",
                                           StoreUnavailable: "2"}


def install(app: FastAPI) -> None:
    for exc_type, status in STATUS:
        app.add_exception_handler(exc_type, _handler(status, RETRY_AFTER.get(exc_type)))
    app.add_exception_handler(RecursionError, _too_deep)
    app.add_exception_handler(Exception, _unexpected)


def _handler(status: int, retry_after: str | None):  # noqa: ANN202
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        headers = {"Retry-After": retry_after} if retry_after else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    return handle


async def _too_deep(request: Request, exc: Exception) -> JSONResponse:
    """A JSON body nested thousands deep exhausts the parser's recursion: the client's fault."""
    return JSONResponse({"detail": "the request body is nested too deeply to parse"}, status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)
