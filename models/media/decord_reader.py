"""decord, the baseline reader (``--decoder decord``): x86-64 Linux wheels only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from text4vis.models.errors import MediaError
from text4vis.models.media.base import FrameFn, MediaInfo, MediaReader, short

try:  # decord has wheels for x86-64 Linux only; PyAV covers the rest
    import decord

    decord.logging.set_level(decord.logging.QUIET)  # its FFmpeg would write to our stderr
    HAVE_DECORD = True
except ImportError:  # pragma: no cover - depends on the platform
    HAVE_DECORD = False


class DecordReader(MediaReader):
    def __init__(self, path: Path, threads: int, size: tuple[int, int]) -> None:
        """``size``: width and height from PyAV's look at the file (it fails quietly on what is not
        a video, where decord's own FFmpeg writes to the process's stderr)."""
        self._path = path
        width, height = size
        try:
            self._vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=threads)
            n = len(self._vr)
            fps = float(self._vr.get_avg_fps())
        except Exception as exc:  # noqa: BLE001 - decord raises DECORDError, RuntimeError, ...
            raise MediaError(f"{path.name}: truncated or corrupt video (decord: {short(exc)})") from None
        if n < 1:
            raise MediaError(f"{path.name}: the video has no frames")
        self.info = MediaInfo("video", n, width, height, fps or None, "decord")

    def read(self, indices: Sequence[int], each: FrameFn | None = None, short_side: int | None = None) -> np.ndarray:
        self._check(indices)
        try:
            frames = self._vr.get_batch(list(indices)).asnumpy()
        except Exception as exc:  # noqa: BLE001
            raise MediaError(f"{self._path.name}: truncated or corrupt video ({short(exc)})") from None
        return frames if each is None else np.stack([each(f) for f in frames])

    def keyframes(self) -> list[int] | None:
        return [int(i) for i in self._vr.get_key_indices()]

    def close(self) -> None:
        del self._vr
