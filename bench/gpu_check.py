"""Everything a GPU host should show, in one bounded run (bench/gpu_check.sh starts it).

    python bench/gpu_check.py [--budget-s 450] [--model ViT-B-16] [--dry-run]

Stages, each skipped with its reason when the time left or a library is missing:
1. parity of the visual tower on the GPU in fp32 / fp16 / bf16 against fp32 on the CPU
   (cosine of every embedding, max |difference|, probabilities over 400 random text classes);
2. the text tower on the GPU against the CPU (what PUT /vocab runs), and its speed;
3. torch backend throughput and MFU per precision, eager, and torch.compile (fp16);
4. ONNX Runtime (CUDA provider) and TensorRT, only where installed: parity and throughput;
5. NVDEC (the nvdec decoder: PyAV with FFmpeg's CUDA decoder) against PyAV on the CPU on a
   generated 1080p H.264 clip: frames identical?, wall and CPU ms per video, exact and fast sampling;
6. the HTTP server on the GPU (`t4v serve`, defaults for a CUDA host: its /models line says which
   decoder start-up chose) under concurrent uploads of generated H.264 clips: videos/s, p50/p99
   latency, mean batch, GPU utilisation.
Random weights throughout (no network): parity and speed do not depend on the values.
``--dry-run`` runs every stage on the CPU with the tiny test model and second-long budgets, so the
script itself is tested in CI (tests/e2e/test_gpu_check.py); its figures mean nothing.
Exit status 1 when a check or a stage fails, 2 without a GPU (and no --dry-run), else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from text4vis.engine.runtime.backends.base import FrameEncoder
from text4vis.engine.runtime.backends.torch_backend import TorchFrameEncoder
from text4vis.models.clip_loader import TINY_ARCH, ClipSource, LoadedClip, load_clip
from text4vis.models.presets import preset_labels
from text4vis.models.prompts import DEFAULT_TEMPLATE, format_prompts
from text4vis.models.text_encoder import TextEncoder

GFLOP_PER_IMAGE = {"ViT-B-16": 35.1, "ViT-B-32": 8.8, "ViT-L-14": 162.0}  # per 224 px frame
# dense peak TFLOP/s by (name fragment, precision); datasheet figures, SXM parts
PEAKS = {
    "H200": {"fp32": 66.9, "fp16": 989.4, "bf16": 989.4},
    "H100": {"fp32": 66.9, "fp16": 989.4, "bf16": 989.4},
    "A100": {"fp32": 19.5, "fp16": 312.0, "bf16": 312.0},
    "L40S": {"fp32": 91.6, "fp16": 362.1, "bf16": 362.1},
    "L4": {"fp32": 30.3, "fp16": 121.0, "bf16": 121.0},
}
# cosine of each GPU embedding to the CPU fp32 one, at least; fp32 runs with TF32 off
MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "bf16": 0.99}
FAILURES: list[str] = []


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def stage(name: str, budget: Budget, needs_s: float, fn: Callable[[], None]) -> None:
    print(f"\n== {name}", flush=True)
    if budget.left() < needs_s:
        print(f"skipped: {budget.left():.0f} s left, this stage needs about {needs_s:.0f} s")
        return
    t0 = time.monotonic()
    try:
        fn()
    except Exception as exc:  # one failing stage must not hide the others' figures
        FAILURES.append(f"{name}: {type(exc).__name__}: {exc}")
        print(f"FAILED: {type(exc).__name__}: {exc}")
    print(f"({time.monotonic() - t0:.0f} s)", flush=True)


def check(what: str, ok: bool, detail: str) -> None:
    print(f"  {'PASS' if ok else 'FAIL'} {what}: {detail}")
    if not ok:
        FAILURES.append(f"{what}: {detail}")


def peak(name: str, precision: str) -> float | None:
    for key, table in PEAKS.items():
        if key in name:
            return table[precision] * 1e12
    return None


def test_pixels(n: int, size: int) -> torch.Tensor:
    """Smooth gradients with edges and some noise: closer to video frames than uniform noise."""
    g = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for i in range(n):
        phase = torch.rand(3, generator=g) * 6.28
        img = torch.stack([torch.sin(6 * x * (i % 4 + 1) + p) * torch.cos(4 * y + p) for p in phase])
        img = (img + 1) * 110 + torch.randint(0, 30, (3, size, size), generator=g)
        img[:, size // 4 : size // 2, size // 4 : size // 2] = (i * 37) % 255  # a square
        out.append(img.clamp(0, 255).to(torch.uint8))
    return torch.stack(out)


def visual_parity(clip: LoadedClip, device: str, precisions: list[str]) -> None:
    pixels = test_pixels(16, clip.image_size)
    ref_enc = TorchFrameEncoder(copy.deepcopy(clip.model.visual), clip.mean, clip.std, device="cpu")
    ref = ref_enc.encode(pixels)
    text = F.normalize(torch.randn(400, ref.shape[1], generator=torch.Generator().manual_seed(1)), dim=-1)
    ref_p = (100 * F.normalize(ref, dim=-1) @ text.T).softmax(-1)
    for precision in precisions:
        enc = TorchFrameEncoder(
            copy.deepcopy(clip.model.visual), clip.mean, clip.std, device=device, precision=precision
        )  # type: ignore[arg-type]
        emb = enc.encode(pixels)
        cos = F.cosine_similarity(emb, ref, dim=-1).min().item()
        p = (100 * F.normalize(emb, dim=-1) @ text.T).softmax(-1)
        top1 = (p.argmax(-1) == ref_p.argmax(-1)).float().mean().item()
        check(
            f"visual {precision} on {device} vs fp32 CPU",
            cos >= MIN_COSINE[precision],
            f"min cosine {cos:.6f} (>= {MIN_COSINE[precision]}), max |emb diff| "
            f"{(emb - ref).abs().max().item():.2e}, max |prob diff| {(p - ref_p).abs().max().item():.2e}, "
            f"top-1 agreement {top1:.0%}",
        )
        del enc


def text_tower(clip: LoadedClip, device: str, runs: int) -> None:
    prompts = [p for label in preset_labels("kinetics400") for p in format_prompts(label, [DEFAULT_TEMPLATE])]
    results = {}
    for where in ("cpu", device):
        enc = TextEncoder(clip, device=where)
        enc.encode(prompts[:32])
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            emb = enc.encode(prompts)
            if where.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        results[where] = (emb.float().cpu(), statistics.median(times))
    diff = (results[device][0] - results["cpu"][0]).abs().max().item()
    check(f"text tower on {device} vs CPU", diff <= 1e-3, f"max |diff| {diff:.2e} over {len(prompts)} prompts")
    print(
        f"  {len(prompts)} prompts: CPU {results['cpu'][1]:.2f} s, {device} {results[device][1]:.3f} s "
        f"({results['cpu'][1] / results[device][1]:.1f}x), median of {runs}"
    )


def rate(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, seconds: float) -> float:
    with torch.inference_mode():
        module(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        rates = []
        for _ in range(3):
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds / 3:
                module(x)
                n += x.shape[0]
            if x.is_cuda:
                torch.cuda.synchronize()
            rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def throughput(args: argparse.Namespace, clip: LoadedClip, device: str, budget: Budget) -> None:
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "CPU"
    gflop = GFLOP_PER_IMAGE.get(args.model)
    x = torch.randint(0, 256, (args.batch, 3, clip.image_size, clip.image_size), dtype=torch.uint8, device=device)
    print(f"  {name}, batch {args.batch}, uint8 input on the device, median of 3 x {args.seconds / 3:.1f} s")
    print(f"  {'precision':9s} {'mode':8s} {'frames/s':>10s} {'TFLOP/s':>8s} {'MFU':>6s} {'x fp32 eager':>12s}")
    base = None
    for precision, compiled in [("fp32", False), ("fp16", False), ("bf16", False), ("fp16", True)]:
        if budget.left() < args.seconds + (60 if compiled else 10):
            print(f"  {precision} {'compile' if compiled else 'eager'}: skipped, {budget.left():.0f} s left")
            continue
        enc = TorchFrameEncoder(
            copy.deepcopy(clip.model.visual),
            clip.mean,
            clip.std,
            device=device,
            precision=precision,
            max_batch_size=args.batch,
            compile=compiled,
        )  # type: ignore[arg-type]
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = enc.module(x)
        first = time.perf_counter() - t0
        r = rate(enc.module, x, args.seconds)
        base = base or r
        flops = r * gflop * 1e9 if gflop else float("nan")
        p = peak(name, precision)
        mfu = f"{flops / p * 100:5.1f}%" if p and gflop else "   n/a"
        print(
            f"  {precision:9s} {'compile' if compiled else 'eager':8s} {r:10.0f} {flops / 1e12:8.1f} {mfu:>6s} "
            f"{r / base:11.2f}x" + (f"   (first call {first:.1f} s)" if compiled else ""),
            flush=True,
        )
        if compiled:
            eager = TorchFrameEncoder(
                copy.deepcopy(clip.model.visual),
                clip.mean,
                clip.std,
                device=device,
                precision="fp16",
                max_batch_size=args.batch,
            )
            with torch.inference_mode():
                cos = F.cosine_similarity(out.float(), eager.module(x).float(), dim=-1).min().item()
            check("torch.compile fp16 vs eager fp16", cos >= 0.999, f"min cosine {cos:.6f}")
        del enc


def compiled_backends(args: argparse.Namespace, clip: LoadedClip, device: str) -> None:
    """ONNX Runtime's CUDA provider and TensorRT, where they are installed."""
    from text4vis.engine.runtime.export import export_engine
    from text4vis.models.temporal import build_temporal_head

    have_ort = importlib.util.find_spec("onnxruntime") is not None
    have_trt = importlib.util.find_spec("tensorrt") is not None
    have_export = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript"))
    providers: list[str] = []
    if have_ort:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    print(
        f"  onnxruntime: {'providers ' + ', '.join(providers) if have_ort else 'not installed'}; "
        f"tensorrt: {'installed' if have_trt else 'not installed'}; onnx export: "
        f"{'available' if have_export else 'onnx/onnxscript not installed'}"
    )
    gpu_ort = "CUDAExecutionProvider" in providers and device.startswith("cuda")
    if not have_export or not (gpu_ort or have_trt) or not device.startswith("cuda"):
        print("  skipped: needs onnx + onnxscript and onnxruntime-gpu or TensorRT on a CUDA host")
        return
    from text4vis.engine.runtime.backends.onnx_backend import OnnxFrameEncoder

    pixels = test_pixels(16, clip.image_size)
    ref = TorchFrameEncoder(copy.deepcopy(clip.model.visual), clip.mean, clip.std, device=device).encode(pixels)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "engine"
        fmt = "tensorrt" if have_trt else "onnx"
        t0 = time.perf_counter()
        m = export_engine(
            copy.deepcopy(clip.model.visual),
            build_temporal_head("mean", clip.embed_dim),
            out,
            architecture=args.model,
            text_model="check",
            activation=clip.activation,
            input_size=clip.image_size,
            mean=clip.mean,
            std=clip.std,
            preprocess="clip",
            fmt=fmt,
            precision="fp16",
            max_batch=args.batch,
        )
        print(f"  export fp16 {fmt}: {time.perf_counter() - t0:.0f} s")
        encoders: list[FrameEncoder] = []
        if gpu_ort:
            encoders.append(
                OnnxFrameEncoder(
                    out / m.files["onnx"],
                    m.embed_dim,
                    m.input_size,
                    "fp16",
                    ("cuda",),
                    max_batch_size=args.batch,
                    device=device,
                )
            )
        if have_trt:
            from text4vis.engine.runtime.backends.tensorrt_backend import TensorRTFrameEncoder, plan_key

            encoders.append(
                TensorRTFrameEncoder(
                    out / m.plans[plan_key(device)], m.embed_dim, m.input_size, args.batch, "fp16", device=device
                )
            )
        x = torch.randint(0, 256, (args.batch, 3, clip.image_size, clip.image_size), dtype=torch.uint8)
        for enc in encoders:
            cos = F.cosine_similarity(enc.encode(pixels), ref, dim=-1).min().item()
            check(f"{enc.name} fp16 on {enc.device} vs torch fp32", cos >= MIN_COSINE["fp16"], f"min cosine {cos:.6f}")
            print(
                f"  {enc.name}: {rate(enc.encode, x, args.seconds):.0f} frames/s at batch {args.batch} "
                "(uint8 from host memory, as the server feeds it)"
            )


