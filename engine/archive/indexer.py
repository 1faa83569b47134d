"""Index files into the archive: the embed step (``flow/embedder.py``), then rows instead of
predictions. The row builders here are the only ones: ``index=true``, ``t4v index``, the upload
route and the Ray actors build their rows with them.

A file already stored (its SHA-256 is a row's id) is not decoded again, so a run that stopped
resumes where it was. Window rows go to the table of how they were made: T frames, one view (the
1x1 table of those frames), whatever the video's views and sampling; their video's row is
committed after them, so a video that is stored has its windows.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from text4vis.engine.archive.store import ArchiveRow, ArchiveTable, content_id, window_id
from text4vis.engine.flow.embedder import EmbeddedWindow, Embedder
from text4vis.engine.flow.timeline import Segment
from text4vis.engine.request import ResolvedClip

THUMBNAIL_PX = 128
MAX_WINDOWS = 2_000


@dataclass(frozen=True)
class Indexed:
    file: str
    id: str  # the video's content id
    rows: int  # rows new in the archive (0: it was already there)
    windows: int  # the video's window rows (stored now or before)
    skipped: bool  # stored before this run: not decoded again
    metadata_updated: bool = False  # a stored file's metadata changed (merged or replaced)
    names_added: int = 0  # names (paths, upload names) it was not yet known under


def thumbnail(frame: torch.Tensor, size: int = THUMBNAIL_PX) -> bytes:
    """uint8 ``[3, S, S]`` -> a small JPEG."""
    image = Image.fromarray(frame.permute(1, 2, 0).numpy()).resize((size, size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def _vector(embedding: torch.Tensor) -> np.ndarray:
    return embedding.float().numpy().astype(np.float32)


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
        embedding=_vector(embedding),
        thumbnail=thumbnail(first_frame),
        metadata=metadata or {},
    )


def window_row(
    content: str,
    start_s: float,
    end_s: float,
    embedding: torch.Tensor,
    first_frame: torch.Tensor | None,
    name: str,
    duration_s: float | None,
    metadata: dict[str, Any] | None = None,
) -> ArchiveRow:
    """One window's row: ``embedding`` the window embedded as a video of its own (one view)."""
    return ArchiveRow(
        id=window_id(content, start_s, end_s),
        content_id=content,
        name=name,
        kind="window",
        start_s=start_s,
        end_s=end_s,
        duration_s=duration_s,
        embedding=_vector(embedding),
        thumbnail=thumbnail(first_frame) if first_frame is not None else None,
        metadata=metadata or {},
    )


def store_windows(table: ArchiveTable, media: Path, name: str, segments: list[Segment], duration_s: float) -> str:
    """Store a timeline's windows (``index=true`` on the timeline); the video's content id. Blocking."""
    content = content_id(media)
    table.add([window_row(content, s.start_s, s.end_s, s.embedding, s.first_frame, name, duration_s) for s in segments])
    return content


async def embed_windows(
    flow: Embedder, media: Path, window_s: float, frames: int, *, deadline: float, name: str
) -> tuple[list[EmbeddedWindow], float]:
    """``media``'s windows of ``window_s`` seconds (stride = window: they tile the video), embedded
    as the timeline embeds them; and the video's duration."""
    plan = await flow.plan_timeline(
        media,
        window_s=window_s,
        stride_s=window_s,
        frames=frames,
        max_windows=MAX_WINDOWS,
        deadline=deadline,
        name=name,
    )
    windows = [w async for group in flow.embed_windows(media, plan, deadline=deadline, name=name) for w in group]
    return windows, plan.duration_s


async def index_file(
    flow: Embedder,
    videos: ArchiveTable,
    windows: ArchiveTable | None,
    media: Path,
    clip: ResolvedClip,
    *,
    name: str,
    content: str | None = None,
    window_s: float | None = None,
    metadata: dict[str, Any] | None = None,
    replace_metadata: bool = False,
    timeout_s: float = 24 * 3600,
) -> Indexed:
    """Embed and store one file in ``videos`` (and, with ``window_s``, its windows in
    ``windows``), unless stored already: what is stored is not decoded again; the windows a
    stored file lacks are added, and new ``metadata`` is merged into its rows' (replaces it with
    ``replace_metadata``). ``content``: the file's content id when already known."""
    deadline = time.monotonic() + timeout_s
    if content is None:
        content = await asyncio.to_thread(content_id, media)
    has_video = content in await asyncio.to_thread(videos.stored, [content])
    stored_windows = 0
    if windows is not None:
        stored_windows = len(await asyncio.to_thread(windows.windows_of, content))
    updated = False
    if has_video and (metadata or replace_metadata):
        updated = await asyncio.to_thread(videos.set_metadata, content, metadata or {}, replace_metadata)
        if windows is not None and windows is not videos and stored_windows:
            await asyncio.to_thread(windows.set_metadata, content, metadata or {}, replace_metadata)
    if has_video and (windows is None or stored_windows):
        return Indexed(name, content, 0, stored_windows, skipped=True, metadata_updated=updated)
    video: list[ArchiveRow] = []
    duration: float | None = None
    if not has_video:
        embedded = await flow.embed(media, clip, deadline=deadline, name=name)
        duration = embedded.duration_s
        video = [video_row(content, embedded.embedding, embedded.first_view[0], duration, name, metadata)]
    parts: list[ArchiveRow] = []
    if windows is not None and window_s is not None and not stored_windows:
        found, planned = await embed_windows(flow, media, window_s, clip.frames, deadline=deadline, name=name)
        duration = duration if duration is not None else planned
        parts = [
            window_row(content, w.window.start_s, w.window.end_s, w.embedding, w.first_frame, name, duration, metadata)
            for w in found
        ]
    if windows is videos:  # a 1x1 exact table holds both: one commit
        added = await asyncio.to_thread(videos.add, parts + video)
    else:
        added = await asyncio.to_thread(windows.add, parts) if windows is not None and parts else 0
        added += await asyncio.to_thread(videos.add, video) if video else 0
    return Indexed(name, content, added, len(parts) or stored_windows, skipped=False, metadata_updated=updated)
