"""What a decode worker costs per video: open, decode the sampled frames, resize and crop.

    python bench/decode.py [--runs 5] [--frames 8] [--videos DIR]

Methods, each CPU-seconds per video (one thread, resize and crop to 224 included), measured in
interleaved rounds (every method once per round, median over --runs rounds), with the ratio to the
named baseline from the same rounds:

  decord + Pillow       the baseline: decord's seeking reader, then Pillow's resize
  0.1 default           what version 0.1 ran: decord, then the torch port of Pillow's resize
  pyav seek             PyAV jumping to the keyframe before each sampled frame
  pyav exact (default)  what a decode worker runs: the same, skipping the non-reference frames
                        nobody asked for and draining the decoder after the last wanted frame
  pyav count            PyAV decoding every frame up to the last sampled one
  pyav fast             what a decode worker runs for sampling=fast: one cheap frame per segment
                        (other frames than the others; the keyframes' packet scan included)
  exact/fast, ffmpeg scaler   the same with --scaler ffmpeg: FFmpeg's bicubic scaler resizes as PyAV
                        decodes (not Pillow's pixels: the mean difference is printed)
  torchcodec exact      torchcodec's CPU decoder (seek_mode=exact), then Pillow; only when
                        torchcodec is installed (with the system's FFmpeg libraries)

Every method's pixels are compared with a full decode's at the indices it reads, resized by Pillow
(``=`` identical, ``~e`` e levels off on average).
Clips: the real ones in ../shared/data/videos (when present) and generated H.264 (a moving gradient with noise, x264
'fast', so with B-frames): 1080p 10 s at GOP 12, 60 and 250, 1080p 60 s at GOP 60, 720p GOP 60, and
720p HEVC (x265) and VP9 (webm) at GOP 60 (written once to bench/out/). ``pyav count`` is left out
on the minute-long clip (it decodes the whole minute).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import cast

import av
import numpy as np
import torch

from text4vis.models.media import HAVE_DECORD, open_media
from text4vis.models.media.pyav import PyAVReader
from text4vis.models.preprocess import PreprocessConfig, Scaler, resize_and_crop
from text4vis.models.preprocess_torch import resize_and_crop_on_device
from text4vis.models.sampling import fast_indices, sample_indices
from text4vis.models.video_input import Sampling, sample_clip

OUT = Path(__file__).parent / "out"
SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


CODECS: dict[str, tuple[str, Callable[[int], dict[str, object]]]] = {  # encoder -> (container, options)
    "libx264": ("mp4", lambda gop: {"preset": "fast", "g": str(gop), "crf": "23"}),
    "libx265": ("mp4", lambda gop: {"preset": "fast", "x265-params": f"keyint={gop}:log-level=error"}),
    "libvpx-vp9": ("webm", lambda gop: {"g": str(gop), "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}),
}


def make_clip(
    path: Path, seconds: int, width: int, height: int, gop: int, fps: int = 30, codec: str = "libx264"
) -> Path:
    """A moving gradient with noise (keyframe every ``gop`` frames at most), yuv420p; H.264 by default."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    partial = path.with_name(path.name + ".part")  # renamed once whole: an interrupted run leaves no clip
    container_format, options = CODECS[codec]
    with av.open(str(partial), "w", format=container_format) as container:
        stream = cast(av.video.stream.VideoStream, container.add_stream(codec, rate=fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options(gop)
        for i in range(seconds * fps):
            frame = np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256, (x + y - 3 * i) % 256], -1).astype(np.uint8)
            frame[::7, ::5] = rng.integers(0, 256, size=frame[::7, ::5].shape, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    partial.replace(path)
    return path


def _seek(path: Path, indices: list[int], skip: bool) -> np.ndarray:
    """The PyAV reader's seeking path (keyframes from the index, else a packet scan), no fallback."""
    decoded = PyAVReader(path, threads=1)._read_by_seeking(sorted(set(indices)), skip=skip)
    if decoded is None:
        raise RuntimeError(f"{path.name}: not readable by seeking")
    return np.stack([decoded[i] for i in indices])


def _full_decode(path: Path, keep: set[int]) -> dict[int, np.ndarray]:
    """Every frame decoded in order (the reference), keeping only the ``keep`` ones (a minute of
    1080p would not fit in memory)."""
    with av.open(str(path)) as container:
        return {i: f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i in keep}


def _count(path: Path, indices: list[int]) -> np.ndarray:
    with PyAVReader(path, threads=1, seek=False) as reader:
        return reader.read(indices)


def _decord(path: Path, indices: list[int]) -> np.ndarray:
    with open_media(path, "decord") as media:
        return media.read(indices)


def _served(sampling: Sampling, scaler: Scaler = "pillow") -> Callable[[Path, list[int]], np.ndarray]:
    """What a decode worker runs (models/video_input.py: open, sample, decode, resize, crop); it
    picks the indices itself, and the run checks that they are the ones compared."""
    cfg = replace(CFG, scaler=scaler)

    def run(path: Path, indices: list[int]) -> np.ndarray:
        clip = sample_clip(path, cfg, len(indices), decoder="pyav", sampling=sampling)
        if clip.frame_indices != indices:
            raise RuntimeError(f"{path.name}: sampled {clip.frame_indices}, expected {indices}")
        return clip.pixels[clip.gather]

    return run


CFG = PreprocessConfig.for_mode("clip", 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
METHODS: dict[str, Callable[[Path, list[int]], np.ndarray]] = {  # each: [1, T, 3, 224, 224] uint8
    "decord + Pillow": lambda p, i: resize_and_crop(_decord(p, i), CFG),
    "0.1 default": lambda p, i: resize_and_crop_on_device(torch.from_numpy(_decord(p, i)), CFG).numpy(),
    "pyav seek": lambda p, i: resize_and_crop(_seek(p, i, skip=False), CFG),
    "pyav exact (default)": _served("exact"),
    "pyav count": lambda p, i: resize_and_crop(_count(p, i), CFG),
    "pyav fast": _served("fast"),
    "exact, ffmpeg scaler": _served("exact", "ffmpeg"),
    "fast, ffmpeg scaler": _served("fast", "ffmpeg"),
}


def _torchcodec(path: Path, indices: list[int]) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(str(path), seek_mode="exact", num_ffmpeg_threads=1, dimension_order="NHWC")
    return resize_and_crop(decoder.get_frames_at(indices).data.numpy(), CFG)


try:  # not a dependency: measured when installed (it needs the system's FFmpeg 4-8 libraries)
    import torchcodec.decoders  # noqa: F401

    METHODS["torchcodec exact"] = _torchcodec
except (ImportError, RuntimeError, OSError):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--videos", type=Path, default=SHARED_VIDEOS)
    parser.add_argument("--only", default="", help="only the clips whose name contains this")
    args = parser.parse_args()
    torch.set_num_threads(1)
    clips = sorted(p for p in args.videos.glob("*") if p.suffix in {".mp4", ".avi", ".mkv", ".webm"})
    for gop in (12, 60, 250):
        clips.append(make_clip(OUT / f"1080p_gop{gop}_10s.mp4", 10, 1920, 1080, gop=gop))
    clips.append(make_clip(OUT / "1080p_gop60_60s.mp4", 60, 1920, 1080, gop=60))
    clips.append(make_clip(OUT / "720p_gop60_10s.mp4", 10, 1280, 720, gop=60))
    clips.append(make_clip(OUT / "720p_hevc_gop60_10s.mp4", 10, 1280, 720, gop=60, codec="libx265"))
    clips.append(make_clip(OUT / "720p_vp9_gop60_10s.webm", 10, 1280, 720, gop=60, codec="libvpx-vp9"))
    clips = [c for c in clips if args.only in c.name]
    methods = {k: v for k, v in METHODS.items() if HAVE_DECORD or "decord" not in k and k != "0.1 default"}
    base = "decord + Pillow" if HAVE_DECORD else "pyav count"
    print(
        f"CPU-ms per video: decode {args.frames} sampled frames + resize + crop 224, one thread, median of "
        f"{args.runs} interleaved rounds; (x) = {base} / this, from the same rounds; = pixels identical to a "
        "full decode's, resized by Pillow; ~e: e levels off them on average"
    )
    print(f"{'clip':26s} {'size':>10s}" + "".join(f" {k:>22s}" for k in methods))
    for clip in clips:
        with open_media(clip, "pyav") as media:
            info = media.info
            keys = media.keyframes()
        exact_indices = sample_indices(info.num_frames, args.frames).reshape(-1).tolist()
        fast_indices_ = fast_indices(info.num_frames, args.frames, keys)
        used = {name: fast_indices_ if "fast" in name else exact_indices for name in methods}
        full = _full_decode(clip, {i for indices in used.values() for i in indices})
        error_of: dict[str, float | None] = {}  # mean difference from Pillow's pixels of a full decode
        for name in methods:
            if name == "pyav count" and info.num_frames > 600:
                error_of[name] = None  # decodes the whole minute: minutes per round, and no news
                continue
            try:
                expected = resize_and_crop(np.stack([full[i] for i in used[name]]), CFG)
                got = np.asarray(METHODS[name](clip, used[name])).reshape(expected.shape)
                error_of[name] = float(np.abs(got.astype(np.int16) - expected).mean())
            except RuntimeError:
                error_of[name] = None  # not readable that way (no usable index): left out
        times: dict[str, list[float]] = {k: [] for k in methods if error_of[k] is not None}
        for _ in range(args.runs):
            for name in times:
                t0 = time.process_time()
                methods[name](clip, used[name])
                times[name].append(time.process_time() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = f"{clip.name[:26]:26s} {f'{info.width}x{info.height}':>10s}"
        for name in methods:
            if name not in med:
                row += f" {'n/a':>22s}"
                continue
            error = error_of[name] or 0.0
            cell = f"{med[name] * 1e3:.0f} ({med[base] / med[name]:.2f}x){f'~{error:.1f}' if error else '='}"
            row += f" {cell:>22s}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
