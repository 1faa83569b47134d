"""Timelines: a long video cut into windows of time, each sampled as the method samples a video.

Window ``k`` covers ``[k * stride_s, k * stride_s + window_s)`` from the first frame's timestamp;
the frames shown inside it (by their timestamps, so variable frame rates give true times) are
sampled with the method's test-time formula (:func:`models.sampling.sample_indices`, one clip of
``T`` frames), exactly as if the window were a video of its own. Windows stop at the first one
reaching the end of the video; a window no frame falls in (a gap in a variable-rate recording)
is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from text4vis.models.errors import InputError, MediaError
from text4vis.models.limits import MediaLimits
from text4vis.models.media import Decoder, FrameTimes, open_media, renamed
from text4vis.models.sampling import MAX_FRAMES_PER_CLIP, sample_indices

MAX_WINDOW_S = 3600.0


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float  # the window's end, or the video's where it ends first
    indices: list[int]  # display indices of its T sampled frames
    times_s: list[float]  # when those frames are shown, from the first frame


@dataclass(frozen=True)
class TimelinePlan:
    duration_s: float
    windows: list[Window]


def window_count(duration_s: float, window_s: float, stride_s: float) -> int:
    """How many windows a video of ``duration_s`` gives (before leaving out empty ones)."""
    if duration_s <= window_s:
        return 1
    return 1 + math.ceil((duration_s - window_s) / stride_s - 1e-9)


def check_window(window_s: float, stride_s: float) -> None:
    if not 0 < window_s <= MAX_WINDOW_S or not 0 < stride_s <= MAX_WINDOW_S:
        raise InputError(f"window_s and stride_s must be above 0 and at most {MAX_WINDOW_S:g} seconds")


def plan_windows(
    times: FrameTimes,
    window_s: float,
    stride_s: float,
    frames: int,
    max_windows: int,
    name: str = "the video",
) -> TimelinePlan:
    """The windows of a video whose frames are shown at ``times`` (:class:`models.media.FrameTimes`).

    Boundaries are compared in the stream's own time units, so a window of 8 s over a 25 fps
    clip holds exactly its 200 frames. More than ``max_windows`` windows: InputError naming the
    setting, before any window is built.
    """
    check_window(window_s, stride_s)
    if not 1 <= frames <= MAX_FRAMES_PER_CLIP:
        raise InputError(f"frames must be 1..{MAX_FRAMES_PER_CLIP}, got {frames}")
    base = times.time_base
    offsets = times.pts - times.pts[0]  # display order, first frame at 0
    end = times.end - int(times.pts[0])
    duration_s = float(end * base)
    count = window_count(duration_s, window_s, stride_s)
    if count > max_windows:
        raise InputError(
            f"{name} is {duration_s:.0f} s long: {count} windows of {window_s:g} s every {stride_s:g} s, more than "
            f"the {max_windows} a timeline may have (T4V_MAX_TIMELINE_WINDOWS); use a longer stride_s"
        )

    def ticks(seconds: float) -> int:
        return round(Fraction(seconds) / base)

    windows = []
    for k in range(count):
        start, stop = ticks(k * stride_s), ticks(k * stride_s + window_s)
        lo, hi = (int(i) for i in np.searchsorted(offsets, [start, stop], side="left"))
        if hi > lo:
            chosen = (lo + sample_indices(hi - lo, frames)[0]).tolist()
            windows.append(
                Window(
                    start_s=round(float(start * base), 6),
                    end_s=round(float(min(stop, end) * base), 6),
                    indices=chosen,
                    times_s=[round(float(offsets[i] * base), 6) for i in chosen],
                )
            )
    return TimelinePlan(duration_s=round(duration_s, 6), windows=windows)


def plan_timeline(
    path: Path,
    window_s: float,
    stride_s: float,
    frames: int,
    max_windows: int,
    decoder: Decoder = Decoder.PYAV,
    name: str | None = None,
    limits: MediaLimits | None = None,
) -> TimelinePlan:
    """Open ``path`` (within ``limits``), read when its frames are shown, and plan its windows.
    Images and animations have no timeline: InputError."""
    label = name or path.name
    try:
        with open_media(
            path, Decoder.PYAV if decoder == Decoder.DECORD else decoder, name=name, limits=limits
        ) as media:
            if media.info.kind != "video":
                raise InputError(
                    f"{label} is {'an image' if media.info.kind == 'image' else 'an animation'}; "
                    "a timeline needs a video"
                )
            times = media.frame_times()
    except MediaError as exc:
        raise renamed(exc, path, name) from None
    if times is None:
        raise MediaError(f"{label}: the video's packets carry no usable timestamps; re-encode it for a timeline")
    return plan_windows(times, window_s, stride_s, frames, max_windows, label)
