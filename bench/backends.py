"""Visual-encoder throughput per backend, precision and batch size, on this machine.

    python bench/backends.py [--model ViT-B-32] [--batches 1 8 32] [--runs 3]

Random weights (the cost does not depend on them). Each cell: frames/s, the median of --runs
timed runs of at least --seconds each, after a warm-up; the ratio is to torch eager fp32 at the
same batch size, measured in the same run. ONNX Runtime is tried with its default session
options, with ours (engine/runtime/backends/onnx_backend.py), and on the graph rewritten by
onnxruntime.transformers' ViT optimizer (fused attention, LayerNorm, GELU).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from text4vis.engine.runtime.backends.base import PixelEncoder
from text4vis.engine.runtime.backends.onnx_backend import session_options
from text4vis.engine.runtime.backends.torch_backend import TorchFrameEncoder
from text4vis.engine.runtime.export import export_onnx
from text4vis.models.clip_loader import ClipSource, load_clip

OUT = Path(__file__).parent / "out"


def frames_per_s(fn: Callable[[torch.Tensor], object], batch: int, runs: int, seconds: float) -> float:
    x = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8)
    fn(x)
    rates = []
    for _ in range(runs):
        t0, n = time.perf_counter(), 0
        while n == 0 or time.perf_counter() - t0 < seconds:
            fn(x)
            n += batch
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def ort_runner(path: Path, options) -> Callable[[torch.Tensor], object]:  # noqa: ANN001
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"pixels": x.numpy()})


def optimized_vit(src: Path, dst: Path, heads: int, hidden: int) -> Path:
    if not dst.exists():
        from onnxruntime.transformers.optimizer import optimize_model

        model = optimize_model(str(src), model_type="vit", num_heads=heads, hidden_size=hidden, opt_level=1)
        model.save_model_to_file(str(dst))
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    import onnxruntime as ort

    clip = load_clip(ClipSource(arch=args.model, random_init=True))
    visual = clip.model.visual.eval()
    OUT.mkdir(parents=True, exist_ok=True)
    onnx_path = OUT / f"{args.model}_fp32.onnx"
    if not onnx_path.exists():
        export_onnx(PixelEncoder(visual, clip.mean, clip.std).eval(), onnx_path, clip.image_size, 256)
    width = visual.transformer.width
    fused = optimized_vit(onnx_path, OUT / f"{args.model}_fp32_vitfused.onnx", width // 64, width)

    candidates: dict[str, Callable[[torch.Tensor], object]] = {
        "torch eager fp32 (baseline)": TorchFrameEncoder(copy.deepcopy(visual), clip.mean, clip.std).encode,
        "torch eager bf16": TorchFrameEncoder(copy.deepcopy(visual), clip.mean, clip.std, precision="bf16").encode,
        "onnxruntime fp32, default options": ort_runner(onnx_path, ort.SessionOptions()),
        "onnxruntime fp32, our options": ort_runner(onnx_path, session_options()),
        "onnxruntime fp32, ViT-fused graph": ort_runner(fused, session_options()),
    }
    print(
        f"visual encoder {args.model} (random weights), CPU, torch {torch.get_num_threads()} threads, "
        f"onnxruntime {ort.__version__}; frames/s, median of {args.runs} x {args.seconds:.0f} s"
    )
    header = f"{'backend':36s}" + "".join(f" {'batch ' + str(b):>16s}" for b in args.batches)
    print(header)
    base: dict[int, float] = {}
    for name, fn in candidates.items():
        row = f"{name:36s}"
        for b in args.batches:
            rate = frames_per_s(fn, b, args.runs, args.seconds)
            base.setdefault(b, rate)
            row += f" {rate:8.1f} ({rate / base[b]:4.2f}x)"
        print(row, flush=True)
    x = torch.randint(0, 256, (8, 3, 224, 224), dtype=torch.uint8)
    ref = candidates["torch eager fp32 (baseline)"](x)
    for name in ("onnxruntime fp32, our options", "onnxruntime fp32, ViT-fused graph"):
        out = np.asarray(candidates[name](x)[0])  # type: ignore[index]
        print(f"max |{name} - torch fp32| = {np.abs(out - np.asarray(ref)).max():.1e}")


if __name__ == "__main__":
    main()
