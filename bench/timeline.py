"""Timeline throughput: a 10-minute generated 720p H.264 clip, windows of 8 s, against a real server.

    python bench/timeline.py [--runs 3] [--decode-workers 2] [--minutes 10]

Baseline, measured in the same rounds (interleaved): the same 75 windows as 75 separate uploads
of 8 s each (the clip cut at its keyframes, without re-encoding, so each piece holds exactly its
window's frames) classified by POST /classify with as many concurrent requests as the server
admits (2 per decode worker). Both sample 8 frames per window with the method's formula, so
both decode, encode and score the same frames. Per round: wall seconds and the server's CPU
seconds (its process and its decode workers, from /proc); also the time to the first segment of
a streamed timeline. Figures: medians over the rounds, and the median of the per-round ratios.

The server runs the tiny test model (random weights, a cheap encoder): this measures the
timeline's own machinery (planning, decoding groups of windows, batching) rather than the
encoder, which is the same for both. The clip is written once into bench/out (about 4 minutes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serve import free_port, start_server  # noqa: E402
from text4vis.models.clip_loader import TINY_ARCH  # noqa: E402

OUT = Path(__file__).parent / "out"
FPS, GOP = 30, 60  # a keyframe every 2 s exactly (no scene cuts), so 8-s pieces start on keyframes


def make_long_clip(path: Path, minutes: int, width: int = 1280, height: int = 720) -> Path:
    """A moving gradient with sparse noise, H.264 veryfast CRF 28 (about 3 Mbit/s at 720p)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"writing {path.name} ({minutes} min of {width}x{height}, once)...", flush=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    cycle = []  # two seconds of distinct frames, repeated: encoding dominates, not drawing
    for i in range(GOP):
        rgb = np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256, (x + y - 3 * i) % 256], -1).astype(np.uint8)
        rgb[::23, ::19] = rng.integers(0, 256, size=rgb[::23, ::19].shape, dtype=np.uint8)
        cycle.append(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p"))
    partial = path.with_name(path.name + ".part")
    with av.open(str(partial), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "28", "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0"}
        for i in range(minutes * 60 * FPS):
            frame = cycle[i % GOP]
            frame.pts = None
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    partial.replace(path)
    return path


def split(path: Path, seconds: float, directory: Path) -> list[Path]:
    """``path`` cut into pieces of ``seconds`` at its keyframes, packets copied (no re-encoding)."""
    directory.mkdir(parents=True, exist_ok=True)
    pieces: list[Path] = []
    with av.open(str(path)) as source:
        video = source.streams.video[0]
        base = video.time_base
        out: av.container.OutputContainer | None = None
        target = None
        offset = 0
        for packet in source.demux(video):
            if packet.dts is None:
                continue
            if packet.is_keyframe and packet.pts is not None and packet.pts * base >= len(pieces) * seconds - 1e-6:
                if out is not None:
                    out.close()
                pieces.append(directory / f"piece{len(pieces):03d}.mp4")
                out = av.open(str(pieces[-1]), "w")
                target = out.add_stream_from_template(video)
                offset = packet.pts
            assert out is not None and target is not None
            packet.pts -= offset
            packet.dts -= offset
            packet.stream = target
            out.mux(packet)
        if out is not None:
            out.close()
    return pieces


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live children (Linux /proc)."""
    total, todo = 0.0, [pid]
    tick = 100.0  # USER_HZ
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def timeline_round(url: str, clip: Path, window_s: float) -> float:
    with clip.open("rb") as f:
        r = httpx.post(
            f"{url}/classify/timeline",
            files={"file": (clip.name, f)},
            data={"vocab": "kinetics400", "window_s": str(window_s)},
            timeout=3600,
        )
    r.raise_for_status()
    return float(len(r.json()["segments"]))


def first_segment_s(url: str, clip: Path, window_s: float) -> float:
    """Seconds from sending a streamed timeline to its first segment line (upload included)."""
    t0 = time.perf_counter()
    with (
        clip.open("rb") as f,
        httpx.stream(
            "POST",
            f"{url}/classify/timeline",
            files={"file": (clip.name, f)},
            data={"vocab": "kinetics400", "window_s": str(window_s), "stream": "true"},
            timeout=3600,
        ) as r,
    ):
        r.raise_for_status()
        for line in r.iter_lines():
            if '"type":"segment"' in line:
                return time.perf_counter() - t0
    raise RuntimeError("no segment in the stream")


def separate_round(url: str, pieces: list[Path], concurrency: int) -> float:
    import asyncio

    async def go() -> int:
        todo = list(pieces)

        async def client(c: httpx.AsyncClient) -> int:
            done = 0
            while todo:
                piece = todo.pop(0)
                r = await c.post(
                    f"{url}/classify", files={"file": (piece.name, piece.read_bytes())}, data={"vocab": "kinetics400"}
                )
                r.raise_for_status()
                done += 1
            return done

        async with httpx.AsyncClient(timeout=600) as c:
            return sum(await asyncio.gather(*(client(c) for _ in range(concurrency))))

    return float(asyncio.run(go()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--window-s", type=float, default=8.0)
    args = parser.parse_args()

    clip = make_long_clip(OUT / f"720p_gop{GOP}_{args.minutes}min.mp4", args.minutes)
    serve_args = argparse.Namespace(
        model=TINY_ARCH, decode_workers=args.decode_workers, max_batch_frames=64, max_delay_ms=5.0
    )
    extra = (
        "--preset",
        "kinetics400",
        "--max-upload-bytes",
        str(2**30),
        "--max-decode-queue",
        str(2 * args.decode_workers),
    )
    rows: dict[str, list[float]] = {
        k: [] for k in ("t_wall", "t_cpu", "s_wall", "s_cpu", "first", "ratio_wall", "ratio_cpu")
    }
    with tempfile.TemporaryDirectory() as tmp:
        pieces = split(clip, args.window_s, Path(tmp) / "pieces")
        port = free_port()
        proc = start_server(serve_args, Path(tmp) / "data", port, extra)
        url = f"http://127.0.0.1:{port}"
        try:
            separate_round(url, pieces[:4], 2 * args.decode_workers)  # warm-up
            for _ in range(args.runs):
                c0, t0 = tree_cpu_s(proc.pid), time.perf_counter()
                windows = timeline_round(url, clip, args.window_s)
                c1, t1 = tree_cpu_s(proc.pid), time.perf_counter()
                done = separate_round(url, pieces, 2 * args.decode_workers)
                c2, t2 = tree_cpu_s(proc.pid), time.perf_counter()
                assert done == windows == len(pieces), (done, windows, len(pieces))
                rows["t_wall"].append(t1 - t0)
                rows["t_cpu"].append(c1 - c0)
                rows["s_wall"].append(t2 - t1)
                rows["s_cpu"].append(c2 - c1)
                rows["ratio_wall"].append((t2 - t1) / (t1 - t0))
                rows["ratio_cpu"].append((c2 - c1) / max(c1 - c0, 1e-9))
                rows["first"].append(first_segment_s(url, clip, args.window_s))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    med = {k: statistics.median(v) for k, v in rows.items()}
    n = len(pieces)
    size_mb = clip.stat().st_size / 2**20
    print(
        f"timeline: {clip.name} ({size_mb:.0f} MB, {args.minutes} min 720p30 H.264), {n} windows of "
        f"{args.window_s:g} s, 8 frames each; {TINY_ARCH}, {args.decode_workers} decode processes; median of "
        f"{args.runs} interleaved rounds"
    )
    print(
        f"  one timeline request:      {n / med['t_wall']:6.2f} windows/s  ({med['t_wall']:.1f} s wall, "
        f"{med['t_cpu']:.1f} server CPU-s; first segment of a streamed one after {med['first']:.2f} s)"
    )
    print(
        f"  {n} separate uploads:      {n / med['s_wall']:6.2f} windows/s  ({med['s_wall']:.1f} s wall, "
        f"{med['s_cpu']:.1f} server CPU-s; {2 * args.decode_workers} concurrent)"
    )
    print(
        f"  timeline vs separate uploads: {med['ratio_wall']:.2f}x faster (wall), {med['ratio_cpu']:.2f}x less "
        "server CPU (median of per-round ratios)"
    )


if __name__ == "__main__":
    main()
