"""Errors as types; each carries the HTTP status and the server's message."""

from __future__ import annotations


class T4VError(Exception):
    """Any error answer of the server (or the transport failing after retries)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class InvalidInput(T4VError):
    """400 / 422: the request was refused as it is."""


class Unauthorized(T4VError):
    """401: the server needs an API key (``api_key=`` / ``--api-key`` / T4V_API_KEY), or it is not valid."""


class NotFound(T4VError):
    """404: no such vocabulary."""


class UploadTooSlow(T4VError):
    """408: the upload arrived slower than the server's pace allows (a faster link, or a smaller file)."""


class PreconditionFailed(T4VError):
    """412: If-Match named an ETag that is no longer the stored one."""


class PayloadTooLarge(T4VError):
    """413: the upload is over the server's limit."""


class UnsupportedMedia(T4VError):
    """415: the file is not a video or image the server can decode."""


class Unavailable(T4VError):
    """503 / 429 after every retry: overloaded or not ready."""


class ServerError(T4VError):
    """5xx other than 503."""


class ArchiveMismatch(T4VError):
    """409: the server's archive holds no embeddings of its model with these frames and views."""


def error_for(status: int, message: str) -> T4VError:
    kinds: dict[int, type[T4VError]] = {
        400: InvalidInput,
        401: Unauthorized,
        404: NotFound,
        408: UploadTooSlow,
        409: ArchiveMismatch,
        412: PreconditionFailed,
        413: PayloadTooLarge,
        415: UnsupportedMedia,
        422: InvalidInput,
        429: Unavailable,
        503: Unavailable,
    }
    kind = kinds.get(status, ServerError if status >= 500 else T4VError)
    return kind(message, status)
