"""API keys: who may change vocabularies (and, if so configured, classify or read /metrics).

Keys come from ``T4V_API_KEYS`` (comma-separated) and/or ``T4V_API_KEY_FILE`` (one SHA-256 hex
digest per line, ``#`` comments: the server never needs to hold a key in clear). A request
presents one as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; its digest is compared
with every known digest in constant time. Keys are never logged. No key configured: everything
is open, as before.

Auth fails closed. Keys configured but none usable (``T4V_API_KEYS=" , "``, a key file whose
every digest is commented out) is refused at start (settings.py calls :func:`read_key_file`).
The key file is read again when it changes (its size, mtime or inode; looked at no more than
once a second, when a request needs a key) and on SIGHUP, so a revoked digest takes effect
without a restart; a file that became unreadable, invalid or empty then refuses every key (and
logs why) until it is fixed, rather than opening the server.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from text4vis.models.errors import T4VError

if TYPE_CHECKING:  # settings.py reads key files at start: no web framework for that
    from starlette.requests import Request

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0  # how often a request may look at the key file's stat


class Unauthorized(T4VError):
    """No API key, or not a known one: 401 with WWW-Authenticate."""


def key_digest(key: str) -> str:
    """What a key file holds for ``key``: ``python -c "import hashlib; print(hashlib.sha256(b'KEY').hexdigest())"``."""
    return hashlib.sha256(key.encode()).hexdigest()


def read_key_file(path: Path) -> list[bytes]:
    """The active digests of a key file; ValueError (one sentence) when it has a line that is no
    digest or no active digest at all (a key file that opens the server is a mistake)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the API key file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    digests = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip().lower()
        if not line:
            continue
        if len(line) != 64 or any(c not in "0123456789abcdef" for c in line):
            raise ValueError(f"{path}, line {number}: every line must be a SHA-256 hex digest of a key")
        digests.append(bytes.fromhex(line))
    if not digests:
        raise ValueError(
            f"the API key file {path} holds no active key digest (blank or commented out): "
            "add one (t4v keys new), or unset T4V_API_KEY_FILE to run without keys"
        )
    return digests


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class ApiKeys:
    def __init__(
        self,
        keys: list[str] | None = None,
        key_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fixed = [hashlib.sha256(k.encode()).digest() for k in keys or [] if k]
        self._file = key_file
        self._clock = clock
        self._file_digests: list[bytes] = []
        self._signature: tuple[int, int, int] | None = None
        self._looked_at = clock()
        if key_file is not None:
            self._signature = _signature(key_file)
            self._file_digests = read_key_file(key_file)  # at start a bad file is an error, not "deny all"

    @property
    def enabled(self) -> bool:
        """Keys are configured (by the environment or a file): requests must present one, even
        while the key file is broken (then no key is accepted)."""
        return bool(self._fixed) or self._file is not None

    @property
    def count(self) -> int:
        return len(self._fixed) + len(self._file_digests)

    def reload(self) -> None:
        """Read the key file again (SIGHUP, or its stat changed). A file that cannot be used
        refuses every key from the file until it is fixed; the error is logged."""
        if self._file is None:
            return
        self._signature = _signature(self._file)
        self._looked_at = self._clock()
        try:
            digests = read_key_file(self._file)
        except ValueError as exc:
            self._file_digests = []
            log.error("%s; until it is fixed, no key from that file is accepted", exc)
            return
        self._file_digests = digests
        log.info("API key file %s read again: %d active key digest(s)", self._file, len(digests))

    def _look_at_file(self) -> None:
        if self._file is None or self._clock() - self._looked_at < CHECK_EVERY_S:
            return
        self._looked_at = self._clock()
        if _signature(self._file) != self._signature:
            self.reload()

    def check(self, request: Request) -> None:
        """Raise :class:`Unauthorized` unless keys are off or the request carries a known key."""
        if not self.enabled:
            return
        self._look_at_file()
        presented = _presented(request)
        if presented is None:
            raise Unauthorized("this endpoint needs an API key: send Authorization: Bearer <key>")
        digest = hashlib.sha256(presented.encode()).digest()
        # compare with every digest (no early exit): the time does not tell which one matched
        matched = False
        for known in (*self._fixed, *self._file_digests):
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise Unauthorized("the API key is not valid")


def _presented(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = request.headers.get("x-api-key", "").strip()
    return key or None
