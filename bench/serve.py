"""End-to-end serving benchmark on this machine, with its baselines measured in the same run.

    python bench/serve.py [--model ViT-B-32] [--clients 8] [--requests 24] [--decode-workers 1]

1. naive loop: per video, decord + open_clip's own preprocessing + encode_image, no server;
2. decode-only capacity: the server's decode stage (sample + decode + resize + crop) alone, in
   --decode-workers processes;
3. encode-only capacity: the encoder alone on batches of --max-batch-frames frames;
4. the server (`t4v serve`, random weights, CPU, 8 frames) with --clients concurrent clients
   uploading the real clips: videos/s, p50/p95/p99 latency, mean batch size;
5. PUT /vocab of the 400 Kinetics-400 labels: cold (nothing cached) and cached.
Each figure is the median of --runs runs.

    python bench/serve.py --scenario decode-bound [--runs 3] [--requests 8]

The decode-bound server: a cheap encoder (the tiny test model), one decode process per core, 1080p
H.264 uploads (bench/decode.py's clips): whole-server videos/s of the exact default, of
sampling=fast (with Pillow's resize and with FFmpeg's scaler) and of decord (version 0.1's
decoder, the baseline), each server started once and
loaded in interleaved rounds, with the ratios to decord from the same rounds.

    python bench/serve.py --scenario admission [--decode-workers 2] [--overload 10] [--seconds 30]

Admission by predicted wait: the tiny model, --decode-workers processes, the real clips. Bursts
of 16, 32 and 64 requests against the default server and against a fixed queue of twice the
workers (the old default), interleaved: 200s, 503s and the slowest answer. Then a sustained
--overload x overload (clients retrying as Retry-After tells them) against the default: goodput
against the unloaded capacity measured in the same run, accepted latency, refusal latency, and
Retry-After against the wait a retry really saw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch

from text4vis.engine.request import sample_indices
from text4vis.models.clip_loader import ClipSource, load_clip
from text4vis.models.preprocess import PreprocessConfig
from text4vis.models.presets import preset_labels
from text4vis.models.video_input import sample_clip

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def clips() -> list[Path]:
    found = sorted(p for p in SHARED_VIDEOS.glob("*") if p.suffix in {".mp4", ".avi"})
    if not found:
        sys.exit(f"no clips in {SHARED_VIDEOS}")
    return found


def naive_loop(model: str, videos: list[Path], n: int) -> float:
    """videos/s of a sequential loop: decord -> PIL -> open_clip preprocess -> encode_image."""
    import decord
    import open_clip
    from PIL import Image

    clip = load_clip(ClipSource(arch=model, random_init=True))
    preprocess = open_clip.image_transform(clip.image_size, is_train=False)
    text = torch.nn.functional.normalize(torch.randn(400, clip.embed_dim), dim=-1)

    def one(path: Path) -> None:
        vr = decord.VideoReader(str(path))
        frames = vr.get_batch(sample_indices(len(vr), 8).reshape(-1).tolist()).asnumpy()
        x = torch.stack([preprocess(Image.fromarray(f)) for f in frames])
        with torch.inference_mode():
            v = torch.nn.functional.normalize(clip.model.encode_image(x).mean(0), dim=-1)
            (100 * v @ text.T).softmax(-1)

    one(videos[0])
    t0 = time.perf_counter()
    for i in range(n):
        one(videos[i % len(videos)])
    return n / (time.perf_counter() - t0)


def _decode(path: Path, cfg: PreprocessConfig) -> int:
    torch.set_num_threads(1)
    return int(sample_clip(path, cfg, 8).pixels.shape[0])


def decode_capacity(videos: list[Path], n: int, workers: int) -> float:
    import open_clip

    cfg = PreprocessConfig.for_mode("clip", 224, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_decode, videos, [cfg] * len(videos)))  # start + warm
        t0 = time.perf_counter()
        list(pool.map(_decode, [videos[i % len(videos)] for i in range(n)], [cfg] * n))
        return n / (time.perf_counter() - t0)


def encode_capacity(model: str, batch_frames: int, seconds: float = 8.0) -> float:
    clip = load_clip(ClipSource(arch=model, random_init=True))
    x = torch.randn(batch_frames, 3, clip.image_size, clip.image_size)
    with torch.inference_mode():
        clip.model.visual(x)
        t0, frames = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            clip.model.visual(x)
            frames += batch_frames
    return frames / (time.perf_counter() - t0) / 8  # videos of 8 frames


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    args: argparse.Namespace,
    data_dir: Path,
    port: int,
    extra: tuple[str, ...] = (),
    ready_s: float = 300,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """``t4v serve`` with random weights on ``port``, once ready (``extra``: more serve options).
    Throughput runs admit every client (a deep --max-decode-queue) unless ``extra`` sets it."""
    queue = () if "--max-decode-queue" in extra else ("--max-decode-queue", "1024")
    cmd = [
        sys.executable,
        "-m",
        "text4vis.server.cli",
        "serve",
        "--model",
        args.model,
        "--random-init",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--decode-workers",
        str(args.decode_workers),
        "--max-batch-frames",
        str(args.max_batch_frames),
        "--max-delay-ms",
        str(args.max_delay_ms),
        "--max-queue-frames",
        str(max(512, args.max_batch_frames)),
        *queue,
        *extra,
    ]
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"the server did not become ready in {ready_s:.0f} s" + (f" (its log: {log})" if log else ""))


async def load(url: str, videos: list[Path], clients: int, n: int) -> tuple[float, list[float]]:
    data = [(p.name, p.read_bytes()) for p in videos]
    latencies: list[float] = []
    next_i = 0

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal next_i
        while next_i < n:
            name, body = data[next_i % len(data)]
            next_i += 1
            t0 = time.perf_counter()
            r = await c.post(f"{url}/classify", files={"file": (name, body)}, data={"vocab": "kinetics400"})
            r.raise_for_status()
            latencies.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(timeout=300) as c:
        await asyncio.gather(*(client(c) for _ in range(clients)))  # warm-up round
        next_i, latencies = 0, []
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        return n / (time.perf_counter() - t0), latencies


def batch_mean(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith(("t4v_batch_frames_sum", "t4v_batch_frames_count"))
    }
    return values["t4v_batch_frames_sum"] / max(values["t4v_batch_frames_count"], 1)


def decode_bound(args: argparse.Namespace) -> None:
    try:
        from bench.decode import OUT, make_clip
    except ModuleNotFoundError:  # run as a script (python bench/serve.py): bench/ itself is on the path
        from decode import OUT, make_clip  # type: ignore[no-redef]
    from text4vis.models.clip_loader import TINY_ARCH
    from text4vis.server.settings import available_cores

    clips = [make_clip(OUT / f"1080p_gop{gop}_10s.mp4", 10, 1920, 1080, gop=gop) for gop in (12, 60, 250)]
    workers = available_cores()
    configs = {
        "decord (0.1's decoder, baseline)": ("--decoder", "decord"),
        "exact (default)": (),
        "fast": ("--default-sampling", "fast"),
        "fast, --scaler ffmpeg": ("--default-sampling", "fast", "--scaler", "ffmpeg"),
    }
    serve_args = argparse.Namespace(model=TINY_ARCH, decode_workers=workers, max_batch_frames=64, max_delay_ms=5.0)
    rates: dict[str, list[float]] = {name: [] for name in configs}
    latencies: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {}
        try:
            for name, extra in configs.items():
                port = free_port()
                servers[name] = (start_server(serve_args, Path(tmp) / str(port), port, extra), port)
                httpx.put(
                    f"http://127.0.0.1:{port}/vocab/kinetics400",
                    json={"labels": preset_labels("kinetics400")},
                    timeout=300,
                ).raise_for_status()
            for _ in range(args.runs):
                for name, (_, port) in servers.items():
                    served, seconds = asyncio.run(load(f"http://127.0.0.1:{port}", clips, args.clients, args.requests))
                    rates[name].append(served)
                    latencies[name] += seconds
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=60)
    base = statistics.median(rates[next(iter(configs))])
    print(
        f"decode-bound server: {TINY_ARCH} (a cheap encoder), {workers} decode processes, {args.clients} clients, "
        f"{args.requests} uploads per round of 1080p H.264 10 s clips (GOP 12/60/250), 8 frames, median of "
        f"{args.runs} interleaved rounds"
    )
    for name in configs:
        med = statistics.median(rates[name])
        ms = np.array(latencies[name]) * 1e3
        print(
            f"  {name:34s} {med:6.2f} videos/s ({med / base:4.2f}x)  p50 {np.percentile(ms, 50):6.0f} ms  "
            f"p99 {np.percentile(ms, 99):6.0f} ms"
        )


async def _post(c: httpx.AsyncClient, url: str, name: str, body: bytes) -> httpx.Response:
    return await c.post(f"{url}/classify", files={"file": (name, body)}, data={"vocab": "kinetics400"})


async def _burst(url: str, videos: list[Path], n: int) -> tuple[list[int], float]:
    """``n`` requests at once: their statuses and the slowest one's seconds."""
    data = [(p.name, p.read_bytes()) for p in videos]
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=n + 4)) as c:

        async def one(i: int) -> tuple[int, float]:
            t0 = time.perf_counter()
            r = await _post(c, url, *data[i % len(data)])
            return r.status_code, time.perf_counter() - t0

        done = await asyncio.gather(*(one(i) for i in range(n)))
    return [s for s, _ in done], max(t for _, t in done)


