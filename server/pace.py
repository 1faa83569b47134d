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

    def too_slow(self, received: int, seconds: float, what: str = "the upload") -> str:
        """Why ``what`` was cut after ``seconds`` with ``received`` bytes in (the 408's sentence)."""
        if seconds >= self.max_s - 1e-3:
            return f"{what} took longer than the request's deadline of {self.max_s:g} s ({received} bytes arrived)"
        return (
            f"{what} arrived too slowly ({received} bytes in {seconds:.0f} s); this server waits "
            f"{self.timeout_s:g} s plus 1 s per {self.min_rate / 1024:g} KiB sent"
        )
