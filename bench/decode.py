"""Sampled-frame decoding, decord vs PyAV: open a video, decode the 8 test-time frames, close.

    python bench/decode.py [--runs 5] [--frames 8] [--videos DIR]

Clips: the real ones in ../shared/data/videos (when present), a generated 10 s 1080p H.264 clip
and a generated 2 min 480x270 one with x264's default GOP (written once to bench/out/). Prints the
median time per video, videos/s for each decoder, the decord/PyAV ratio, and PyAV (keyframe
seeking) over "pyav-count" (PyAV decoding every frame up to the last sampled one, the baseline),
all from the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import av
import numpy as np

from engine.sampling import sample_indices
from models.media import HAVE_DECORD, _PyAVReader, open_media

OUT = Path(__file__).parent / "out"
SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def make_clip(path: Path, seconds: int, width: int, height: int, gop: int, fps: int = 30) -> Path:
    """A moving gradient with noise, H.264 (x264 'fast', keyframe every ``gop`` frames at most), yuv420p."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "fast", "g": str(gop), "crf": "23"}
        for i in range(seconds * fps):
            frame = np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256, (x + y - 3 * i) % 256], -1).astype(np.uint8)
            frame[::7, ::5] = rng.integers(0, 256, size=frame[::7, ::5].shape, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode_once(path: Path, decoder: str, frames: int) -> None:
    if decoder == "pyav-count":  # PyAV decoding every frame up to the last sampled one (no seeking)
        with _PyAVReader(path, threads=1, seek=False) as reader:
            reader.read(sample_indices(reader.info.num_frames, frames).reshape(-1).tolist())
        return
    with open_media(path, decoder) as media:  # type: ignore[arg-type]
        media.read(sample_indices(media.info.num_frames, frames).reshape(-1).tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--videos", type=Path, default=SHARED_VIDEOS)
    args = parser.parse_args()

    clips = sorted(p for p in args.videos.glob("*") if p.suffix in {".mp4", ".avi", ".mkv", ".webm"})
    clips.append(make_clip(OUT / "generated_1080p_10s.mp4", 10, 1920, 1080, gop=60))
    clips.append(make_clip(OUT / "generated_480x270_120s.mp4", 120, 480, 270, gop=250))  # x264's default GOP
    decoders = ["decord", "pyav", "pyav-count"] if HAVE_DECORD else ["pyav", "pyav-count"]
    print(f"sampled decode of {args.frames} frames per video, median of {args.runs} runs, one thread per decode")
    header = f"{'clip':34s} {'frames':>6s} {'size':>10s}"
    header += "".join(f" {d + ' ms':>14s} {d + ' v/s':>14s}" for d in decoders)
    print(header + ("  decord/pyav" if HAVE_DECORD else "") + "  pyav/pyav-count")
    for clip in clips:
        with open_media(clip, "pyav") as media:
            info = media.info
        row = f"{clip.name[:34]:34s} {info.num_frames:6d} {f'{info.width}x{info.height}':>10s}"
        speeds = {}
        for decoder in decoders:
            decode_once(clip, decoder, args.frames)  # warm the page cache
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                decode_once(clip, decoder, args.frames)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            speeds[decoder] = 1 / med
            row += f" {med * 1e3:14.1f} {1 / med:14.2f}"
        if HAVE_DECORD:
            row += f"  {speeds['decord'] / speeds['pyav']:11.2f}x"
        row += f"  {speeds['pyav'] / speeds['pyav-count']:14.2f}x"
        print(row)


if __name__ == "__main__":
    main()
