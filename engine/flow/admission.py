"""Admission by predicted wait: a request is let in while the work ahead of it would let it start
within ``max_wait_s``; past that it is refused at once (503 with ``Retry-After``: the predicted
wait), before its upload is read.

The prediction is queueing arithmetic on running estimates, no model of its own:

    decode backlog = requests in progress x seconds between two decodes finishing
    encode backlog = requests in progress x frames per request x encoder seconds per frame
    predicted wait = the larger of the two (the stages run side by side)

The seconds between two decodes finishing are measured over the last decodes that finished while
every worker was busy (the stage's real rate, handoffs and a CPU shared with the event loop
included); until then a worker's busy time per file / the workers stands in for it. The busy time
and the encoder's time per frame are exponentially weighted means.

Requests whose upload is still arriving count too while it arrives: in a burst, every request
is admitted while its body streams in, before any reaches a decoder, and leaving them out would
admit the whole burst. An upload that has sent nothing for ``STALLED_S`` is *stalled*: it leaves
the prediction and the cap (a client trickling a byte every few seconds holds no decode slot;
so does one whose rate, after ``STALLED_S``, cannot bring the rest of its Content-Length before
its deadline;
the server's upload deadline, ``server/uploads.py``, ends it) and is capped apart, at
``STALLED_PER_SLOT x max_in_flight`` stalled uploads. ``uploading`` and ``working`` are counted apart (``/metrics``),
and ``max_in_flight`` caps working and live uploads together whatever the prediction, which
bounds memory and spool space. A cold server (no estimate yet) admits up to that cap.
"""

from __future__ import annotations

import collections
import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from text4vis.engine.errors import Overloaded

SMOOTHING = 0.2  # weight of the newest measurement in the running means
STALLED_S = 2.0  # an upload silent this long is stalled: out of the prediction, capped apart
STALLED_PER_SLOT = 4  # stalled uploads allowed per max_in_flight: a socket and a partial spool file each
RATE_WINDOW = 64  # decodes whose finishes measure the stage's rate
MIN_FINISHES = 8


@dataclass
class Estimates:
    """Running means of the stages' service times; ``None`` until first measured."""

    decode_s_per_file: float | None = None  # a worker's busy time per file
    encode_s_per_frame: float | None = None
    frames_per_request: float = 8.0
    _finishes: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=RATE_WINDOW))

    def decoded(self, seconds: float, finished_at: float, saturated: bool) -> None:
        """A decode took a worker ``seconds`` and finished at ``finished_at`` (monotonic);
        ``saturated``: every worker was busy, so the finishes' spacing is the stage's rate."""
        self.decode_s_per_file = _mean(self.decode_s_per_file, seconds)
        if not saturated:
            self._finishes.clear()  # a gap in the load is no measure of the rate
        self._finishes.append(finished_at)

    @property
    def decode_interval_s(self) -> float | None:
        """Seconds between two decodes finishing while every worker was busy: the span of the last
        finishes over their count (a windowed rate; a running mean of single gaps dips after a
        bunch of finishes and would admit too many just then)."""
        if len(self._finishes) < MIN_FINISHES:
            return None
        return (self._finishes[-1] - self._finishes[0]) / (len(self._finishes) - 1)

    def encoded(self, seconds: float, frames: int) -> None:
        if frames > 0:
            self.encode_s_per_frame = _mean(self.encode_s_per_frame, seconds / frames)

    def requested(self, frames: int) -> None:
        self.frames_per_request = _mean(self.frames_per_request, float(frames)) or float(frames)


