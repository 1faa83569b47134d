"""The one classify flow, for the server and the CLI alike.

    admission  ->  decode + sample + resize (worker processes)  ->  encode (the dynamic batcher:
    frames of concurrent requests share one backend call)  ->  temporal head + scoring (a thread)

:class:`ClassifyService` owns the stages and the vocabularies; the event loop only awaits them.
:meth:`ClassifyService.classify` takes one :class:`~text4vis.engine.request.ClassifyRequest`
(the route, ``t4v classify`` and the archive build the same object) and answers a
:class:`ClassifyResult` with the "none of these" decision. Admission (``admission.py``) refuses a
request whose predicted wait passes ``max_queue_wait_s`` before its upload is read; past
admission, the stages wait (bounded) rather than refuse.

Timing keys of every result (milliseconds), one set for the server and ``t4v classify``:

``vocab``        resolving the vocabulary (and the background, for "none of these")
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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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
from text4vis.engine.flow.pipeline import VideoPipeline
from text4vis.engine.flow.timeline import Segment
from text4vis.engine.request import ClassifyRequest, RequestLimits, ResolvedClip
from text4vis.engine.vocab.abstain import Abstention, decide
from text4vis.engine.vocab.classifier import Classifier, Prediction
from text4vis.engine.vocab.registry import VocabRegistry
from text4vis.models.errors import InputError
from text4vis.models.windows import TimelinePlan, Window

TIMING_KEYS = ("vocab", "decode_wait", "decode", "preprocess", "encode", "classify", "total")


@dataclass(frozen=True)
class VocabVersion:
    name: str
    version: int


@dataclass
class ClassifyResult:
    file: str
    vocab: VocabVersion | None  # None for ad-hoc labels
    model: str  # the text model the classifier was built with
    frame_indices: list[int]  # clip-major: clips x T indices
    predictions: list[Prediction]
    timing_ms: dict[str, float]  # TIMING_KEYS
    first_view: torch.Tensor  # uint8 [T, 3, S, S]: the frames of the first view (thumbnails)
    abstention: Abstention | None = None  # with abstain or min_score: the decision and the nearest background
    embedding: torch.Tensor | None = None  # the video embedding [D] the predictions scored (the archive stores it)
    duration_s: float | None = None


@dataclass
class EmbeddedClip:
    """One file through decode and encode: its normalized video embedding (views fused), before
    any vocabulary: what :meth:`ClassifyService.classify` scores and what the archive stores."""

    file: str
    embedding: torch.Tensor  # float32 [D]
    frame_indices: list[int]
    first_view: torch.Tensor  # uint8 [T, 3, S, S]
    duration_s: float | None
    timing_ms: dict[str, float]  # decode_wait, decode, preprocess, encode


class ClassifyService:
    """Start it once (``await start()``), call :meth:`classify` from any number of tasks, ``stop()``."""

    def __init__(
        self,
        pipeline: VideoPipeline,
        vocabularies: VocabRegistry | None,
        options: FlowOptions | None = None,
        limits: RequestLimits | None = None,
        hooks: FlowHooks | None = None,
    ) -> None:
        options, hooks = options or FlowOptions(), hooks or FlowHooks()
        self.pipeline = pipeline
        self.vocabularies = vocabularies
        self.options = options
        self.limits = limits or RequestLimits()
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
        """Admission before anything is read (:class:`~text4vis.engine.flow.admission.Admission`):
        :class:`Overloaded` at once when the predicted wait passes ``max_queue_wait_s`` (or
        ``max_decode_queue`` requests are in progress), so an overloaded server answers 503 in
        milliseconds; call ``ticket.uploaded()`` once the upload is in."""
        with self.admission.admit() as ticket:
            yield ticket

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

    def healthy(self) -> bool:
        """False once the encoder has failed (``/health/ready`` reports it)."""
        return self.pipeline.encoder.healthy()

    async def classifier_for(self, request: ClassifyRequest) -> tuple[Classifier, VocabVersion | None]:
        """The registered vocabulary the request names (and its version), or a classifier of its labels."""
        if self.vocabularies is None:
            raise InputError("this flow embeds videos only (the archive's indexing): it has no vocabularies")
        if request.vocab is not None:
            classifier, version = await asyncio.to_thread(self.vocabularies.classifier, request.vocab)
            return classifier, VocabVersion(request.vocab, version)
        assert request.labels is not None
        classifier = await asyncio.to_thread(
            self.vocabularies.ad_hoc,
            list(request.labels),
            list(request.templates) if request.templates else None,
            request.clean_labels,
        )
        return classifier, None

    async def embed(
        self,
        media: Path,
        clip_spec: ResolvedClip,
        *,
        deadline: float,
        name: str | None = None,
    ) -> EmbeddedClip:
        """Decode, sample and encode one file as ``clip_spec`` says: its video embedding (views
        fused), before any vocabulary. ``deadline`` (``time.monotonic()``) bounds every stage."""
        self.admission.estimates.requested(clip_spec.frames * clip_spec.views)
        t1 = time.perf_counter()
        job = DecodeJob(
            media,
            self.pipeline.preprocess,
            clip_spec.frames,
            clip_spec.clips,
            clip_spec.crops,
            self.pipeline.decoder,
            name=name,
            sampling=clip_spec.sampling,
            gpu=self.pipeline.gpu,
            limits=self.options.media_limits,
        )
        clip = await self.decode_pool.decode(job, max(deadline - time.monotonic(), 1e-3))
        t2 = time.perf_counter()
        worker_ms = clip.timing_ms["decode"] + clip.timing_ms["preprocess"]
        workers = self.decode_pool.workers or 2  # threads: 2
        self.admission.estimates.decoded(clip.busy_s, time.monotonic(), self.decode_pool.pending >= workers)
        if self._on_decoded is not None:
            self._on_decoded(worker_ms / 1e3)
        frame_emb = await self.batcher.embed(clip.pixels, timeout_s=max(deadline - time.monotonic(), 1e-3))
        video = await asyncio.get_running_loop().run_in_executor(
            self._post, self.pipeline.embed, frame_emb, clip.gather
        )
        t3 = time.perf_counter()
        timing = {
            "decode_wait": max((t2 - t1) * 1e3 - worker_ms, 0.0),
            **clip.timing_ms,
            "encode": (t3 - t2) * 1e3,
        }
        return EmbeddedClip(
            file=name or str(media),
            embedding=video,
            frame_indices=clip.frame_indices,
            first_view=clip.pixels[clip.gather[0]],
            duration_s=clip.duration_s,
            timing_ms=timing,
        )

    async def classify(
        self,
        media: Path,
        request: ClassifyRequest,
        *,
        timeout_s: float = 60.0,
        name: str | None = None,
    ) -> ClassifyResult:
        """Classify one video or image file as ``request`` asks; ``timeout_s`` bounds every stage
        together. :class:`InputError` for a request outside the limits, before anything is decoded."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        clip_spec = request.resolved(self.limits)
        classifier, vocab = await self.classifier_for(request)
        policy = request.abstain.resolved(classifier.abstain)
        background = None
        if policy.score_background:
            assert self.vocabularies is not None  # classifier_for found a classifier
            background = await asyncio.to_thread(self.vocabularies.background, classifier, policy.background)
        t1 = time.perf_counter()
        clip = await self.embed(media, clip_spec, deadline=deadline, name=name)
        t3 = time.perf_counter()
        predictions, nearest = await asyncio.get_running_loop().run_in_executor(
            self._post, self.pipeline.score, clip.embedding, classifier, request.top_k, background
        )
        t4 = time.perf_counter()
        abstention = decide(predictions[0], nearest, policy.margin, policy.min_score) if policy.decides else None
        timing = {
            "vocab": (t1 - t0) * 1e3,
            **clip.timing_ms,
            "classify": (t4 - t3) * 1e3,
            "total": (t4 - t0) * 1e3,
        }
        return ClassifyResult(
            file=clip.file,
            vocab=vocab,
            model=classifier.text_model,
            frame_indices=clip.frame_indices,
            predictions=predictions,
            timing_ms={k: round(timing[k], 2) for k in TIMING_KEYS},
            first_view=clip.first_view,
            abstention=abstention,
            embedding=clip.embedding,
            duration_s=clip.duration_s,
        )

    async def plan_timeline(
        self,
        media: Path,
        *,
        window_s: float,
        stride_s: float,
        frames: int,
        max_windows: int,
        timeout_s: float,
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
        return await self.decode_pool.plan(job, timeout_s)

    async def timeline(
        self,
        media: Path,
        plan: TimelinePlan,
        classifier: Classifier | None,
        *,
        top_k: int = 5,
        timeout_s: float = 600.0,
        name: str | None = None,
        windows_per_job: int | None = None,
        jobs_in_flight: int | None = None,
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
        per_job = windows_per_job or max(
            1, min(self.batcher.max_batch_frames // frames, math.ceil((len(windows) - 1) / in_flight))
        )
        # the first window alone: its segment comes back soonest (a file that fails there stops the rest)
        groups = [windows[:1], *(windows[i : i + per_job] for i in range(1, len(windows), per_job))]

        async def run(group: list[Window]) -> list[Segment]:
            remaining = max(deadline - time.monotonic(), 1e-3)
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
            clip = await self.decode_pool.decode(job, remaining, admitted=True)  # the plan was admitted
            emb = await self.batcher.embed(clip.pixels, timeout_s=max(deadline - time.monotonic(), 1e-3))
            loop = asyncio.get_running_loop()
            scored = await loop.run_in_executor(
                self._post, self.pipeline.score_rows, emb, clip.gather, classifier, top_k
            )
            return [
                Segment(w.start_s, w.end_s, w.indices, w.times_s, predictions, embedding, clip.pixels[row[0]])
                for w, (predictions, embedding), row in zip(group, scored, clip.gather, strict=True)
            ]

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
    pipeline: VideoPipeline,
    vocabularies: VocabRegistry,
    request: ClassifyRequest,
    paths: list[Path],
    *,
    in_flight: int = 4,
    limits: RequestLimits | None = None,
    on_done: Callable[[], None] | None = None,
) -> list[ClassifyResult | BaseException]:
    """The same flow, synchronously, for ``t4v classify``: files decode in threads while the encoder
    takes the frames of several files in one batch. One result or exception per path, in order;
    ``on_done()`` after each file (the CLI's progress bar)."""
    limits = limits or RequestLimits()
    clip = request.resolved(limits)  # a bad request fails once, before any file

    async def one(service: ClassifyService, path: Path) -> ClassifyResult:
        return await service.classify(path, request, timeout_s=24 * 3600, name=str(path))

    return run_files(pipeline, vocabularies, paths, one, clip, in_flight=in_flight, limits=limits, on_done=on_done)


T = TypeVar("T")


def run_files(
    pipeline: VideoPipeline,
    vocabularies: VocabRegistry | None,
    paths: list[Path],
    work: Callable[[ClassifyService, Path], Awaitable[T]],
    clip: ResolvedClip,
    *,
    in_flight: int = 4,
    limits: RequestLimits | None = None,
    on_done: Callable[[], None] | None = None,
) -> list[T | BaseException]:
    """``work(service, path)`` for every path on one offline :class:`ClassifyService` (decode on
    threads, ``in_flight`` files at a time, their frames sharing encoder batches): the CLI's
    classify and index. One result or exception per path, in order; ``on_done()`` after each."""
    batch = pipeline.encoder.max_batch_size
    options = FlowOptions(
        decode_workers=0,
        max_decode_queue=in_flight,
        max_queue_wait_s=24 * 3600,
        max_batch_frames=batch,
        max_delay_ms=2.0,
        max_queue_frames=max(batch, in_flight * clip.frames * clip.views),
    )

    async def run() -> list[T | BaseException]:
        service = ClassifyService(pipeline, vocabularies, options, limits)
        gate = asyncio.Semaphore(in_flight)

        async def one(path: Path) -> T:
            async with gate:
                try:
                    return await work(service, path)
                finally:
                    if on_done is not None:
                        on_done()

        await service.start()
        try:
            return await asyncio.gather(*(one(path) for path in paths), return_exceptions=True)
        finally:
            await service.stop()

    return asyncio.run(run())
