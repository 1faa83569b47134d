"""Decoding off the event loop: worker processes (or threads) that turn a file into crops."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from engine.errors import DeadlineExceeded, DecodeTimedOut, Overloaded
from models.errors import MediaError
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


def _run(job: DecodeJob) -> tuple[np.ndarray, np.ndarray, list[int], dict[str, float]]:
    with _alarm_at(job.deadline):
        clip = sample_clip(job.path, job.preprocess, job.frames, job.clips, job.crops, job.decoder, job.name,
                           job.sampling)
    # numpy, not tensors, crosses the process boundary (plain pickling, no shared-memory handles)
    return clip.pixels.numpy(), clip.gather.numpy(), clip.frame_indices, clip.timing_ms


def _init_worker() -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


class DecodePool:
    """``workers`` processes (spawned: safe with torch and CUDA), or 2 threads when ``workers == 0``.

    At most ``max_pending`` jobs wait for or run in a worker; one more is refused at once
    (``Overloaded``: a 503 with Retry-After) rather than queued until its deadline.
    """

    def __init__(self, workers: int, max_pending: int = 32) -> None:
        self.workers = workers
        self.max_pending = max_pending
        self.pending = 0  # changed on the event loop only
        self._executor = self._make()

    def _make(self) -> Executor:
        if self.workers == 0:
            return ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")
        ctx = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_init_worker)

    def warmup(self) -> None:
        """Start the processes now (imports take seconds) rather than on the first request.
        Threads need nothing (and must not run ``_init_worker``: it would make the whole process
        single-threaded)."""
        for f in [self._executor.submit(_init_worker) for _ in range(self.workers)]:
            f.result()

    async def decode(self, job: DecodeJob, timeout_s: float) -> SampledClip:
        if self.pending >= self.max_pending:
            raise Overloaded(f"{self.pending} uploads are waiting for a decoder; retry shortly")
        loop = asyncio.get_running_loop()
        job = replace(job, deadline=time.time() + timeout_s)  # the worker stops there too
        self.pending += 1
        try:
            future = loop.run_in_executor(self._executor, _run, job)
            pixels, gather, indices, timing = await asyncio.wait_for(future, timeout_s)
        except (TimeoutError, DecodeTimedOut):
            raise DeadlineExceeded(f"decoding took longer than {timeout_s:g} s") from None
        except BrokenProcessPool:
            # a decoder crashed its process on this file: replace the pool, refuse the file
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._make()
            raise MediaError(f"{job.name or job.path.name}: the decoder crashed on this file") from None
        finally:
            self.pending -= 1
        return SampledClip(torch.from_numpy(pixels), torch.from_numpy(gather), indices, timing)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
