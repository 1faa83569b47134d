"""What every reader shares: the reader contract, what a probe learns, frame timestamps, and the
small helpers of their error messages."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Literal

import av
import numpy as np

from text4vis.models.choices import Decoder
from text4vis.models.errors import MediaError

FrameFn = Callable[[np.ndarray], np.ndarray]
DECODERS: tuple[Decoder, ...] = tuple(Decoder)
IMAGE_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}


@dataclass(frozen=True)
class MediaInfo:
    """What a probe learns without decoding the frames."""

    kind: Literal["video", "image", "animation"]
    num_frames: int
    width: int
    height: int
    fps: float | None
    decoder: str


class MediaReader(ABC):
    """An open file; :meth:`read` decodes frames by index, in the order given."""

    info: MediaInfo

    @abstractmethod
    def read(self, indices: Sequence[int], each: FrameFn | None = None, short_side: int | None = None) -> np.ndarray:
        """The frames at ``indices``, ``[N, H, W, 3]`` uint8. ``each``: applied to every distinct
        frame as soon as it is decoded (a resize), so full-size frames are not all held at once;
        the result then stacks what it returns. ``short_side``: videos read by PyAV come back with
        their short side scaled to it by FFmpeg's bicubic scaler, straight from the decoded YUV
        (cheaper than converting the full frame and resizing it, but not Pillow's pixels: see
        bench/decode.py); other readers ignore it."""

    def keyframes(self) -> list[int] | None:
        """Display indices of the keyframes (frames that decode on their own), or None if unknown."""
        return None

    def frame_times(self) -> FrameTimes | None:
        """When each frame is shown (videos read by PyAV), or None if unknown."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> MediaReader:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _check(self, indices: Sequence[int]) -> None:
        if not len(indices):
            raise ValueError("no frame indices")
        bad = [i for i in indices if not 0 <= i < self.info.num_frames]
        if bad:
            raise ValueError(f"frame indices {bad[:4]} outside 0..{self.info.num_frames - 1}")


@dataclass(frozen=True)
class FrameTimes:
    """When each frame of a video is shown, from its packets' timestamps (demuxing only, no
    decoding): right for variable frame rates, open GOPs and partial indexes alike."""

    pts: np.ndarray  # int64 [N]: presentation timestamps in display order (stream time units), distinct
    keys: list[int]  # display indices of the keyframes
    time_base: Fraction  # seconds per stream time unit
    end: int  # where the last frame ends (its timestamp plus its duration)

    def index_of(self, pts: int | None) -> int | None:
        """The display index of the frame shown at ``pts``; None for a timestamp no frame has."""
        if pts is None:
            return None
        i = int(np.searchsorted(self.pts, pts))
        return i if i < len(self.pts) and int(self.pts[i]) == pts else None


def renamed(exc: MediaError, path: Path, name: str | None) -> MediaError:
    """Keep server paths out of messages: the full path and the file name become ``name``."""
    name, text = name or path.name, str(exc)
    # one replacement: a name that holds the file name (the path as given) is not renamed again
    return type(exc)(text.replace(str(path), name) if str(path) in text else text.replace(path.name, name))


class OneSize:
    """Refuses a file whose frame size changes midway (MPEG-TS, multi-page TIFF), checked on the
    decoded frames before they are resized."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._shape: tuple[int, int] | None = None

    def check(self, shape: tuple[int, int]) -> None:
        """``shape``: height and width of the next decoded frame."""
        if self._shape is None:
            self._shape = shape
        elif shape != self._shape:
            shown = " and ".join(f"{w}x{h}" for h, w in sorted([self._shape, shape]))
            raise MediaError(
                f"{self._name}: the frame size changes inside the file ({shown}); re-encode it at one size"
            )


def short(exc: BaseException) -> str:
    """One short clause for a message: FFmpeg's own words, without its errno and file name."""
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:160]
