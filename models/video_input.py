"""The pixels a model sees of a file, for serving, evaluation and training alike: sample the
method's frame indices, decode each distinct frame once (``models/media/``), resize and crop
them as Pillow would (``models/preprocess.py``). Normalization runs where the encoder runs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from text4vis.models.choices import Sampling
from text4vis.models.errors import InputError, MediaError
from text4vis.models.limits import MediaLimits
from text4vis.models.media import Decoder, MediaInfo, MediaReader, open_media, renamed
from text4vis.models.preprocess import PreprocessConfig, crop_frames, resize_short_side
from text4vis.models.sampling import MAX_FRAMES_PER_CLIP, fast_indices, sample_indices


@dataclass
class SampledFrames:
    """Decoded, resized and cropped frames of one file, before normalization and encoding (numpy:
    this module imports no torch, so the decode workers that run it stay small)."""

    pixels: np.ndarray  # uint8 [crops * U, 3, S, S] for the U distinct sampled frames
    gather: np.ndarray  # int64 [crops * clips, T] rows of ``pixels`` forming each view
    frame_indices: list[int]
    timing_ms: dict[str, float]
    duration_s: float | None = None  # the video's length (frames / rate); None when the rate is unknown


SAMPLINGS: tuple[Sampling, ...] = tuple(Sampling)


def sample_clip(
    path: Path,
    preprocess: PreprocessConfig,
    frames: int = 8,
    clips: int = 1,
    crops: int = 1,
    decoder: Decoder = Decoder.AUTO,
    name: str | None = None,
    sampling: Sampling = Sampling.EXACT,
    gpu: int = 0,
    limits: MediaLimits | None = None,
) -> SampledFrames:
    """Decode the sampled frames of ``path`` (each distinct frame once), resize and crop them.

    ``sampling``: ``exact``, the reference's test-time indices; ``fast``, one cheap-to-decode frame
    per TSN segment (:func:`models.sampling.fast_indices`, one clip). ``name``: how error messages
    call the file (the server passes the upload's file name). ``gpu``: the CUDA device index of the
    ``nvdec`` decoder. ``limits``: what the file may be (:class:`models.media.MediaLimits`).
    """
    if not 1 <= frames <= MAX_FRAMES_PER_CLIP:
        raise InputError(f"frames must be 1..{MAX_FRAMES_PER_CLIP}, got {frames}")
    if sampling not in SAMPLINGS:
        raise InputError(f"sampling must be exact or fast, got {sampling!r}")
    if sampling == "fast" and clips != 1:
        raise InputError("sampling=fast takes one clip per video (views 1x1 or 1x3)")
    t0 = time.perf_counter()
    try:
        with open_media(path, decoder, name=name, gpu=gpu, limits=limits) as media:
            n = media.info.num_frames
            if sampling == "fast":
                indices = np.array([fast_indices(n, frames, media.keyframes())], dtype=np.int64)
            else:
                indices = sample_indices(n, frames, clips)
            return _decode_and_crop(media, indices, preprocess, crops, t0)
    except MediaError as exc:
        raise renamed(exc, path, name) from None


def sample_frames(
    path: Path,
    preprocess: PreprocessConfig,
    rows: list[list[int]],
    decoder: Decoder = Decoder.AUTO,
    name: str | None = None,
    gpu: int = 0,
    limits: MediaLimits | None = None,
) -> SampledFrames:
    """The frames ``rows`` names (display indices, one row of T per window of a timeline), each
    distinct frame decoded once; ``gather`` has one row per row of ``rows``."""
    t0 = time.perf_counter()
    try:
        with open_media(path, decoder, name=name, gpu=gpu, limits=limits) as media:
            indices = np.array(rows, dtype=np.int64)
            if indices.ndim != 2 or not indices.size:
                raise ValueError("rows must be a non-empty list of equally long index lists")
            return _decode_and_crop(media, indices, preprocess, 1, t0)
    except MediaError as exc:
        raise renamed(exc, path, name) from None


def _decode_and_crop(
    media: MediaReader,
    indices: np.ndarray,
    preprocess: PreprocessConfig,
    crops: int,
    t0: float,
) -> SampledFrames:
    """Decode the distinct frames of ``indices [clips, T]`` once, resize and crop them. Each frame
    is resized as soon as it is decoded, so full-size frames are never held together (64 frames
    of 1080p are 400 MB); the resizing is timed apart from the decoding."""
    unique, inverse = np.unique(indices, return_inverse=True)
    resizing = 0.0

    def resize(frame: np.ndarray) -> np.ndarray:
        nonlocal resizing
        start = time.perf_counter()
        out = resize_short_side(frame, preprocess)
        resizing += time.perf_counter() - start
        return out

    short_side = preprocess.resize if preprocess.scaler == "ffmpeg" else None  # then resize() finds it done
    resized = media.read(unique.tolist(), resize, short_side)
    t1 = time.perf_counter()
    pixels = crop_frames(resized, preprocess, crops)  # [crops, U, 3, S, S]
    t2 = time.perf_counter()
    inverse_t = inverse.reshape(indices.shape).astype(np.int64)
    gather = np.concatenate([inverse_t + c * len(unique) for c in range(crops)])
    return SampledFrames(
        pixels=pixels.reshape(-1, *pixels.shape[2:]),
        gather=gather,
        frame_indices=indices.reshape(-1).tolist(),
        timing_ms={"decode": (t1 - t0 - resizing) * 1e3, "preprocess": (resizing + t2 - t1) * 1e3},
        duration_s=_duration(media.info),
    )


def _duration(info: MediaInfo) -> float | None:
    if info.kind == "image":
        return 0.0
    return info.num_frames / info.fps if info.fps else None


def views(frames: SampledFrames) -> np.ndarray:
    """uint8 ``[crops * clips, T, 3, S, S]``: the frames of each view, in ``gather`` order."""
    return frames.pixels[frames.gather]