@dataclass
class Sustained:
    """What clients saw: latencies by status; for each accepted request its server-side total and
    queue wait (waiting for a decode worker); for each refusal that was retried and admitted, the
    Retry-After it carried and the queue wait its retry then saw."""

    by_status: dict[int, list[float]] = field(default_factory=dict)
    service_s: list[float] = field(default_factory=list)
    queued_s: list[float] = field(default_factory=list)
    retry_told_s: list[float] = field(default_factory=list)
    retry_saw_s: list[float] = field(default_factory=list)
    served_at_s: list[float] = field(default_factory=list)  # when each 200 came back, from the run's start


async def _closed_loop(url: str, videos: list[Path], clients: int, seconds: float) -> Sustained:
    """``clients`` clients sending back to back for ``seconds``: the server's capacity."""
    data = [(p.name, p.read_bytes()) for p in videos]
    seen = Sustained()
    stop = time.perf_counter() + seconds

    async def client(c: httpx.AsyncClient, k: int) -> None:
        i = k
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            r = await _post(c, url, *data[i % len(data)])
            seen.by_status.setdefault(r.status_code, []).append(time.perf_counter() - t0)
            i += 1

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients + 4)) as c:
        await asyncio.gather(*(client(c, k) for k in range(clients)))
    return seen


