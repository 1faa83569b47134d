"""The embed step: a file -> its normalized video embedding, for the server and the CLI alike.

    admission  ->  decode + sample + resize (worker processes)  ->  encode (the dynamic batcher:
    frames of concurrent requests share one backend call)  ->  temporal head, views fused (a thread)

:class:`Embedder` owns the stages; the event loop only awaits them. :meth:`Embedder.embed` is the
one path from a file to an embedding (``/classify``, ``t4v classify``, the archive's indexing,
few-shot examples); :meth:`Embedder.embed_windows` is the same for a timeline's windows.
Nothing here knows a vocabulary: scoring is the engine's (``engine/facade.py``). Admission
(``admission.py``) refuses a request whose predicted wait passes ``max_queue_wait_s`` before its
upload is read; past admission, the stages wait (bounded) rather than refuse.

Timing keys (milliseconds) of an embedding:

``decode_wait``  waiting for a decode worker, and moving the frames back from it
``decode``       opening the file and decoding the sampled frames (in the worker)
``preprocess``   resize and crop (in the worker)
``encode``       waiting for a batch, the visual encoder, the temporal head
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from text4vis.engine.flow.admission import Admission, Ticket
from text4vis.engine.flow.batcher import DynamicBatcher
from text4vis.engine.flow.decode_pool import DecodePool
from text4vis.engine.flow.decode_worker import DecodeJob, PlanJob
from text4vis.engine.flow.options import FlowHooks, FlowOptions
from text4vis.engine.request import ResolvedClip
from text4vis.engine.runtime.pipeline import VideoPipeline
from text4vis.models.windows import TimelinePlan, Window

T = TypeVar("T")


@dataclass
class EmbeddedVideo:
    """One file through decode and encode: its normalized video embedding (views fused), before
    any vocabulary: what a request scores, what the archive stores."""

    file: str
    embedding: torch.Tensor  # float32 [D]
    frame_indices: list[int]  # clip-major: clips x T indices
    first_view: torch.Tensor  # uint8 [T, 3, S, S]: the frames of the first view (thumbnails)
    duration_s: float | None
    timing_ms: dict[str, float]  # decode_wait, decode, preprocess, encode


@dataclass
class EmbeddedWindow:
    window: Window
    embedding: torch.Tensor  # float32 [D]: the window embedded as a video of its own (one view)
    first_frame: torch.Tensor  # uint8 [3, S, S]


class Embedder:
    """Start it once (``await start()``), call :meth:`embed` from any number of tasks, ``stop()``."""

    def __init__(self, pipeline: VideoPipeline, options: FlowOptions | None = None, hooks: FlowHooks | None = None):
        options, hooks = options or FlowOptions(), hooks or FlowHooks()
        self.pipeline = pipeline
        self.options = options
        self.admission = Admission(options.decode_workers or 2, options.max_queue_wait_s, options.max_decode_queue)
        self.decode_pool = DecodePool(
            options.decode_workers, options.max_decode_queue, options.decode_budget_s, hooks.on_worker_replaced
        )
        self.batcher = DynamicBatcher(
            pipeline.encoder.encode,
            options.max_batch_frames,
            options.max_delay_ms,
            options.max_queue_frames,
            on_batch=hooks.on_batch,
            on_encoded=self.admission.estimates.encoded,
        )
        self._post = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postprocess")
        self._on_decoded = hooks.on_decoded

    async def start(self) -> None:
        """Start the batcher, warm the encoder on its thread and start the decode workers."""
        await self.batcher.start()
        await self.batcher.warmup(self.pipeline.encoder.warmup)
        await asyncio.to_thread(self.decode_pool.warmup)

    async def stop(self) -> None:
        await self.batcher.stop()
        self.decode_pool.close()
        self._post.shutdown(wait=True)

    @contextlib.contextmanager
    def admit(self) -> Iterator[Ticket]:
        """Admission before anything is read: :class:`Overloaded` at once when the predicted wait
        passes ``max_queue_wait_s`` (or ``max_decode_queue`` requests are in progress); call
        ``ticket.uploaded()`` once the upload is in."""
        with self.admission.admit() as ticket:
            yield ticket

    def healthy(self) -> bool:
        """False once the encoder has failed (``/health/ready`` reports it)."""
        return self.pipeline.encoder.healthy()

    async def after(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on the post-processing thread (the head, scoring): off the event loop,
        one at a time."""
        return await asyncio.get_running_loop().run_in_executor(self._post, fn, *args)

    async def embed(
        self, media: Path, clip: ResolvedClip, *, deadline: float, name: str | None = None
    ) -> EmbeddedVideo:
        """Decode, sample and encode one file as ``clip`` says: its video embedding (views fused).
        ``deadline`` (``time.monotonic()``) bounds every stage."""
        self.admission.estimates.requested(clip.frames * clip.views)
        t1 = time.perf_counter()
        job = DecodeJob(
            media,
            self.pipeline.preprocess,
            clip.frames,
            clip.clips,
            clip.crops,
            self.pipeline.decoder,
            name=name,
            sampling=clip.sampling,
            gpu=self.pipeline.gpu,
            limits=self.options.media_limits,
        )
        frames = await self.decode_pool.decode(job, _left(deadline))
        t2 = time.perf_counter()
        worker_ms = frames.timing_ms["decode"] + frames.timing_ms["preprocess"]
        workers = self.decode_pool.workers or 2  # threads: 2
        self.admission.estimates.decoded(frames.busy_s, time.monotonic(), self.decode_pool.pending >= workers)
        if self._on_decoded is not None:
            self._on_decoded(worker_ms / 1e3)
        frame_emb = await self.batcher.encode(frames.pixels, timeout_s=_left(deadline))
        (video,) = await self.after(self.pipeline.fuse, frame_emb, [frames.gather])
        t3 = time.perf_counter()
        return EmbeddedVideo(
            file=name or str(media),
            embedding=video,
            frame_indices=frames.frame_indices,
            first_view=frames.pixels[frames.gather[0]],
            duration_s=frames.duration_s,
            timing_ms={
                "decode_wait": max((t2 - t1) * 1e3 - worker_ms, 0.0),
                **frames.timing_ms,
                "encode": (t3 - t2) * 1e3,
            },
        )

    async def plan_timeline(
        self,
        media: Path,
        *,
        window_s: float,
        stride_s: float,
        frames: int,
        max_windows: int,
        deadline: float,
        name: str | None = None,
    ) -> TimelinePlan:
        """Read when the video's frames are shown and cut it into windows (in a decode worker)."""
        job = PlanJob(
            media,
            window_s,
            stride_s,
            frames,
            max_windows,
            self.pipeline.decoder,
            name=name,
            limits=self.options.media_limits,
        )
        return await self.decode_pool.plan(job, _left(deadline))

    async def embed_windows(
        self,
        media: Path,
        plan: TimelinePlan,
        *,
        deadline: float,
        name: str | None = None,
        windows_per_job: int | None = None,
        jobs_in_flight: int | None = None,
    ) -> AsyncIterator[list[EmbeddedWindow]]:
        """The windows of ``plan``, in order, in groups, each group as soon as it and those before
        it are embedded.

        The windows go to the decode workers a few at a time (``windows_per_job``, by default
        what fills one encoder batch), each group a job of its own: a long video never holds a
        worker for long, other requests' jobs take turns with its groups, and only the groups in
        flight (``jobs_in_flight``, by default one per decode worker) are in memory. Their frames
        join the encoder's shared batches. ``deadline`` bounds the whole timeline."""
        windows = plan.windows
        if not windows:
            return
        frames = len(windows[0].indices)
        in_flight = jobs_in_flight or max(1, self.decode_pool.workers)
        # one batch's worth per job, but never so few jobs that workers idle on a short video
        per_job = windows_per_job or max(
            1, min(self.batcher.max_batch_frames // frames, math.ceil((len(windows) - 1) / in_flight))
        )
        # the first window alone: its segment comes back soonest (a file that fails there stops the rest)
        groups = [windows[:1], *(windows[i : i + per_job] for i in range(1, len(windows), per_job))]

        async def run(group: list[Window]) -> list[EmbeddedWindow]:
            job = DecodeJob(
                media,
                self.pipeline.preprocess,
                frames,
                1,
                1,
                self.pipeline.decoder,
                name=name,
                gpu=self.pipeline.gpu,
                limits=self.options.media_limits,
                rows=[w.indices for w in group],
            )
            decoded = await self.decode_pool.decode(job, _left(deadline), admitted=True)  # the plan was admitted
            frame_emb = await self.batcher.encode(decoded.pixels, timeout_s=_left(deadline))
            rows = [row[None] for row in decoded.gather]  # each window a one-view video
            videos = await self.after(self.pipeline.fuse, frame_emb, rows)
            return [
                EmbeddedWindow(w, video, decoded.pixels[row[0]])
                for w, video, row in zip(group, videos, decoded.gather, strict=True)
            ]

        pending: collections.deque[asyncio.Task[list[EmbeddedWindow]]] = collections.deque()
        try:
            for group in groups:
                pending.append(asyncio.create_task(run(group)))
                if len(pending) >= in_flight:
                    yield await pending.popleft()
            while pending:
                yield await pending.popleft()
        finally:
            for task in pending:  # the stream ended early (an error, a client gone): stop the rest
                task.cancel()
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: a second failure is not logged as unhandled


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` (monotonic), never zero (a timeout of 0 would mean none)."""
    return max(deadline - time.monotonic(), 1e-3)
