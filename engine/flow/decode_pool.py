"""Decoding off the event loop: supervised worker processes (or threads) that turn a file into crops.

Each worker process decodes one file at a time, so a file that wedges or crashes its decoder costs
that file's request only: a worker silent past the file's budget (its own alarm did not stop it:
a C call that never returns) is killed and replaced, and a worker that dies is replaced; other
requests in flight were in other processes and are not touched. A worker that died of a crash
signal (SIGSEGV, SIGABRT...) blames the file (415); one killed from outside (SIGKILL: the OOM
killer, an operator) or that exited blames the server (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import torch

from text4vis.engine.errors import DeadlineExceeded, DecodeBudgetExceeded, DecoderLost, DecodeTimedOut, Overloaded
from text4vis.engine.flow.decode_worker import DecodeJob, PlanJob, run, serve
from text4vis.models.errors import MediaError
from text4vis.models.video_input import SampledFrames
from text4vis.models.windows import TimelinePlan

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
KILL_GRACE_S = 2.0  # a worker's own alarm answers at the budget; silent this much longer, it is killed


@dataclass
class DecodedFrames:
    """A decode worker's result as tensors (the encoder's input and the views' rows)."""

    pixels: torch.Tensor  # uint8 [crops * U, 3, S, S]
    gather: torch.Tensor  # int64 [crops * clips, T]
    frame_indices: list[int]
    timing_ms: dict[str, float]
    busy_s: float = 0.0  # how long a worker was taken by the job (its answer included): the admission's estimate
    duration_s: float | None = None  # the video's length, when its frame rate is known


def _timed(job: DecodeJob | PlanJob) -> tuple[SampledFrames | TimelinePlan, float]:
    """:func:`run` on a thread, and how long it took."""
    started = time.perf_counter()
    result = run(job)
    return result, time.perf_counter() - started


# a decoder that crashes on a file dies of one of these; any other end came from outside the file
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL})


def _fault_of(exitcode: int | None) -> str | None:
    """None when a dead worker's exit says its decoder crashed (the file's fault); else how it
    ended (killed by SIGKILL: the OOM killer or an operator; an exit of its own)."""
    if exitcode is not None and exitcode < 0 and -exitcode in CRASH_SIGNALS:
        return None
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"ended (exit code {exitcode})"