class Admission:
    """Counts requests (uploading, working) and admits by predicted wait. Event-loop only."""

    def __init__(
        self, workers: int, max_wait_s: float, max_in_flight: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.workers = max(1, workers)
        self.max_wait_s = max_wait_s
        self.max_in_flight = max_in_flight
        self.estimates = Estimates()
        self.clock = clock
        self._uploads: set[Ticket] = set()  # admitted, body still arriving
        self.working = 0  # upload complete: waiting for or in a decoder, encoding, scoring

    @property
    def uploading(self) -> int:
        return len(self._uploads)

    @property
    def stalled(self) -> int:
        """Uploads that have sent nothing for ``STALLED_S``, or arrive too slowly to be whole
        before their deadline (:meth:`Ticket.doomed`)."""
        now = self.clock()
        return sum(1 for t in self._uploads if t.doomed(now))

    @property
    def in_flight(self) -> int:
        """Requests the stages will have to serve: working, and uploads still arriving (not stalled)."""
        return self.uploading - self.stalled + self.working

    def predicted_wait_s(self) -> float | None:
        """Seconds a request admitted now would wait before its own work starts; None when cold."""
        e = self.estimates
        if e.decode_s_per_file is None:
            return None
        per_request = e.decode_interval_s if e.decode_interval_s is not None else e.decode_s_per_file / self.workers
        decode = self.in_flight * per_request
        encode = self.in_flight * e.frames_per_request * (e.encode_s_per_frame or 0.0)
        return max(decode, encode)

    def check(self) -> None:
        """Raise :class:`Overloaded` (with its ``retry_after_s``) when a new request should not enter."""
        if self.stalled >= STALLED_PER_SLOT * self.max_in_flight:
            raise Overloaded(
                f"{self.stalled} uploads to this server have stalled ({STALLED_PER_SLOT} x the server's "
                "max_decode_queue); retry in a moment",
                retry_after_s=1,
            )
        if self.in_flight >= self.max_in_flight:
            wait = self.predicted_wait_s()
            raise Overloaded(
                f"{self.in_flight} classify requests are in progress (the server's max_decode_queue); "
                "retry in a moment",
                retry_after_s=_retry_after(wait),
            )
        wait = self.predicted_wait_s()
        if wait is not None and wait > self.max_wait_s:
            raise Overloaded(
                f"the work ahead would take about {wait:.1f} s to start on, more than this server's "
                f"max_queue_wait_s of {self.max_wait_s:g} s; retry later",
                retry_after_s=_retry_after(wait),
            )

    @contextlib.contextmanager
    def admit(self) -> Iterator[Ticket]:
        """Admit one request (or raise :class:`Overloaded`); it counts as uploading until
        :meth:`Ticket.uploaded`, and leaves the counts when the block ends."""
        self.check()
        ticket = Ticket(self)
        self._uploads.add(ticket)
        try:
            yield ticket
        finally:
            if ticket.is_working:
                self.working -= 1
            else:
                self._uploads.discard(ticket)


class Ticket:
    """One admitted request's place in the counts."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.is_working = False
        self.began = self.last_progress = admission.clock()
        self.received = 0
        self.expected: int | None = None  # the upload's length (Content-Length), when known
        self.must_end_by = math.inf  # when the upload's deadline comes (the clock's time)

    def expect(self, total_bytes: int | None, within_s: float) -> None:
        """The upload will be ``total_bytes`` long and must be whole within ``within_s``."""
        self.expected = total_bytes
        self.must_end_by = self.began + within_s

    def progress(self, received: int | None = None) -> None:
        """Some of the upload arrived (``received`` bytes so far)."""
        self.last_progress = self._admission.clock()
        if received is not None:
            self.received = received

    def doomed(self, now: float) -> bool:
        """Silent for ``STALLED_S``, or, after ``STALLED_S``, arriving at a rate that cannot bring
        the rest before the deadline: a client trickling a byte a second is never silent for
        two, yet will never finish, and it held a decode slot and the prediction (70 of them
        turned every other request into a 503)."""
        if now - self.last_progress >= STALLED_S:
            return True
        elapsed = now - self.began
        if self.expected is None or elapsed < STALLED_S:
            return False
        rate = self.received / elapsed
        return self.expected - self.received > rate * max(0.0, self.must_end_by - now)

    def uploaded(self) -> None:
        """The upload is complete: the request is now work the stages will do."""
        if not self.is_working:
            self.is_working = True
            self._admission._uploads.discard(self)
            self._admission.working += 1


def _mean(old: float | None, new: float) -> float:
    return new if old is None else (1 - SMOOTHING) * old + SMOOTHING * new


def _retry_after(wait: float | None) -> int:
    """Whole seconds, at least 1: the predicted wait rounded up."""
    return max(1, math.ceil(wait or 0.0))
