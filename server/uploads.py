"""A multipart upload streamed once to disk: the file part goes straight into the upload spool
(where the decode workers read it), the form fields into memory.

Starlette's form parser would first spool the file to its own temporary file, which the route
then copied into the upload directory: every upload written twice. This parser (python-multipart,
the library Starlette uses) writes each chunk once, off the event loop. The byte cap is enforced
before this runs, while the body streams in (``server/middleware.py``), and the pace here: an
upload must be whole ``upload_timeout_s`` + its bytes / ``upload_min_rate`` after it began
(Apache's mod_reqtimeout rule: a slow link gets time in proportion to what it sends, a client
trickling a byte every few seconds is cut off), and never after ``request_timeout_s``: 408.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import ClientDisconnect, Request

from text4vis.models.errors import InputError, T4VError
from text4vis.server.pace import UploadPace

if TYPE_CHECKING:
    from text4vis.engine.facade import Engine

MAX_FIELD_BYTES = 1 << 20  # a form field (labels of a large ad-hoc vocabulary) is at most 1 MiB
MAX_PARTS = 64  # the forms have 14 fields; more parts than this are refused before they are parsed
DRAIN_S = 1.0  # a refused upload is read and dropped for at most this long before the 503 goes out
DRAIN_BYTES = 64 << 20


class MalformedBody(T4VError):
    """The request body cannot be read as the multipart form it claims to be (400)."""


class UploadTimedOut(T4VError):
    """The body did not arrive at the pace the server asks (408; the connection is closed)."""


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    path: Path | None = None  # the file part, in the spool directory
    filename: str | None = None
    seconds: float = 0.0  # how long the body took to arrive: part of the request's deadline


@dataclass
class _Part:
    name: str = ""
    data: bytearray = field(default_factory=bytearray)
    is_file: bool = False


class _Receiver:
    """python-multipart callbacks; file bytes are queued and written by :meth:`flush`."""

    def __init__(self, spool: Path, file_field: str) -> None:
        self.spool, self.file_field = spool, file_field
        self.upload = Upload()
        self.part = _Part()
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.file: IO[bytes] | None = None  # the one file part's spool file
        self.pending: list[bytes] = []  # its bytes parsed but not yet written
        self.parts = 0

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise MalformedBody(f"the form has more than {MAX_PARTS} parts")
        self.part, self.disposition = _Part(), b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if b"name" not in options:
            raise InputError("a multipart part has no name")
        self.part.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options and self.part.name == self.file_field:
            if self.upload.path is not None:
                raise InputError(f"send one {self.file_field!r} part")
            filename = options[b"filename"].decode("utf-8", "replace")
            # closed by close(), removed by receive_upload whatever happens
            self.file = tempfile.NamedTemporaryFile(dir=self.spool, suffix=_suffix(filename), delete=False)  # noqa: SIM115
            self.part.is_file = True
            self.upload.path, self.upload.filename = Path(self.file.name), filename

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part.is_file:
            self.pending.append(data[start:end])
            return
        if len(self.part.data) + end - start > MAX_FIELD_BYTES:
            raise InputError(f"form field {self.part.name!r} is over {MAX_FIELD_BYTES} bytes")
        self.part.data += data[start:end]

    def on_part_end(self) -> None:
        if not self.part.is_file and self.part.name != self.file_field:
            self.upload.fields[self.part.name] = self.part.data.decode("utf-8", "replace")

    def flush(self) -> None:
        """Write the queued file bytes (in a worker thread: disk writes stay off the event loop)."""
        if self.pending and self.file is not None:
            self.file.write(b"".join(self.pending))
        self.pending.clear()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


@contextlib.asynccontextmanager
async def admitted_upload(request: Request, engine: Engine, spool: Path, pace: UploadPace) -> AsyncIterator[Upload]:
    """Admission, then the upload: a request the server is too busy for is refused before its
    body is read; an admitted one counts as uploading (stalled while it sends nothing) until its
    body is in, then as work, until the block ends."""
    with engine.admit() as ticket:
        length = request.headers.get("content-length", "")
        ticket.expect(int(length) if length.isdigit() else None, pace.max_s)
        async with receive_upload(request, spool, pace, on_chunk=ticket.progress) as upload:
            ticket.uploaded()
            yield upload


@contextlib.asynccontextmanager
async def receive_upload(
    request: Request,
    spool: Path,
    pace: UploadPace,
    on_chunk: Callable[[int], None] | None = None,
    file_field: str = "file",
) -> AsyncIterator[Upload]:
    """Parse ``request``'s multipart body; the file part is written once, into ``spool``, and
    removed when the block ends (whatever happens). ``pace``: the body's deadline
    (:class:`UploadTimedOut` past it); ``on_chunk``: called with the bytes received so far as each
    piece arrives."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise InputError("send the upload as multipart/form-data")
    receiver = _Receiver(spool, file_field)
    callbacks = {
        name: getattr(receiver, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
        )
    }
    parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    began, received = loop.time(), 0
    try:
        try:
            async with asyncio.timeout(began + pace.allowed_s(0)) as deadline:
                async for chunk in request.stream():
                    received += len(chunk)
                    deadline.reschedule(began + pace.allowed_s(received))
                    if on_chunk is not None:
                        on_chunk(received)
                    _parse(parser.write, chunk)
                    await asyncio.to_thread(receiver.flush)
        except TimeoutError:
            raise UploadTimedOut(pace.too_slow(received, loop.time() - began)) from None
        receiver.upload.seconds = loop.time() - began
        _parse(parser.finalize)
        if parser.state != MultipartState.END:  # a cut connection: never classify a file missing its end
            raise MalformedBody("the upload ended before the multipart body did (no closing boundary)")
        receiver.close()
        yield receiver.upload
    finally:
        receiver.close()
        with contextlib.suppress(FileNotFoundError):
            if receiver.upload.path is not None:
                receiver.upload.path.unlink()


async def drain(request: Request, seconds: float = DRAIN_S, max_bytes: int = DRAIN_BYTES) -> bool:
    """Read and drop what is left of ``request``'s body, within ``seconds`` and ``max_bytes``; True
    when it was all read. A refusal sent before the body is read (admission's 503) would otherwise
    be lost to most clients: they read the answer only once they have sent the whole body, and a
    connection closed on unread bytes is reset, taking the answer with it (a lingering close)."""
    if request.scope.get("type") != "http" or request.method not in ("POST", "PUT", "PATCH"):
        return True
    read = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                read += len(chunk)
                if read > max_bytes:
                    return False
    except (TimeoutError, RuntimeError, ClientDisconnect):  # RuntimeError: the body was already read
        return False
    return True


def _parse(step: Callable[..., object], *args: bytes) -> None:
    try:
        step(*args)
    except (InputError, MalformedBody):
        raise
    except Exception as exc:  # python-multipart's own parse errors: a malformed body is the client's
        raise MalformedBody(f"the multipart body is malformed ({type(exc).__name__})") from None


def _suffix(filename: str | None) -> str:
    if not filename or "." not in filename:
        return ""
    suffix = "." + filename.rsplit(".", 1)[1][:10]
    return suffix if suffix[1:].isalnum() else ""
