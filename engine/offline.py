"""The engine offline, for the CLI: ``t4v classify`` and ``t4v index`` run every file through one
started :class:`~text4vis.engine.facade.Engine` whose decoders are threads (no worker processes),
a few files at a time, their frames sharing encoder batches, never refused (nobody else waits)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from text4vis.engine.archive.indexer import Indexed
from text4vis.engine.archive.store import Archive
from text4vis.engine.facade import DAY_S, ClassifyResult, Engine
from text4vis.engine.flow.options import FlowOptions
from text4vis.engine.request import ClassifyRequest, IndexRequest, RequestLimits, ResolvedClip
from text4vis.engine.runtime.build import Runtime
from text4vis.engine.vocab.registry import VocabRegistry
from text4vis.models.windows import check_window

T = TypeVar("T")


def run_files(
    engine: Engine,
    paths: list[Path],
    work: Callable[[Engine, Path], Awaitable[T]],
    *,
    in_flight: int = 4,
    on_done: Callable[[], None] | None = None,
) -> list[T | BaseException]:
    """``work(engine, path)`` for every path, ``in_flight`` files at a time on one started engine
    (the CLI's classify and index: decode on threads, the files' frames sharing encoder batches).
    One result or exception per path, in order; ``on_done()`` after each."""

    async def run() -> list[T | BaseException]:
        gate = asyncio.Semaphore(in_flight)

        async def one(path: Path) -> T:
            async with gate:
                try:
                    return await work(engine, path)
                finally:
                    if on_done is not None:
                        on_done()

        await engine.start()
        try:
            return await asyncio.gather(*(one(path) for path in paths), return_exceptions=True)
        finally:
            await engine.stop()

    return asyncio.run(run())


def offline_engine(
    runtime: Runtime,
    registry: VocabRegistry | None = None,
    archive: Archive | None = None,
    *,
    clip: ResolvedClip,
    in_flight: int = 4,
    limits: RequestLimits | None = None,
) -> Engine:
    """An engine for the CLI: decode on two threads (no worker processes), ``in_flight`` files at
    a time, never refused (nobody else is waiting)."""
    batch = runtime.pipeline.encoder.max_batch_size
    options = FlowOptions(
        decode_workers=0,
        max_decode_queue=in_flight,
        max_queue_wait_s=DAY_S,
        max_batch_frames=batch,
        max_delay_ms=2.0,
        max_queue_frames=max(batch, in_flight * clip.frames * clip.views),
    )
    return Engine(runtime, registry, archive, options=options, limits=limits)


def classify_files(
    runtime: Runtime,
    registry: VocabRegistry,
    request: ClassifyRequest,
    paths: list[Path],
    *,
    in_flight: int = 4,
    limits: RequestLimits | None = None,
    on_done: Callable[[], None] | None = None,
) -> list[ClassifyResult | BaseException]:
    """``t4v classify``: every path through the same engine, synchronously. One result or
    exception per path, in order."""
    limits = limits or RequestLimits()
    clip = request.check(limits)  # a bad request fails once, before any file
    engine = offline_engine(runtime, registry, clip=clip, in_flight=in_flight, limits=limits)

    async def one(engine: Engine, path: Path) -> ClassifyResult:
        return await engine.classify(path, request, timeout_s=DAY_S, name=str(path))

    return run_files(engine, paths, one, in_flight=in_flight, on_done=on_done)


def index_files(
    runtime: Runtime,
    archive: Archive,
    paths: list[Path],
    request: IndexRequest,
    *,
    in_flight: int = 4,
    limits: RequestLimits | None = None,
    on_done: Callable[[], None] | None = None,
) -> list[Indexed | BaseException]:
    """``t4v index``: every path embedded and stored, synchronously. One result or exception per
    path, in order."""
    limits = limits or RequestLimits()
    clip = request.clip.resolve(limits)
    if request.window_s is not None:
        check_window(request.window_s, request.window_s)
    engine = offline_engine(runtime, None, archive, clip=clip, in_flight=in_flight, limits=limits)

    async def one(engine: Engine, path: Path) -> Indexed:
        return await engine.index(path, request, name=str(path.resolve()))  # a path the row leads back to

    return run_files(engine, paths, one, in_flight=in_flight, on_done=on_done)
