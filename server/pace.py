"""How fast an upload must arrive (the rule is Apache mod_reqtimeout's ``body=N,MinRate=R``): a
slow link gets time in proportion to what it sends; a client that trickles a byte every few
seconds is cut off after ``timeout_s``. No imports beyond the standard library: the CLI and the
decode workers read it through the settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UploadPace:
    """An upload must be whole by ``timeout_s + bytes received / min_rate`` after it began, and
    never after ``max_s`` (the request's deadline)."""

    timeout_s: float
    min_rate: float  # bytes/s
    max_s: float

    def allowed_s(self, received: int) -> float:
        return min(self.max_s, self.timeout_s + received / self.min_rate)
