"""API keys: who may change vocabularies (and, if so configured, classify or read /metrics).

Keys come from ``T4V_API_KEYS`` (comma-separated) and/or ``T4V_API_KEY_FILE`` (one SHA-256 hex
digest per line, ``#`` comments: the server never needs to hold a key in clear). A request
presents one as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; its digest is compared
with every known digest in constant time. Keys are never logged. No key configured: everything
is open, as before.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from fastapi import Request

from text4vis.models.errors import T4VError


class Unauthorized(T4VError):
    """No API key, or not a known one: 401 with WWW-Authenticate."""


def key_digest(key: str) -> str:
    """What a key file holds for ``key``: ``python -c "import hashlib; print(hashlib.sha256(b'KEY').hexdigest())"``."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, keys: list[str] | None = None, key_file: Path | None = None) -> None:
        digests = [key_digest(k) for k in keys or [] if k]
        if key_file is not None:
            for line in key_file.read_text().splitlines():
                line = line.split("#", 1)[0].strip().lower()
                if line:
                    if len(line) != 64 or any(c not in "0123456789abcdef" for c in line):
                        raise ValueError(f"{key_file}: every line must be a SHA-256 hex digest of a key")
                    digests.append(line)
        self._digests = [bytes.fromhex(d) for d in digests]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, request: Request) -> None:
        """Raise :class:`Unauthorized` unless keys are off or the request carries a known key."""
        if not self._digests:
            return
        presented = _presented(request)
        if presented is None:
            raise Unauthorized("this endpoint needs an API key: send Authorization: Bearer <key>")
        digest = hashlib.sha256(presented.encode()).digest()
        # compare with every digest (no early exit): the time does not tell which one matched
        matched = False
        for known in self._digests:
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
