"""Decoding off the event loop: worker processes (or threads) that turn a file into crops."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace

import torch

from engine.decode_worker import DecodeJob, init_worker, run
from engine.errors import DeadlineExceeded, DecodeTimedOut, Overloaded
from models.errors import MediaError


@dataclass
class DecodedClip:
    """A decode worker's result as tensors (the encoder's input and the views' rows)."""

    pixels: torch.Tensor  # uint8 [crops * U, 3, S, S]
    gather: torch.Tensor  # int64 [crops * clips, T]
    frame_indices: list[int]
    timing_ms: dict[str, float]


class DecodePool:
    """``workers`` processes (spawned: safe with torch and CUDA; each imports only
    ``engine/decode_worker.py`` and the decoders), or 2 threads when ``workers == 0``.

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
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=init_worker)

    def warmup(self) -> None:
        """Start the processes now (imports take seconds) rather than on the first request;
        threads need nothing."""
        for f in [self._executor.submit(init_worker) for _ in range(self.workers)]:
            f.result()

    async def decode(self, job: DecodeJob, timeout_s: float) -> DecodedClip:
        if self.pending >= self.max_pending:
            raise Overloaded(f"{self.pending} uploads are waiting for a decoder; retry shortly")
        loop = asyncio.get_running_loop()
        job = replace(job, deadline=time.time() + timeout_s)  # the worker stops there too
        self.pending += 1
        try:
            future = loop.run_in_executor(self._executor, run, job)
            clip = await asyncio.wait_for(future, timeout_s)
        except (TimeoutError, DecodeTimedOut):
            raise DeadlineExceeded(f"decoding took longer than {timeout_s:g} s") from None
        except BrokenProcessPool:
            # a decoder crashed its process on this file: replace the pool, refuse the file
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._make()
            raise MediaError(f"{job.name or job.path.name}: the decoder crashed on this file") from None
        finally:
            self.pending -= 1
        return DecodedClip(torch.from_numpy(clip.pixels), torch.from_numpy(clip.gather), clip.frame_indices,
                           clip.timing_ms)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
