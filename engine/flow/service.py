"""The one classify flow, for the server and the CLI alike.

    decode + sample + resize (worker processes)  ->  encode (the dynamic batcher: frames of
    concurrent requests share one backend call)  ->  temporal head + scoring (a thread)

:class:`ClassifyService` owns the three stages; the event loop only awaits them. The stages are
bounded: at most ``max_decode_queue`` files wait for or sit in a decoder and at most
``max_queue_frames`` frames wait for the encoder; past either, :class:`Overloaded` at once.

Timing keys of every result (milliseconds), one set for the server and ``t4v classify``:

``decode_wait``  waiting for a decode worker, and moving the frames back from it
``decode``       opening the file and decoding the sampled frames (in the worker)
``preprocess``   resize and crop (in the worker)
``encode``       waiting for a batch and the visual encoder
``classify``     temporal head, logits, top-k
``total``        all of the above, end to end
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from text4vis.engine.errors import Overloaded
from text4vis.engine.flow.batcher import DynamicBatcher
from text4vis.engine.flow.decode_pool import DecodePool
from text4vis.engine.flow.decode_worker import DecodeJob, PlanJob
from text4vis.engine.flow.pipeline import VideoPipeline
from text4vis.engine.flow.timeline import Segment
from text4vis.engine.vocab.classifier import Classifier, Prediction
from text4vis.models.limits import MediaLimits
from text4vis.models.video_input import Sampling
from text4vis.models.windows import TimelinePlan, Window

TIMING_KEYS = ("decode_wait", "decode", "preprocess", "encode", "classify", "total")


@dataclass
class ClassifyResult:
    file: str
    frame_indices: list[int]  # clip-major: clips x T indices
    predictions: list[Prediction]
    timing_ms: dict[str, float]  # TIMING_KEYS
    first_view: torch.Tensor  # uint8 [T, 3, S, S]: the frames of the first view (thumbnails)
    background: list[Prediction] = field(default_factory=list)  # nearest background labels, when one was given


class ClassifyService:
    """Start it once (``await start()``), call :meth:`classify` from any number of tasks, ``stop()``."""

    def __init__(
        self,
        pipeline: VideoPipeline,
        *,
        decode_workers: int = 2,
        max_decode_queue: int = 32,
        decode_budget_s: float = 20.0,
        limits: MediaLimits | None = None,
        max_batch_frames: int = 64,
        max_delay_ms: float = 10.0,
        max_queue_frames: int = 512,
        on_batch: Callable[[int, int], None] | None = None,
        on_decoded: Callable[[float], None] | None = None,
        on_worker_replaced: Callable[[str], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.limits = limits
        self.decode_pool = DecodePool(decode_workers, max_decode_queue, decode_budget_s, on_worker_replaced)
        self.batcher = DynamicBatcher(pipeline.encoder.encode, max_batch_frames, max_delay_ms, max_queue_frames,
                                      on_batch=on_batch)
        self._post = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postprocess")
        self.max_in_flight = max_decode_queue
        self.in_flight = 0  # requests admitted and not finished (changed on the event loop only)
        self._on_decoded = on_decoded

    async def start(self) -> None:
        """Start the batcher, warm the encoder on its thread and start the decode workers."""
        await self.batcher.start()
        await self.batcher.warmup(self.pipeline.encoder.warmup)
        await asyncio.to_thread(self.decode_pool.warmup)

    async def stop(self) -> None:
        await self.batcher.stop()
        self.decode_pool.close()
        self._post.shutdown(wait=True)

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Admission before anything is read: past ``max_decode_queue`` requests in flight (their
        uploads arriving, waiting for or in a decoder, encoding), :class:`Overloaded` at once, so
        an overloaded server answers 503 in milliseconds instead of after receiving the upload."""
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(f"{self.in_flight} classify requests are in progress; retry in a moment")
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def healthy(self) -> bool:
        """False once the encoder has failed (``/health/ready`` reports it)."""
        return self.pipeline.encoder.healthy()

    async def classify(
        self, media: Path, classifier: Classifier, *, frames: int = 8, clips: int = 1, crops: int = 1,
        top_k: int = 5, timeout_s: float = 60.0, name: str | None = None, sampling: Sampling = "exact",
        background: Classifier | None = None,
    ) -> ClassifyResult:
        """Classify one video or image file; ``timeout_s`` bounds every stage together.
        ``background``: also score it (open-set abstention, ``engine/vocab/abstain.py``)."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        job = DecodeJob(media, self.pipeline.preprocess, frames, clips, crops, self.pipeline.decoder, name=name,
                        sampling=sampling, gpu=self.pipeline.gpu, limits=self.limits)
        clip = await self.decode_pool.decode(job, timeout_s)
        t1 = time.perf_counter()
        worker_ms = clip.timing_ms["decode"] + clip.timing_ms["preprocess"]
        if self._on_decoded is not None:
            self._on_decoded(worker_ms / 1e3)
        emb = await self.batcher.embed(clip.pixels, timeout_s=max(deadline - time.monotonic(), 1e-3))
        t2 = time.perf_counter()
        loop = asyncio.get_running_loop()
        predictions, nearest = await loop.run_in_executor(self._post, self.pipeline.score, emb, clip.gather, classifier,
                                                          top_k, background)
        t3 = time.perf_counter()
        timing = {
            "decode_wait": max((t1 - t0) * 1e3 - worker_ms, 0.0), **clip.timing_ms,
            "encode": (t2 - t1) * 1e3, "classify": (t3 - t2) * 1e3, "total": (t3 - t0) * 1e3,
        }
        return ClassifyResult(
            file=name or str(media), frame_indices=clip.frame_indices, predictions=predictions,
            timing_ms={k: round(timing[k], 2) for k in TIMING_KEYS}, first_view=clip.pixels[clip.gather[0]],
            background=nearest,
        )

    async def plan_timeline(
        self, media: Path, *, window_s: float, stride_s: float, frames: int, max_windows: int, timeout_s: float,
        name: str | None = None,
    ) -> TimelinePlan:
        """Read when the video's frames are shown and cut it into windows (in a decode worker)."""
        job = PlanJob(media, window_s, stride_s, frames, max_windows, self.pipeline.decoder, name=name,
                      limits=self.limits)
        return await self.decode_pool.plan(job, timeout_s)

    async def timeline(
        self, media: Path, plan: TimelinePlan, classifier: Classifier, *, top_k: int = 5, timeout_s: float = 600.0,
        name: str | None = None, windows_per_job: int | None = None, jobs_in_flight: int | None = None,
    ) -> AsyncIterator[Segment]:
        """The segments of ``plan``, in order, each as soon as it and those before it are scored.

        The windows go to the decode workers a few at a time (``windows_per_job``, by default
        what fills one encoder batch), each group a job of its own: a long video never holds a
        worker for long, other requests' jobs take turns with its groups, and only the groups in
        flight (``jobs_in_flight``, by default one per decode worker) are in memory. Their frames
        join the encoder's shared batches. ``timeout_s`` bounds the whole timeline."""
        deadline = time.monotonic() + timeout_s
        windows = plan.windows
        if not windows:
            return
        frames = len(windows[0].indices)
        in_flight = jobs_in_flight or max(1, self.decode_pool.workers)
        # one batch's worth per job, but never so few jobs that workers idle on a short video
        per_job = windows_per_job or max(1, min(self.batcher.max_batch_frames // frames,
                                                math.ceil((len(windows) - 1) / in_flight)))
        # the first window alone: its segment comes back soonest (a file that fails there stops the rest)
        groups = [windows[:1], *(windows[i:i + per_job] for i in range(1, len(windows), per_job))]

        async def run(group: list[Window]) -> list[Segment]:
            remaining = max(deadline - time.monotonic(), 1e-3)
            job = DecodeJob(media, self.pipeline.preprocess, frames, 1, 1, self.pipeline.decoder, name=name,
                            gpu=self.pipeline.gpu, limits=self.limits, rows=[w.indices for w in group])
            clip = await self.decode_pool.decode(job, remaining, admitted=True)  # the plan was admitted
            emb = await self.batcher.embed(clip.pixels, timeout_s=max(deadline - time.monotonic(), 1e-3))
            loop = asyncio.get_running_loop()
            scored = await loop.run_in_executor(self._post, self.pipeline.score_rows, emb, clip.gather, classifier,
                                                top_k)
            return [Segment(w.start_s, w.end_s, w.indices, w.times_s, predictions, embedding)
                    for w, (predictions, embedding) in zip(group, scored, strict=True)]

        pending: collections.deque[asyncio.Task[list[Segment]]] = collections.deque()
        try:
            for group in groups:
                pending.append(asyncio.create_task(run(group)))
                if len(pending) >= in_flight:
                    for segment in await pending.popleft():
                        yield segment
            while pending:
                for segment in await pending.popleft():
                    yield segment
        finally:
            for task in pending:  # the stream ended early (an error, a client gone): stop the rest
                task.cancel()
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: a second failure is not logged as unhandled


