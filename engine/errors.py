"""The serving engine's errors (the input and model errors live in ``models/errors.py``)."""

from text4vis.models.errors import InputError, T4VError


class Overloaded(T4VError):
    """The server is full; retry later. ``retry_after_s``: when a retry should find room (the
    ``Retry-After`` header of the 503)."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(T4VError):
    """The request passed its deadline before it finished."""


class DecodeBudgetExceeded(InputError):
    """A file took longer to decode than the per-file budget: the file is too costly (422)."""


class DecodeTimedOut(BaseException):
    """A decode worker gave up on a job at its deadline (or found it already past when it started).

    A ``BaseException``, not an ``Exception``: the alarm raises it wherever the decoder happens to
    be, and the readers' own ``except Exception`` (a failed seek retried by counting, a decode error
    reported as a corrupt file) must not swallow it. The pool turns it into DeadlineExceeded."""


class DecoderLost(T4VError):
    """A decode worker was killed from outside (the OOM killer, an operator's kill) while it held a
    job: the server's fault, not the file's (503; sending the file again may well succeed)."""


class NonFiniteOutput(T4VError):
    """A model produced NaN or infinity (an engine fault, e.g. an fp16 overflow, never the input's):
    503, and nothing non-finite is served or stored."""


class VocabNotFound(T4VError):
    """No vocabulary of that name."""


class StoreUnavailable(T4VError):
    """The vocabulary store (Redis) cannot be reached: 503; vocabularies held in memory are still served."""


class PreconditionFailed(T4VError):
    """If-Match named a version that is no longer current."""


class ArchiveUnavailable(T4VError):
    """The archive's storage cannot be opened, read or written (a bad URI, a corrupt table, a
    read-only or full disk): 503."""


class ArchiveMismatch(T4VError):
    """The archive holds no embeddings of the running model and sampling (only of others): 409."""


class NotInArchive(T4VError):
    """No stored video of that id: 404."""