def nvdec(args: argparse.Namespace, device: str) -> None:
    from bench.decode import make_clip
    from text4vis.models.media import nvdec_problem
    from text4vis.models.media.pyav import PyAVReader
    from text4vis.models.sampling import fast_indices, sample_indices

    gpu = 0 if device == "cpu" else torch.device(device).index or 0
    problem = nvdec_problem(gpu)
    print(
        f"  NVDEC on cuda:{gpu}: "
        + ("usable, a probe clip decodes to the CPU's pixels" if problem is None else f"not used ({problem})")
    )
    if problem is not None and device != "cpu":
        check("NVDEC usable on this GPU", False, problem)
    with tempfile.TemporaryDirectory() as tmp:
        width, height = (1920, 1080) if device != "cpu" else (320, 180)
        clip = make_clip(Path(tmp) / "nvdec.mp4", args.clip_s, width, height, gop=60)
        with PyAVReader(clip, 1) as reader:
            n, keys = reader.info.num_frames, reader.keyframes()
        samplings = {"exact": sample_indices(n, 8).reshape(-1).tolist(), "fast": fast_indices(n, 8, keys)}
        readers = {"cpu": None} if problem is not None else {"cpu": None, "nvdec": gpu}
        for sampling, indices in samplings.items():
            wall: dict[str, list[float]] = {k: [] for k in readers}
            cpu: dict[str, list[float]] = {k: [] for k in readers}
            frames: dict[str, np.ndarray] = {}
            for _ in range(3):  # interleaved rounds
                for name, on in readers.items():
                    t0, c0 = time.perf_counter(), time.process_time()
                    with PyAVReader(clip, 1, gpu=on) as reader:
                        frames[name] = reader.read(indices)
                        if on is not None and reader.info.decoder != "nvdec":
                            check("NVDEC decoded the clip", False, "it fell back to the CPU")
                    wall[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
            med = {k: (statistics.median(wall[k]) * 1e3, statistics.median(cpu[k]) * 1e3) for k in readers}
            line = ", ".join(f"{k} {w:.0f} ms wall / {c:.0f} CPU-ms" for k, (w, c) in med.items())
            if "nvdec" in med:
                same = np.array_equal(frames["cpu"], frames["nvdec"])
                check(
                    f"NVDEC frames equal the CPU's ({sampling})",
                    same,
                    "identical" if same else f"max diff {np.abs(frames['cpu'].astype(int) - frames['nvdec']).max()}",
                )
                line += f"; CPU-ms ratio cpu/nvdec {med['cpu'][1] / med['nvdec'][1]:.1f}x"
            print(f"  {width}x{height} GOP 60 {args.clip_s} s, {sampling} 8 frames: {line}")


def write_clips(directory: Path, n: int, seconds: int, size: tuple[int, int]) -> list[Path]:
    from tests.media import moving_square_frames, write_video

    return [
        write_video(directory / f"clip{i}.mp4", moving_square_frames(25 * seconds, *size, seed=i)) for i in range(n)
    ]


def gpu_utilisation(stop: threading.Event, samples: list[float]) -> None:
    if shutil.which("nvidia-smi") is None:
        return
    while not stop.is_set():
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if out.isdigit():
            samples.append(float(out))
        stop.wait(0.5)


def server_load(args: argparse.Namespace, device: str, budget: Budget) -> None:
    import httpx

    from bench.serve import batch_mean, free_port, load, start_server

    serve_args = argparse.Namespace(
        model=args.model, decode_workers=args.decode_workers, max_batch_frames=args.batch, max_delay_ms=10.0
    )
    with tempfile.TemporaryDirectory() as tmp:
        clips = write_clips(Path(tmp), 4, args.clip_s, (340, 256))
        port, log = free_port(), Path(tmp) / "server.log"
        t0 = time.perf_counter()
        extra = ("--device", device, "--preset", "kinetics400", "--request-timeout-s", "120")
        proc = start_server(serve_args, Path(tmp) / "data", port, extra, ready_s=min(240, budget.left() - 30), log=log)
        print(
            f"  t4v serve ready in {time.perf_counter() - t0:.0f} s (kinetics400 registered); "
            f"{args.decode_workers} decode processes, batches up to {args.batch} frames"
        )
        url = f"http://127.0.0.1:{port}"
        stop, samples = threading.Event(), []
        sampler = threading.Thread(target=gpu_utilisation, args=(stop, samples), daemon=True)
        try:
            print("  " + httpx.get(f"{url}/models").text)
            sampler.start()
            n = args.requests
            served, latencies = asyncio.run(load(url, clips, args.clients, n))
            stop.set()
            lat = np.array(latencies) * 1e3
            print(
                f"  {args.clients} clients, {n} uploads of {args.clip_s} s 340x256 H.264 clips, 8 frames each: "
                f"{served:.2f} videos/s; latency p50 {np.percentile(lat, 50):.0f} ms, "
                f"p99 {np.percentile(lat, 99):.0f} ms; mean batch {batch_mean(url):.1f} frames"
            )
            if samples:
                print(
                    f"  GPU utilisation during the load: mean {statistics.mean(samples):.0f}%, "
                    f"max {max(samples):.0f}% ({len(samples)} samples)"
                )
            else:
                print("  GPU utilisation: not sampled (no nvidia-smi)")
        finally:
            stop.set()
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=450)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=6.0, help="per throughput figure")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--clip-s", type=int, default=10)
    parser.add_argument("--decode-workers", type=int, default=0, help="0: the cores less 2")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, seconds: tests the script")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.model, args.batch, args.seconds, args.clients, args.requests, args.clip_s = TINY_ARCH, 8, 0.6, 2, 4, 2
        device = "cpu"
    elif not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: run with --dry-run to test the script on the CPU")
        return 2
    else:
        device = "cuda:0"
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
        torch.backends.cudnn.allow_tf32 = False
    args.decode_workers = args.decode_workers or max(1, (torch.multiprocessing.cpu_count() or 4) - 2)
    budget = Budget(args.budget_s)
    print(
        f"gpu_check: torch {torch.__version__} (CUDA {torch.version.cuda}), python {sys.version.split()[0]}, "
        f"{torch.multiprocessing.cpu_count()} CPUs, device {device}"
        + (f" = {torch.cuda.get_device_name(0)}" if device != "cpu" else " (dry run)")
        + f", model {args.model} with random weights, budget {args.budget_s:.0f} s"
    )
    clip = load_clip(ClipSource(arch=args.model, random_init=True))
    precisions = ["fp32", "fp16", "bf16"] if device != "cpu" else ["fp32", "bf16"]  # no fp16 matmul on CPU
    stage("1. visual tower parity (GPU vs CPU fp32)", budget, 20, lambda: visual_parity(clip, device, precisions))
    stage("2. text tower (PUT /vocab) on the GPU vs the CPU", budget, 30, lambda: text_tower(clip, device, 3))
    stage("3. torch backend throughput, eager and compiled", budget, 40, lambda: throughput(args, clip, device, budget))
    stage(
        "4. ONNX Runtime (CUDA) and TensorRT, where installed",
        budget,
        90,
        lambda: compiled_backends(args, clip, device),
    )
    stage("5. NVDEC vs CPU decoding", budget, 40, lambda: nvdec(args, device))
    stage("6. the HTTP server under load", budget, 60, lambda: server_load(args, device, budget))
    print(f"\ngpu_check: {len(FAILURES)} failure(s)" + "".join(f"\n  - {f}" for f in FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
