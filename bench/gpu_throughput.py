"""Torch-backend throughput and MFU on a CUDA GPU (run by bench/gpu_check.sh).

MFU = achieved FLOP/s / the card's dense peak for the precision: ViT-B-16 costs 35.1 GFLOP per
224px image. fp32 is measured with TF32 off and compared to the fp32 (non-tensor-core) peak.
Last, the text side of PUT /vocab: the 400 Kinetics-400 labels, one template, text tower on the
CPU (the baseline) vs on the GPU, as the server places it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from engine.backends.torch_backend import TorchFrameEncoder
from models.clip_loader import ClipSource, load_clip
from models.presets import preset_labels
from models.prompts import DEFAULT_TEMPLATE, format_prompts
from models.text_encoder import TextEncoder

GFLOP_PER_IMAGE = {"ViT-B-16": 35.1}
# dense peak TFLOP/s by (name fragment, precision); datasheet figures, SXM parts
PEAKS = {
    "H200": {"fp32": 66.9, "fp16": 989.4, "bf16": 989.4},
    "H100": {"fp32": 66.9, "fp16": 989.4, "bf16": 989.4},
    "A100": {"fp32": 19.5, "fp16": 312.0, "bf16": 312.0},
    "L40S": {"fp32": 91.6, "fp16": 362.1, "bf16": 362.1},
    "L4": {"fp32": 30.3, "fp16": 121.0, "bf16": 121.0},
}


def peak(name: str, precision: str) -> float | None:
    for key, table in PEAKS.items():
        if key in name:
            return table[precision] * 1e12
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "bf16"])
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU visible to torch")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name(0)
    gflop = GFLOP_PER_IMAGE.get(args.model)
    print(f"{name}, torch {torch.__version__}, {args.model} (random weights), uint8 input resident on the GPU")
    print(f"{'precision':9s} {'compile':7s} {'batch':>5s} {'frames/s':>10s} {'TFLOP/s':>8s} {'MFU':>6s}")
    for precision in args.precisions:
        for compiled in [False] if args.no_compile else [False, True]:
            clip = load_clip(ClipSource(arch=args.model, random_init=True))
            enc = TorchFrameEncoder(clip.model.visual, clip.mean, clip.std, device="cuda",
                                    precision=precision, max_batch_size=max(args.batches), compile=compiled)
            for batch in args.batches:
                x = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8, device="cuda")
                with torch.inference_mode():
                    for _ in range(3):
                        enc.module(x)
                    torch.cuda.synchronize()
                    rates = []
                    for _ in range(args.runs):
                        t0, n = time.perf_counter(), 0
                        while time.perf_counter() - t0 < args.seconds:
                            enc.module(x)
                            n += batch
                        torch.cuda.synchronize()
                        rates.append(n / (time.perf_counter() - t0))
                rate = statistics.median(rates)
                flops = rate * gflop * 1e9 if gflop else float("nan")
                p = peak(name, precision)
                mfu = f"{flops / p * 100:5.1f}%" if p and gflop else "   n/a"
                print(f"{precision:9s} {str(compiled):7s} {batch:5d} {rate:10.0f} {flops / 1e12:8.1f} {mfu:>6s}",
                      flush=True)
            del enc
            torch.cuda.empty_cache()
    text_encode(args.model, args.runs)


def text_encode(model: str, runs: int, gpu: str = "cuda") -> None:
    prompts = [p for label in preset_labels("kinetics400") for p in format_prompts(label, [DEFAULT_TEMPLATE])]
    seconds = {}
    for device in ("cpu", gpu):
        enc = TextEncoder(load_clip(ClipSource(arch=model, random_init=True)), device=device)
        enc.encode(prompts[:64])  # warm-up
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            enc.encode(prompts)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        seconds[device] = statistics.median(times)
    print(f"text encode, {len(prompts)} prompts ({model} text tower, fp32, median of {runs}): "
          f"CPU {seconds['cpu']:.2f} s, {gpu} {seconds[gpu]:.3f} s, {seconds['cpu'] / seconds[gpu]:.1f}x")


if __name__ == "__main__":
    main()
