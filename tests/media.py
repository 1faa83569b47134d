"""Test media written on the fly: videos with PyAV, images with Pillow."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import av
import numpy as np
from PIL import Image


def moving_square_frames(n: int, width: int = 96, height: int = 64, seed: int = 0) -> np.ndarray:
    """``n`` RGB frames of a coloured square moving over a gradient, uint8 ``[n, H, W, 3]``."""
    rng = np.random.default_rng(seed)
    color = rng.integers(64, 256, size=3)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    frames = np.repeat(base[None].astype(np.uint8), n, axis=0)
    side = max(4, min(width, height) // 4)
    for i in range(n):
        left = (i * 3) % max(width - side, 1)
        top = (i * 2) % max(height - side, 1)
        frames[i, top : top + side, left : left + side] = color
    return frames


def write_video(
    path: Path,
    frames: np.ndarray,
    fps: int = 25,
    codec: str = "libx264",
    rotation: int = 0,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode ``frames`` (uint8 ``[N, H, W, 3]``, even sizes) into ``path``.

    ``rotation``: a display rotation in degrees, counter-clockwise, as phones record portrait video.
    """
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        if options is not None:
            stream.options = options
        elif codec == "libx264":
            stream.options = {"preset": "ultrafast", "g": "12"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_gif(path: Path, frames: np.ndarray, duration_ms: int = 40) -> Path:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return path


@functools.cache
def generated_videos() -> dict[str, Path]:
    """Three real-looking clips written once per test session: two H.264 MP4s (340x256, 280 and 300
    frames, as Kinetics clips are stored) and an MPEG-4 AVI (320x240, 164 frames, as UCF-101's).
    Tests that only need "a video" use these; the real clips of ../shared/data are kept for the
    tests that need real content."""
    directory = Path(tempfile.mkdtemp(prefix="t4v-media-"))
    specs = {
        "clip_a.mp4": (280, 340, 256, "libx264", 1),
        "clip_b.mp4": (300, 340, 256, "libx264", 2),
        "clip_c.avi": (164, 320, 240, "mpeg4", 3),
    }
    out = {}
    for name, (n, width, height, codec, seed) in specs.items():
        frames = moving_square_frames(n, width, height, seed=seed)
        noise = np.random.default_rng(seed).integers(0, 3, size=frames.shape, dtype=np.uint8)
        out[name] = write_video(directory / name, frames + noise, codec=codec)  # texture: a realistic bitrate
    return out


LOSSLESS = {"preset": "ultrafast", "qp": "0", "g": "25"}  # H.264 lossless: a frame decodes the same in any file


def write_frames(path: Path, frames: np.ndarray, fps: int = 25, options: dict[str, str] | None = None) -> Path:
    """:func:`write_video`, lossless by default."""
    return write_video(path, frames, fps=fps, options=options or LOSSLESS)


def joined_parts(directory: Path, seconds: int = 4, fps: int = 25) -> tuple[Path, list[Path]]:
    """Three parts of ``seconds`` each with different generated content, as files of their own
    and joined into one video (lossless, so each part's frames are the same in both)."""
    n = seconds * fps
    parts = [moving_square_frames(n, 96, 64, seed=s) for s in (1, 2, 3)]
    parts[1] = 255 - parts[1]
    parts[2] = parts[2][:, ::-1].copy()
    files = [write_frames(directory / f"part{i}.mp4", p, fps) for i, p in enumerate(parts)]
    return write_frames(directory / "joined.mp4", np.concatenate(parts), fps), files
