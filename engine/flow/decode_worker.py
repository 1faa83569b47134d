"""What runs in a decode worker process: one job, stopped at its deadline.

Kept free of torch (and of the model): a worker imports this module, ``models/video_input.py`` and
the decoders, nothing more, so each worker process stays small (``engine/flow/decode_pool.py`` starts
them; its own side converts the numpy results to tensors).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from text4vis.engine.errors import DecodeTimedOut
from text4vis.models.errors import MediaError, T4VError
from text4vis.models.limits import MediaLimits
from text4vis.models.media import Decoder
from text4vis.models.preprocess import PreprocessConfig
from text4vis.models.video_input import SampledFrames, Sampling, sample_clip, sample_frames
from text4vis.models.windows import TimelinePlan, plan_timeline

log = logging.getLogger(__name__)


@dataclass
class DecodeJob:
    path: Path
    preprocess: PreprocessConfig
    frames: int
    clips: int
    crops: int
    decoder: Decoder
    name: str | None = None  # for messages
    deadline: float | None = None  # time.time() after which nobody waits for the result
    sampling: Sampling = Sampling.EXACT
    gpu: int = 0  # the nvdec decoder's CUDA device index
    limits: MediaLimits | None = None  # None: MediaLimits' defaults
    rows: list[list[int]] | None = None  # these frames (a timeline's windows) instead of sampling

    def work(self) -> SampledFrames:
        if self.rows is not None:
            return sample_frames(self.path, self.preprocess, self.rows, self.decoder, self.name, self.gpu, self.limits)
        return sample_clip(
            self.path,
            self.preprocess,
            self.frames,
            self.clips,
            self.crops,
            self.decoder,
            self.name,
            self.sampling,
            self.gpu,
            self.limits,
        )


@dataclass
class PlanJob:
    """Plan a timeline (``models/windows.py``): reading a hostile file's packets is a worker's job too."""

    path: Path
    window_s: float
    stride_s: float
    frames: int
    max_windows: int
    decoder: Decoder
    name: str | None = None
    deadline: float | None = None
    limits: MediaLimits | None = None

    def work(self) -> TimelinePlan:
        return plan_timeline(
            self.path, self.window_s, self.stride_s, self.frames, self.max_windows, self.decoder, self.name, self.limits
        )


@contextmanager
def _alarm_at(deadline: float | None) -> Iterator[None]:
    """Raise DecodeTimedOut in this process's main thread at ``deadline``.

    A worker process stops decoding a file nobody waits for any more, instead of staying
    busy with it while other uploads queue. The alarm lands between Python bytecodes: a single
    long C call (one decord batch) finishes first. Threads (``workers == 0``) get only the
    check at the start.
    """
    if deadline is None:
        yield
        return
    remaining = deadline - time.time()
    if remaining <= 0:
        raise DecodeTimedOut("the deadline passed while the job waited for a worker")
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise DecodeTimedOut("the deadline passed while decoding")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, remaining)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(job: DecodeJob | PlanJob) -> SampledFrames | TimelinePlan:
    """Do one job. A failure of a decoder that is not one of ours (a library's own exception
    on a hostile file) is the file's problem: a MediaError naming the file, never a server error."""
    with _alarm_at(job.deadline):
        try:
            return job.work()
        except T4VError:
            raise
        except Exception as exc:  # noqa: BLE001 - RecursionError, MemoryError, a library's ValueError ...
            log.warning("decoding %s failed unexpectedly", job.name or job.path.name, exc_info=True)
            raise MediaError(
                f"{job.name or job.path.name}: the file could not be decoded ({type(exc).__name__})"
            ) from None


def serve(conn: Connection) -> None:
    """A worker process's loop: one job at a time from ``conn``, answered with ``("ok", clip)`` or
    ``("error", exception)``; numpy crosses the pipe (plain pickling, no shared memory). Ends when
    the server closes the pipe; the kernel kills it if the server dies first (Linux). Ctrl-C in a
    terminal reaches every process of the group: a worker ignores it (no traceback of its own) and
    ends when the server, which handles it, closes the pipe or stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init_worker()
    _die_with_parent()
    conn.send("ready")
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        answer: tuple[str, object]
        try:
            answer = ("ok", run(job))
        except (T4VError, DecodeTimedOut) as exc:
            answer = ("error", exc)
        try:
            conn.send(answer)
        except (BrokenPipeError, OSError):
            return


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: SIGKILL this process when the server's process ends, even a wedged one."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def init_worker() -> None:
    """A worker decodes on one thread (the pool runs one worker per core); libraries that read
    OMP_NUM_THREADS after this point keep to it."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
