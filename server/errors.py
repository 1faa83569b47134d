"""Domain errors -> HTTP status, in exactly one place. Unknown errors: a generic 500, logged.

(413 is answered by ``server/middleware.py`` while the body streams in, before any route runs.)
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from engine.errors import DeadlineExceeded, Overloaded, PreconditionFailed, StoreUnavailable, VocabNotFound
from models.errors import InputError, MediaError, MediaLimitExceeded, T4VError
from server.auth import Unauthorized

log = logging.getLogger(__name__)


class NotReady(T4VError):
    """The model is still loading or warming up."""


STATUS: list[tuple[type[Exception], int]] = [
    (Unauthorized, 401),
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
HEADERS: dict[type[Exception], dict[str, str]] = {Unauthorized: {"WWW-Authenticate": 'Bearer realm="t4v"'}}
RETRY_AFTER: dict[type[Exception], str] = {Overloaded: "1", NotReady: "5", DeadlineExceeded: "1",
                                           StoreUnavailable: "2"}


def install(app: FastAPI) -> None:
    for exc_type, status in STATUS:
        headers = dict(HEADERS.get(exc_type, {}))
        if exc_type in RETRY_AFTER:
            headers["Retry-After"] = RETRY_AFTER[exc_type]
        app.add_exception_handler(exc_type, _handler(status, headers or None))
    app.add_exception_handler(RecursionError, _too_deep)
    app.add_exception_handler(Exception, _unexpected)


def _handler(status: int, headers: dict[str, str] | None):  # noqa: ANN202
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    return handle


async def _too_deep(request: Request, exc: Exception) -> JSONResponse:
    """A JSON body nested thousands deep exhausts the parser's recursion: the client's fault."""
    return JSONResponse({"detail": "the request body is nested too deeply to parse"}, status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)
