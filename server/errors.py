"""Domain errors -> HTTP status, in exactly one place. Unknown errors: a generic 500, logged.

(413 is answered by ``server/middleware.py`` while the body streams in, before any route runs.)
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from text4vis.engine.errors import (
    ArchiveMismatch,
    ArchiveUnavailable,
    DeadlineExceeded,
    DecoderLost,
    NonFiniteOutput,
    NotInArchive,
    Overloaded,
    PreconditionFailed,
    StoreUnavailable,
    VocabNotFound,
)
from text4vis.models.errors import InputError, MediaError, MediaLimitExceeded, T4VError
from text4vis.server.auth import Unauthorized
from text4vis.server.uploads import MalformedBody, UploadTimedOut, drain

log = logging.getLogger(__name__)


class NotReady(T4VError):
    """The model is still loading or warming up."""


STATUS: list[tuple[type[Exception], int]] = [
    (MalformedBody, 400),
    (Unauthorized, 401),
    (UploadTimedOut, 408),
    (MediaLimitExceeded, 413),
    (MediaError, 415),
    (InputError, 422),
    (VocabNotFound, 404),
    (NotInArchive, 404),
    (ArchiveMismatch, 409),
    (PreconditionFailed, 412),
    (Overloaded, 503),
    (StoreUnavailable, 503),
    (ArchiveUnavailable, 503),
    (DeadlineExceeded, 503),
    (NotReady, 503),
    (NonFiniteOutput, 503),
    (DecoderLost, 503),
]
HEADERS: dict[type[Exception], dict[str, str]] = {
    Unauthorized: {"WWW-Authenticate": 'Bearer realm="t4v"'},
    UploadTimedOut: {"Connection": "close"},  # the rest of the body may still arrive: never read it as a request
}
RETRY_AFTER: dict[type[Exception], str] = {Overloaded: "1", NotReady: "5", DeadlineExceeded: "1", StoreUnavailable: "2"}


def status_of(exc: BaseException) -> int:
    """The HTTP status of a domain error (500 for anything else): a streamed response that has
    already begun reports an error on its last line with this status."""
    return next((status for exc_type, status in STATUS if isinstance(exc, exc_type)), 500)


def install(app: FastAPI) -> None:
    for exc_type, status in STATUS:
        headers = dict(HEADERS.get(exc_type, {}))
        if exc_type in RETRY_AFTER:
            headers["Retry-After"] = RETRY_AFTER[exc_type]
        app.add_exception_handler(exc_type, _handler(status, headers or None))
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(RecursionError, _too_deep)
    app.add_exception_handler(Exception, _unexpected)


def _handler(status: int, headers: dict[str, str] | None):  # noqa: ANN202
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, Overloaded):  # the wait the admission predicted
            headers_now = {**(headers or {}), "Retry-After": str(exc.retry_after_s)}
            if not await drain(request):  # an upload still arriving: the connection cannot be reused
                headers_now["Connection"] = "close"
            return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers_now)
        if isinstance(exc, NonFiniteOutput):  # the engine's fault: the operator must hear of it
            log.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    return handle


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    """422 as every other error: ``detail`` is one sentence naming the field; ``errors`` keeps
    pydantic's list for programs."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    shown = [_shown(e) for e in errors[:MAX_ERRORS_SHOWN]]
    body: dict[str, Any] = {"detail": validation_sentence(errors), "errors": jsonable_encoder(shown)}
    if len(errors) > MAX_ERRORS_SHOWN:  # 100k blank labels made a 16.7 MB answer
        body["errors_omitted"] = len(errors) - MAX_ERRORS_SHOWN
    return JSONResponse(body, status_code=422)


MAX_ERRORS_SHOWN = 20
MAX_INPUT_SHOWN = 200  # characters of an offending value echoed back; longer ones (a whole body) are not


def _shown(error: Any) -> dict[str, Any]:
    """One of pydantic's errors as a 422 lists it: without the union's branch names in ``loc``,
    and without ``input`` where echoing it would send a large value back."""
    shown = {k: v for k, v in error.items() if k not in ("input", "url")}
    shown["loc"] = [part for part in error.get("loc", ()) if part not in _UNION_BRANCHES]
    value = error.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        shown["input"] = str(value)  # NaN and infinity are no JSON numbers: echoed as words, never a 500
    elif isinstance(value, str | int | float | bool) and len(str(value)) <= MAX_INPUT_SHOWN:
        shown["input"] = value
    if "ctx" in shown:
        shown["ctx"] = {
            k: v if not isinstance(v, float) or math.isfinite(v) else str(v) for k, v in shown["ctx"].items()
        }
    return shown


_UNION_BRANCHES = {"VocabLabelsIn": "labels", "VocabPresetIn": "preset"}


def validation_sentence(errors: list[dict[str, Any]]) -> str:
    """One readable sentence for pydantic's errors. A body that may be one of several shapes
    (labels or a preset) is judged as the shape it tried to be, not against every shape."""

    def branch(e: dict[str, Any]) -> str | None:
        return next((str(part) for part in e.get("loc", ()) if part in _UNION_BRANCHES), None)

    branches = {branch(e) for e in errors} - {None}
    if len(branches) > 1:  # keep the errors of the shape with the fewest complaints about missing keys

        def missing(name: str | None) -> int:
            return sum(e.get("type") == "missing" for e in errors if branch(e) == name)

        best = min(sorted(b for b in branches if b is not None), key=missing)
        errors = [e for e in errors if branch(e) in (best, None)]
    parts = []
    for e in errors[:2]:
        loc = [
            str(x)
            for x in e.get("loc", ())
            if x not in ("body", "query", "path", "header") and str(x) not in _UNION_BRANCHES
        ]
        field = ".".join(loc) or "the request body"
        kind = e.get("type")
        if kind == "missing":
            parts.append(f"{field} is required")
        elif kind == "extra_forbidden":
            parts.append(f"{field} is not a known field")
        elif kind == "json_invalid":
            parts.append("the request body is not valid JSON")
        elif kind == "string_pattern_mismatch" and e.get("ctx", {}).get("pattern") == r"\S":
            parts.append(f"{field} must not be blank")
        elif kind == "string_pattern_mismatch" and "\\{\\}" in str(e.get("ctx", {}).get("pattern", "")):
            parts.append(f'{field} must hold one {{}} where the label goes, e.g. "a video of a person {{}}."')
        elif kind in ("model_attributes_type", "dict_type") and field == "the request body":
            parts.append("the request body must be a JSON object, sent with Content-Type: application/json")
        else:
            message = str(e.get("msg", "is not valid"))
            parts.append(f"{field}: {message[0].lower()}{message[1:]}")
    more = f" (and {len(errors) - 2} more)" if len(errors) > 2 else ""
    return "; ".join(parts) + more if parts else "the request is not valid"


async def _too_deep(request: Request, exc: Exception) -> JSONResponse:
    """A JSON body nested thousands deep exhausts the parser's recursion: the client's fault."""
    return JSONResponse({"detail": "the request body is nested too deeply to parse"}, status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)