def _raw_requests(url: str, videos: list[Path]) -> list[bytes]:
    """Each clip as the bytes of a whole POST /classify (multipart), built once: the open-loop
    generator writes them on raw connections, so that on a 2-core machine it costs the server
    as little CPU as a load generator can (httpx's per-request encoding took most of a core)."""
    host = url.removeprefix("http://")
    built = []
    for path in videos:
        boundary = "t4vbench"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="vocab"\r\n\r\nkinetics400\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + path.read_bytes()
            + (f"\r\n--{boundary}--\r\n").encode()
        )
        head = (
            f"POST /classify HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        built.append(head.encode() + body)
    return built


async def _raw_post(host: str, port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body
    finally:
        writer.close()


async def _open_loop(url: str, videos: list[Path], rate: float, seconds: float) -> Sustained:
    """Requests arriving at ``rate`` per second for ``seconds`` whatever the answers (an overload
    that clients do not slow down); a refused request waits its Retry-After and retries once."""
    requests = _raw_requests(url, videos)
    host, port = url.removeprefix("http://").split(":")
    seen = Sustained()
    start = time.perf_counter()

    async def one(i: int) -> None:
        told = None
        for _ in range(2):
            t0 = time.perf_counter()
            try:
                status, headers, body = await _raw_post(host, int(port), requests[i % len(requests)])
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):  # a reset, not an answer
                seen.by_status.setdefault(0, []).append(time.perf_counter() - t0)
                return
            seen.by_status.setdefault(status, []).append(time.perf_counter() - t0)
            if status == 200:
                seen.served_at_s.append(time.perf_counter() - start)
                timing = json.loads(body)["timing_ms"]
                seen.service_s.append(timing["total"] / 1e3)
                seen.queued_s.append(timing["decode_wait"] / 1e3)
                if told is not None:
                    seen.retry_told_s.append(told)
                    seen.retry_saw_s.append(timing["decode_wait"] / 1e3)
                return
            if status != 503 or told is not None:
                return
            told = float(headers.get("retry-after", "1"))
            await asyncio.sleep(told)

    tasks = []
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return seen


def admission(args: argparse.Namespace) -> None:
    """Bursts against the default admission (predicted wait) and a fixed queue of twice the
    workers (the old default), interleaved; then a sustained overload against the default."""
    from text4vis.models.clip_loader import TINY_ARCH

    videos = clips()
    serve_args = argparse.Namespace(
        model=TINY_ARCH, decode_workers=args.decode_workers, max_batch_frames=32, max_delay_ms=5.0
    )
    fixed = str(2 * args.decode_workers)
    servers = {
        "predicted wait (default)": ("--preset", "kinetics400", "--max-decode-queue", "256"),
        f"fixed queue of {fixed} (old default)": ("--preset", "kinetics400", "--max-decode-queue", fixed),
    }
    bursts: dict[tuple[str, int], list[tuple[list[int], float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        procs, urls = [], {}
        try:
            for k, (name, extra) in enumerate(servers.items()):
                port = free_port()
                procs.append(start_server(serve_args, Path(tmp) / str(k), port, extra))
                urls[name] = f"http://127.0.0.1:{port}"
                asyncio.run(_closed_loop(urls[name], videos, args.decode_workers, 3.0))  # warm-up, the estimates
            for _ in range(args.runs):
                for n in (16, 32, 64):
                    for name, url in urls.items():
                        bursts.setdefault((name, n), []).append(asyncio.run(_burst(url, videos, n)))
                        time.sleep(1.0)
            default = urls["predicted wait (default)"]
            unloaded = asyncio.run(_closed_loop(default, videos, 2 * args.decode_workers, args.seconds))
            capacity = len(unloaded.by_status.get(200, [])) / args.seconds
            loaded = asyncio.run(_open_loop(default, videos, args.overload * capacity, args.seconds))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=60)

    print(
        f"admission: {TINY_ARCH}, {args.decode_workers} decode processes, the real clips, "
        f"{args.runs} interleaved rounds per burst; median over rounds"
    )
    for (name, n), rounds in sorted(bursts.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ok = statistics.median(statuses.count(200) for statuses, _ in rounds)
        refused = statistics.median(statuses.count(503) for statuses, _ in rounds)
        slowest = statistics.median(t for _, t in rounds)
        print(f"  burst of {n:2d}, {name:28s}: {ok:4.0f} x 200, {refused:4.0f} x 503, slowest {slowest:5.2f} s")

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(np.array(values) * 1e3, q)) if values else float("nan")

    ok, refused = loaded.by_status.get(200, []), loaded.by_status.get(503, [])
    limit = 10.0  # the server's max_queue_wait_s (default)
    late = sum(q > limit for q in loaded.queued_s)
    ratios = [told / max(saw, 1e-3) for told, saw in zip(loaded.retry_told_s, loaded.retry_saw_s, strict=True)]
    print(f"  capacity ({2 * args.decode_workers} clients back to back, {args.seconds:g} s): {capacity:.1f} videos/s")
    goodput = sum(t <= args.seconds for t in loaded.served_at_s) / args.seconds  # while the overload lasted
    print(
        f"  {args.overload}x overload (arrivals at {args.overload * capacity:.0f}/s for {args.seconds:g} s, each "
        f"refusal retried once after Retry-After): goodput {goodput:.1f} videos/s while it lasted = "
        f"{goodput / capacity:.2f}x capacity; {len(ok)} served in all"
    )
    print(
        f"    accepted: p50 {pct(ok, 50):.0f} ms, p99 {pct(ok, 99):.0f} ms; queue wait p99 "
        f"{np.percentile(loaded.queued_s, 99) if loaded.queued_s else float('nan'):.2f} s, {late} over "
        f"max_queue_wait_s ({limit:g} s)"
    )
    print(
        f"    refused: {len(refused)} x 503 in p50 {pct(refused, 50):.1f} ms, p99 {pct(refused, 99):.1f} ms; "
        f"other statuses {sorted(s for s in loaded.by_status if s not in (200, 503))}"
    )
    if ratios:
        within = sum(0.5 <= r <= 2.0 for r in ratios)
        print(
            f"    Retry-After / the queue wait its admitted retry saw: median {statistics.median(ratios):.2f}, "
            f"{within} of {len(ratios)} within 2x"
        )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU-seconds of a process and its children that have exited, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _tree_cpu(pid: int) -> float:
    """CPU-seconds of the server and its decode workers."""
    total = _cpu_seconds(pid)
    for child in Path(f"/proc/{pid}/task").iterdir():
        children = child / "children"
        if children.exists():
            for c in children.read_text().split():
                with contextlib.suppress(OSError):
                    total += _cpu_seconds(int(c))
    return total


def index_cost(args: argparse.Namespace) -> None:
    """What index=true costs under load: one server (the tiny model), --clients concurrent
    clients, rounds of --requests uploads with index=false and with index=true alternating (each
    upload a new file: a file stored already is not stored again); throughput, p50 latency and
    the server's CPU-seconds per video of each, median of --runs pairs."""
    from tests.media import moving_square_frames, write_video
    from text4vis.models.clip_loader import TINY_ARCH

    serve_args = argparse.Namespace(
        model=TINY_ARCH, decode_workers=args.decode_workers, max_batch_frames=64, max_delay_ms=5.0
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        files = [
            write_video(folder / f"c{i}.mp4", moving_square_frames(48, 160, 120, seed=i)).read_bytes()
            for i in range(2 * args.runs * args.requests + args.requests)
        ]
        port = free_port()
        proc = start_server(serve_args, Path(tmp) / "data", port)
        url = f"http://127.0.0.1:{port}"
        stats: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
        used = 0

        async def round_(index: bool, bodies: list[bytes]) -> tuple[float, float]:
            latencies: list[float] = []
            todo = list(enumerate(bodies))

            async def client(c: httpx.AsyncClient) -> None:
                while todo:
                    i, body = todo.pop()
                    t0 = time.perf_counter()
                    r = await c.post(
                        f"{url}/classify",
                        files={"file": (f"v{i}.mp4", body)},
                        data={"labels": json.dumps(["a", "b", "c"]), "index": str(index).lower()},
                    )
                    r.raise_for_status()
                    latencies.append(time.perf_counter() - t0)

            async with httpx.AsyncClient(timeout=300) as c:
                t0 = time.perf_counter()
                await asyncio.gather(*(client(c) for _ in range(args.clients)))
                return len(bodies) / (time.perf_counter() - t0), statistics.median(latencies)

        try:
            asyncio.run(round_(True, files[: args.requests]))  # warm-up: the table, its first commits
            used = args.requests
            for run in range(args.runs):
                for index in (False, True) if run % 2 == 0 else (True, False):
                    bodies = files[used : used + args.requests]
                    used += args.requests
                    cpu0 = _tree_cpu(proc.pid)
                    rate, p50 = asyncio.run(round_(index, bodies))
                    stats[index].append((rate, p50, (_tree_cpu(proc.pid) - cpu0) / len(bodies)))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in stats.items()}
    print(
        f"index=true under load: {TINY_ARCH}, {args.clients} clients, {args.requests} new files per round, "
        f"median of {args.runs} interleaved pairs"
    )
    for index in (False, True):
        rate, p50, cpu = med[index]
        name = f"index={str(index).lower()}"
        print(f"  {name:12s} {rate:6.2f} videos/s  p50 {p50 * 1e3:6.0f} ms  {cpu * 1e3:6.1f} CPU-ms/video")
    (rate1, p501, cpu1), (rate0, p500, cpu0) = med[True], med[False]
    print(
        f"  index=true / index=false: throughput x{rate1 / rate0:.3f}, p50 x{p501 / p500:.3f}, "
        f"+{(cpu1 - cpu0) * 1e3:.1f} server CPU-ms per video"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--decode-workers", type=int, default=1)
    parser.add_argument("--max-batch-frames", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenario", choices=("default", "decode-bound", "admission", "index"), default="default")
    parser.add_argument("--overload", type=int, default=10, help="admission scenario: clients per decode worker")
    parser.add_argument("--seconds", type=float, default=30.0, help="admission scenario: seconds of sustained load")
    args = parser.parse_args()
    if args.scenario == "decode-bound":
        decode_bound(args)
        return
    if args.scenario == "admission":
        admission(args)
        return
    if args.scenario == "index":
        index_cost(args)
        return
    videos = clips()
    med = statistics.median

    naive = med(naive_loop(args.model, videos, args.requests // 2) for _ in range(args.runs))
    decode = med(decode_capacity(videos, args.requests, args.decode_workers) for _ in range(args.runs))
    encode = med(encode_capacity(args.model, args.max_batch_frames) for _ in range(args.runs))

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_server(args, Path(tmp), port)
        url = f"http://127.0.0.1:{port}"
        try:
            labels = preset_labels("kinetics400")
            t0 = time.perf_counter()
            r = httpx.put(f"{url}/vocab/kinetics400", json={"labels": labels}, timeout=300)
            cold = time.perf_counter() - t0
            r.raise_for_status()
            cached = []
            for i in range(5):
                t0 = time.perf_counter()
                httpx.put(f"{url}/vocab/k400-copy{i}", json={"labels": labels}, timeout=300).raise_for_status()
                cached.append(time.perf_counter() - t0)
            runs = [asyncio.run(load(url, videos, args.clients, args.requests)) for _ in range(args.runs)]
            served = med(r[0] for r in runs)
            lat = np.array(runs[[r[0] for r in runs].index(served)][1]) * 1e3
            mean_batch = batch_mean(url)
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    bound = min(decode, encode)
    print(
        f"serving benchmark: {args.model} random weights, CPU ({torch.get_num_threads()} threads), 8 frames, "
        f"{len(videos)} real clips, median of {args.runs} runs"
    )
    print(f"  naive loop (decord + open_clip, sequential):  {naive:6.2f} videos/s")
    print(f"  decode-only capacity ({args.decode_workers} processes):         {decode:6.2f} videos/s")
    print(f"  encode-only capacity (batch {args.max_batch_frames} frames):       {encode:6.2f} videos/s")
    print(f"  server, {args.clients} clients, {args.requests} requests:           {served:6.2f} videos/s")
    print(
        f"    latency p50 {np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms, "
        f"p99 {np.percentile(lat, 99):.0f} ms; mean batch {mean_batch:.1f} frames"
    )
    print(f"    server / min(decode, encode) = {served / bound:.2f} (target >= 0.9)")
    print(f"    server / naive loop          = {served / naive:.2f} (target >= 1.3)")
    print(
        f"  PUT /vocab 400 Kinetics labels: cold {cold * 1e3:.0f} ms, cached {med(cached) * 1e3:.0f} ms (median of 5)"
    )


if __name__ == "__main__":
    main()
