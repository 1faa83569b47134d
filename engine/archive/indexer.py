"""Index files into the archive: the classify flow's decode and encode (one code path,
:meth:`~text4vis.engine.flow.service.ClassifyService.embed`), then rows instead of predictions.

A file already stored (its SHA-256 is a row's id) is skipped before it is decoded, so a run
that stopped resumes where it was; a video and its windows commit together.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from text4vis.engine.archive.spec import ArchiveSpec
from text4vis.engine.archive.store import ArchiveRow, ArchiveTable, content_id, window_id
from text4vis.engine.flow.pipeline import VideoPipeline
from text4vis.engine.flow.service import ClassifyResult, ClassifyService, run_files
from text4vis.engine.flow.timeline import Segment
from text4vis.engine.request import ClassifyRequest, ClipSpec, RequestLimits, ResolvedClip
from text4vis.models.errors import InputError
from text4vis.models.windows import check_window

THUMBNAIL_PX = 128
MAX_WINDOWS = 2_000


@dataclass(frozen=True)
class Indexed:
    file: str
    id: str  # the video's content id
    rows: int  # rows new in the archive (0: it was already there)
    windows: int
    skipped: bool  # stored before this run: not decoded again


def thumbnail(frame: torch.Tensor, size: int = THUMBNAIL_PX) -> bytes:
    """uint8 ``[3, S, S]`` -> a small JPEG."""
    image = Image.fromarray(frame.permute(1, 2, 0).numpy()).resize((size, size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def spec_for(pipeline: VideoPipeline, text_model: str, weights_sha256: str, clip: ResolvedClip) -> ArchiveSpec:
    """The archive spec of what ``pipeline`` embeds with ``clip``'s frames and views."""
    return ArchiveSpec.of(
        text_model=text_model,
        weights_sha256=weights_sha256,
        temporal=str(getattr(pipeline.head, "kind", "mean")),
        preprocess=pipeline.preprocess,
        clip=clip,
        embed_dim=pipeline.encoder.embed_dim,
    )


def video_row(
    content: str,
    embedding: torch.Tensor,
    first_frame: torch.Tensor,
    duration_s: float | None,
    name: str,
    metadata: dict[str, Any] | None = None,
) -> ArchiveRow:
    """A video's row: ``embedding`` the fused, normalized video embedding scoring uses."""
    return ArchiveRow(
        id=content,
        content_id=content,
        name=name,
        kind="video",
        start_s=0.0,
        end_s=duration_s if duration_s is not None else 0.0,
        duration_s=duration_s,
        embedding=embedding.float().numpy().astype(np.float32),
        thumbnail=thumbnail(first_frame),
        metadata=metadata or {},
    )


def window_rows(
    content: str, segments: list[Segment], name: str, duration_s: float | None, metadata: dict[str, Any] | None = None
) -> list[ArchiveRow]:
    return [
        ArchiveRow(
            id=window_id(content, s.start_s, s.end_s),
            content_id=content,
            name=name,
            kind="window",
            start_s=s.start_s,
            end_s=s.end_s,
            duration_s=duration_s,
            embedding=s.embedding.float().numpy().astype(np.float32),
            thumbnail=thumbnail(s.first_frame) if s.first_frame is not None else None,
            metadata=metadata or {},
        )
        for s in segments
    ]


def classified_row(media: Path, result: ClassifyResult) -> ArchiveRow:
    """The archive row of what a classify request computed (``index=true``). Blocking (hashes the file)."""
    assert result.embedding is not None
    content = content_id(media)
    return video_row(content, result.embedding, result.first_view[0], result.duration_s, result.file)


def store_segments(table: ArchiveTable, media: Path, name: str, segments: list[Segment], duration_s: float) -> str:
    """Store a timeline's windows (``index=true`` on the timeline); the video's content id. Blocking."""
    content = content_id(media)
    table.add(window_rows(content, segments, name, duration_s))
    return content


async def embed_windows(
    service: ClassifyService, media: Path, window_s: float, frames: int, *, deadline: float, name: str | None = None
) -> list[Segment]:
    """The embeddings of ``media``'s windows of ``window_s`` seconds (stride = window, so they tile
    the video), as the timeline computes them."""
    plan = await service.plan_timeline(
        media,
        window_s=window_s,
        stride_s=window_s,
        frames=frames,
        max_windows=MAX_WINDOWS,
        timeout_s=max(deadline - time.monotonic(), 1e-3),
        name=name,
    )
    timeout = max(deadline - time.monotonic(), 1e-3)
    return [s async for s in service.timeline(media, plan, None, timeout_s=timeout, name=name)]


async def index_file(
    service: ClassifyService,
    table: ArchiveTable,
    media: Path,
    clip: ResolvedClip,
    *,
    name: str,
    windows_s: float | None = None,
    metadata: dict[str, Any] | None = None,
    timeout_s: float = 24 * 3600,
) -> Indexed:
    """Embed and store one file (and its windows), unless it is stored already."""
    deadline = time.monotonic() + timeout_s
    content = await asyncio.to_thread(content_id, media)
    if content in await asyncio.to_thread(table.stored, [content]):
        windows = len(await asyncio.to_thread(table.windows_of, content)) if windows_s is not None else 0
        return Indexed(name, content, 0, windows, skipped=True)
    embedded = await service.embed(media, clip, deadline=deadline, name=name)
    rows = [video_row(content, embedded.embedding, embedded.first_view[0], embedded.duration_s, name, metadata)]
    if windows_s is not None:
        segments = await embed_windows(service, media, windows_s, clip.frames, deadline=deadline, name=name)
        rows += window_rows(content, segments, name, embedded.duration_s, metadata)
    added = await asyncio.to_thread(table.add, rows)
    return Indexed(name, content, added, len(rows) - 1, skipped=False)


def index_files(
    pipeline: VideoPipeline,
    table: ArchiveTable,
    paths: list[Path],
    clip_spec: ClipSpec,
    *,
    windows_s: float | None = None,
    in_flight: int = 4,
    limits: RequestLimits | None = None,
    on_done: Callable[[], None] | None = None,
) -> list[Indexed | BaseException]:
    """``t4v index``: every path through the offline flow (decode threads, shared encoder batches)
    into ``table``. One result or exception per path, in order."""
    limits = limits or RequestLimits()
    clip = ClassifyRequest(labels=("-",), clip=clip_spec).resolved(limits)
    if windows_s is not None:
        check_window(windows_s, windows_s)
    spec = table.spec
    if (spec.frames, spec.views, spec.sampling) != (clip.frames, f"{clip.clips}x{clip.crops}", str(clip.sampling)):
        raise InputError(f"the archive table {table.name} stores other frames, views or sampling than these")

    async def one(service: ClassifyService, path: Path) -> Indexed:
        return await index_file(service, table, path, clip, name=str(path), windows_s=windows_s)

    return run_files(pipeline, None, paths, one, clip, in_flight=in_flight, limits=limits, on_done=on_done)
