"""Open a video or an image and decode only the frames asked for.

Videos go to PyAV by default (``auto``): it jumps to the keyframe before each sampled frame and
skips decoding the non-reference frames nobody asked for, which is exact and 1.4x cheaper than
decord on a 1080p H.264 clip (bench/decode.py). decord stays selectable (``decord``, and only
decord then); it is not the default because a decord call cannot be interrupted at a
request's deadline and has known hangs. ``nvdec`` is the same PyAV reader with FFmpeg's CUDA
hardware decoder (the GPU's NVDEC engines) doing the decoding; a file NVDEC cannot decode is read
on the CPU instead, with a log line (:func:`nvdec_problem` says whether a GPU can be used at all).
Still images (JPEG, PNG, WebP, ...) are 1-frame videos;
animated GIF/WebP are videos, read by Pillow. Frames come back as uint8 ``[N, H, W, 3]`` RGB.

One module per reader: ``images.py`` (Pillow), ``pyav.py`` (PyAV, NVDEC included), ``seeking.py``
(PyAV's keyframe-seeking read and the packet scan), ``decord_reader.py``, ``nvdec.py`` (the probe);
``base.py`` holds what they share.
"""

from __future__ import annotations

from pathlib import Path

from text4vis.models.errors import MediaError
from text4vis.models.limits import MediaLimits
from text4vis.models.media.base import (
    DECODERS,
    IMAGE_FORMATS,
    Decoder,
    FrameFn,
    FrameTimes,
    MediaInfo,
    MediaReader,
    renamed,
)
from text4vis.models.media.decord_reader import HAVE_DECORD, DecordReader
from text4vis.models.media.images import PillowReader
from text4vis.models.media.nvdec import nvdec_problem
from text4vis.models.media.pyav import PyAVReader

__all__ = [
    "DECODERS",
    "HAVE_DECORD",
    "IMAGE_FORMATS",
    "Decoder",
    "FrameFn",
    "FrameTimes",
    "MediaInfo",
    "MediaReader",
    "nvdec_problem",
    "open_media",
    "renamed",
]


def open_media(
    path: Path,
    decoder: Decoder = Decoder.AUTO,
    threads: int = 1,
    name: str | None = None,
    gpu: int = 0,
    limits: MediaLimits | None = None,
) -> MediaReader:
    """Open ``path`` as an image or a video within ``limits`` (the defaults of :class:`MediaLimits`
    when None). Raises :class:`MediaError` for anything undecodable, :class:`MediaLimitExceeded`
    past a limit.

    ``name`` is how messages call the file (an upload's own name rather than a spool path);
    ``gpu``: the CUDA device index the ``nvdec`` decoder uses.
    """
    try:
        return _open(path, decoder, threads, gpu, limits or MediaLimits())
    except MediaError as exc:
        raise renamed(exc, path, name) from None


def _open(path: Path, decoder: Decoder, threads: int, gpu: int, limits: MediaLimits) -> MediaReader:
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose from {', '.join(DECODERS)}")
    if not path.is_file():
        raise MediaError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise MediaError(f"{path.name}: the file is empty")
    image = PillowReader.try_open(path, limits)
    if image is not None:
        return image
    video = PyAVReader(path, threads, gpu=gpu if decoder == "nvdec" else None)  # reads the header only
    info = video.info
    limits.check(path.name, info.kind, info.width, info.height, info.num_frames, info.fps)
    if decoder == "decord":
        if not HAVE_DECORD:
            raise MediaError("decord is not installed on this platform; use the pyav decoder")
        video.close()
        return DecordReader(path, threads, (info.width, info.height))
    return video
