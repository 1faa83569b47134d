"""The text encoder, shared fairly and admitted by predicted wait (as the visual encoder's frames
are, ``engine/flow/admission.py``).

Prompts are encoded in chunks of :data:`CHUNK`, each under a first-come-first-served lock: a
request of a few labels waits for one chunk of a vocabulary of thousands, not for all of it (a
plain lock let one large request hold the encoder for its whole run, and every thread that
waited for it was a thread the server's other work did not have). A request whose prompts would
wait longer than ``max_wait_s`` behind the prompts already queued is refused at once
(:class:`Overloaded`, 503 with ``Retry-After``).
"""

from __future__ import annotations

import collections
import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from text4vis.engine.errors import Overloaded
from text4vis.models.text_encoder import TextEncoder

CHUNK = 256  # prompts per turn at the encoder
SMOOTHING = 0.2


class FairLock:
    """A lock granted in the order it was asked for (``threading.Lock`` lets a thread that just
    released it take it again ahead of those waiting)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: collections.deque[object] = collections.deque()
        self._held = False

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        me = object()
        with self._cond:
            self._waiting.append(me)
            while self._held or self._waiting[0] is not me:
                self._cond.wait()
            self._waiting.popleft()
            self._held = True
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()


class TextGate:
    """Thread-safe. ``max_wait_s``: the longest predicted wait behind queued prompts a new
    request is admitted to (``inf``: never refuse, the CLI's)."""

    def __init__(self, max_wait_s: float = math.inf) -> None:
        self.max_wait_s = max_wait_s
        self.queued = 0  # prompts admitted and not yet encoded
        self.seconds_per_prompt: float | None = None
        self._lock = threading.Lock()
        self._turns = FairLock()

    def predicted_wait_s(self) -> float:
        return self.queued * (self.seconds_per_prompt or 0.0)

    @contextlib.contextmanager
    def admit(self, prompts: int) -> Iterator[Callable[[int], None]]:
        """Admit ``prompts`` (or raise :class:`Overloaded`); the block calls what it is given
        with each number of prompts encoded, and whatever is left leaves the queue at its end."""
        with self._lock:
            wait = self.predicted_wait_s()
            if wait > self.max_wait_s:
                raise Overloaded(
                    f"the text encoder has {self.queued} prompts to encode ahead of these (about {wait:.0f} s), "
                    f"more than this server's max_queue_wait_s of {self.max_wait_s:g} s; retry later",
                    retry_after_s=max(1, math.ceil(wait)),
                )
            self.queued += prompts
        left = prompts

        def encoded(count: int) -> None:
            nonlocal left
            with self._lock:
                self.queued -= count
                left -= count

        try:
            yield encoded
        finally:
            with self._lock:
                self.queued -= left

    def encode(
        self, encoder: TextEncoder, prompts: Sequence[str], progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """``prompts``' embeddings (admitted first; :class:`Overloaded` when the wait is too long),
        a chunk per turn at the encoder."""
        out = []
        with self.admit(len(prompts)) as encoded:
            for start in range(0, len(prompts), CHUNK):
                chunk = list(prompts[start : start + CHUNK])
                with self._turns.hold():
                    t0 = time.perf_counter()
                    out.append(encoder.encode(chunk).numpy())
                    self._measured(time.perf_counter() - t0, len(chunk))
                encoded(len(chunk))
                if progress is not None:
                    progress(start + len(chunk), len(prompts))
        return np.concatenate(out)

    def _measured(self, seconds: float, prompts: int) -> None:
        per = seconds / prompts
        with self._lock:
            old = self.seconds_per_prompt
            self.seconds_per_prompt = per if old is None else (1 - SMOOTHING) * old + SMOOTHING * per
