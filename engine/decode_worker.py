"""What runs in a decode worker process: one job, stopped at its deadline.

Kept free of torch (and of the model): a worker imports this module, ``models/video_input.py`` and
the decoders, nothing more, so each worker process stays small (``engine/decode_pool.py`` starts
them; its own side converts the numpy results to tensors).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.errors import DecodeTimedOut
from models.media import Decoder
from models.preprocess import PreprocessConfig
from models.video_input import SampledClip, Sampling, sample_clip


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
    sampling: Sampling = "exact"
    gpu: int = 0  # the nvdec decoder's CUDA device index


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


def run(job: DecodeJob) -> SampledClip:
    """Decode one job; numpy crosses the process boundary (plain pickling, no shared memory)."""
    with _alarm_at(job.deadline):
        return sample_clip(job.path, job.preprocess, job.frames, job.clips, job.crops, job.decoder, job.name,
                           job.sampling, job.gpu)


def init_worker() -> None:
    """A worker decodes on one thread (the pool runs one worker per core); libraries that read
    OMP_NUM_THREADS after this point keep to it."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