class _Worker:
    """One spawned process (safe with torch and CUDA; it imports only ``engine/flow/decode_worker.py``
    and the decoders) and the pipe its jobs and results travel on."""

    def __init__(self, main: Callable[[Connection], None]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process: BaseProcess = ctx.Process(target=main, args=(child,), daemon=True, name="t4v-decode")
        self.process.start()
        child.close()
        # ready once its imports are done (a second or two): that time is no file's budget
        ready = self.conn.poll(START_TIMEOUT_S)
        try:
            ready = ready and self.conn.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.stop()
            raise RuntimeError(f"a decode worker did not start within {START_TIMEOUT_S:g} s")

    def stop(self) -> None:
        """Kill at once: a wedged decoder ignores SIGTERM while it holds the GIL."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


class DecodePool:
    """``workers`` supervised processes, or 2 threads when ``workers == 0`` (no isolation: tests
    and the CLI's single files).

    At most ``max_pending`` jobs wait for or run in a worker; one more is refused at once
    (``Overloaded``: a 503 with Retry-After) rather than queued until its deadline. A job may use
    a worker for ``budget_s`` at most (and never past its request's deadline).
    """

    def __init__(
        self,
        workers: int,
        max_pending: int = 32,
        budget_s: float = 30.0,
        on_replaced: Callable[[str], None] | None = None,
        worker_main: Callable[[Connection], None] = serve,
    ) -> None:
        """``worker_main``: a worker process's loop (tests pass one whose decoder wedges or crashes)."""
        self.workers = workers
        self.max_pending = max_pending
        self.budget_s = budget_s
        self.pending = 0  # changed on the event loop only
        self._on_replaced = on_replaced
        self._worker_main = worker_main
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()  # starting workers: warm-up, first use, replacements
        self._closed = False
        # one waiting thread per pending job: it takes a worker, hands it the job and waits
        self._waiters = ThreadPoolExecutor(max_workers=max(1, max_pending), thread_name_prefix="decode-wait")
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode") if workers == 0 else None

    def warmup(self) -> None:
        """Start the processes now (imports take a second or two) rather than on the first request."""
        with self._start_lock:
            for _ in range(self.workers - len(self._all)):
                self._add()

    def capacity(self) -> int:
        """Worker processes alive (or 2 threads): what readiness reports."""
        if self._threads is not None:
            return 2
        with self._lock:
            return sum(w.process.is_alive() for w in self._all)

    async def decode(self, job: DecodeJob, timeout_s: float, admitted: bool = False) -> DecodedFrames:
        """The job's frames as tensors. ``admitted``: the request already holds its place (a
        timeline's later windows), so the job waits for a worker instead of being refused."""
        frames, busy_s = await self._submit(job, timeout_s, admitted)
        assert isinstance(frames, SampledFrames)
        return DecodedFrames(
            torch.from_numpy(frames.pixels),
            torch.from_numpy(frames.gather),
            frames.frame_indices,
            frames.timing_ms,
            busy_s,
            frames.duration_s,
        )

    async def plan(self, job: PlanJob, timeout_s: float) -> TimelinePlan:
        """A timeline's windows, read from the file in a worker."""
        plan, _ = await self._submit(job, timeout_s, admitted=False)
        assert isinstance(plan, TimelinePlan)
        return plan

    async def _submit(
        self, job: DecodeJob | PlanJob, timeout_s: float, admitted: bool
    ) -> tuple[SampledFrames | TimelinePlan, float]:
        """The job's result and the seconds a worker was busy with it."""
        if self.pending >= self.max_pending and not admitted:
            raise Overloaded(f"{self.pending} uploads are waiting for a decoder; retry shortly")
        loop = asyncio.get_running_loop()
        job = replace(job, deadline=time.time() + timeout_s)  # the worker stops there too
        self.pending += 1
        try:
            if self._threads is not None:
                return await asyncio.wait_for(loop.run_in_executor(self._threads, _timed, job), timeout_s)
            return await loop.run_in_executor(self._waiters, self._run_in_a_process, job)
        except (TimeoutError, DecodeTimedOut):
            raise DeadlineExceeded(f"decoding took longer than {timeout_s:g} s") from None
        finally:
            self.pending -= 1

    def _run_in_a_process(self, job: DecodeJob | PlanJob) -> tuple[SampledFrames | TimelinePlan, float]:
        """On a waiting thread: take an idle worker, give it the job, wait for its answer; a worker
        that dies or stays silent past the budget is replaced and only this job fails."""
        assert job.deadline is not None
        self.warmup()  # a no-op once the workers run
        try:
            worker = self._idle.get(timeout=max(0.0, job.deadline - time.time()))
        except queue.Empty:
            raise DecodeTimedOut("the deadline passed while the job waited for a worker") from None
        name = job.name or job.path.name
        stop_at = min(job.deadline, time.time() + self.budget_s)
        started = time.perf_counter()
        try:
            worker.conn.send(replace(job, deadline=stop_at))
            answered = worker.conn.poll(max(0.0, stop_at - time.time()) + KILL_GRACE_S)
            status, value = worker.conn.recv() if answered else ("silent", None)
        except (EOFError, OSError):
            status, value = "died", None
        if status == "silent":
            self._replace(worker, "timeout", f"{name}: no answer {KILL_GRACE_S:g} s past its budget")
            raise self._late(name, stop_at, job.deadline)
        if status == "died":
            worker.process.join(1.0)  # its exit code says who ended it
            fault = _fault_of(worker.process.exitcode)
            if fault is None:
                self._replace(worker, "crash", f"{name}: the decoder process died")
                raise MediaError(f"{name}: the decoder crashed on this file")
            self._replace(worker, "killed", f"{name}: the decode worker was {fault}")
            raise DecoderLost(
                f"the decode worker was {fault} while it decoded {name}: not the file's fault; send it again"
            )
        self._idle.put(worker)
        if status == "ok":
            return value, time.perf_counter() - started  # type: ignore[return-value]
        if isinstance(value, DecodeTimedOut):
            raise self._late(name, stop_at, job.deadline)
        raise value  # type: ignore[misc]  # the job's own error: MediaError, InputError, ...

    def _late(self, name: str, stop_at: float, deadline: float) -> BaseException:
        if stop_at < deadline:  # the file's budget ran out first: the file is the problem
            return DecodeBudgetExceeded(
                f"{name}: decoding took longer than the per-file budget of {self.budget_s:g} s "
                "(T4V_DECODE_BUDGET_S); send a shorter or smaller file"
            )
        return DecodeTimedOut("the deadline passed while decoding")

    def _add(self) -> None:
        if self._closed:
            return
        worker = _Worker(self._worker_main)
        with self._lock:
            if self._closed:
                worker.stop()
                return
            self._all.add(worker)
        self._idle.put(worker)

    def _replace(self, worker: _Worker, reason: str, why: str) -> None:
        log.warning("decode worker %s replaced (%s)", worker.process.pid, why)
        with self._lock:
            self._all.discard(worker)
        worker.stop()
        if self._on_replaced is not None:
            self._on_replaced(reason)
        self.warmup()

    def close(self) -> None:
        """Stop every worker process now: none outlives the server."""
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            with contextlib.suppress(Exception):
                worker.stop()
        self._waiters.shutdown(wait=False, cancel_futures=True)
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