def classify_files(
    pipeline: VideoPipeline, classifier: Classifier, paths: list[Path], *, frames: int = 8, clips: int = 1,
    crops: int = 1, top_k: int = 5, in_flight: int = 4, sampling: Sampling = "exact",
    on_done: Callable[[], None] | None = None,
) -> list[ClassifyResult | BaseException]:
    """The same flow, synchronously, for ``t4v classify``: files decode in threads while the encoder
    takes the frames of several files in one batch. One result or exception per path, in order;
    ``on_done()`` after each file (the CLI's progress bar)."""

    async def run() -> list[ClassifyResult | BaseException]:
        batch = pipeline.encoder.max_batch_size
        service = ClassifyService(pipeline, decode_workers=0, max_decode_queue=in_flight, max_batch_frames=batch,
                                  max_delay_ms=2.0, max_queue_frames=max(batch, in_flight * frames * clips * crops))
        gate = asyncio.Semaphore(in_flight)

        async def one(path: Path) -> ClassifyResult:
            async with gate:
                try:
                    return await service.classify(path, classifier, frames=frames, clips=clips, crops=crops,
                                                  top_k=top_k, timeout_s=24 * 3600, name=str(path), sampling=sampling)
                finally:
                    if on_done is not None:
                        on_done()

        await service.start()
        try:
            return await asyncio.gather(*(one(path) for path in paths), return_exceptions=True)
        finally:
            await service.stop()

    return asyncio.run(run())
