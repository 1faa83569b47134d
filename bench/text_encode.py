"""Text encoding of the 400 Kinetics-400 labels: padded to 77 tokens vs padded to the longest prompt.

    python bench/text_encode.py [--model ViT-B-32] [--runs 3] [--threads N]

Random weights (the cost does not depend on them), CPU. Prints the median of --runs for each
mode and the ratio; both are measured in the same run on the same model.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from text4vis.models.clip_loader import ClipSource, load_clip
from text4vis.models.presets import preset_labels
from text4vis.models.prompts import DEFAULT_TEMPLATE, format_prompts
from text4vis.models.text_encoder import TextEncoder


def _median_seconds(fn, runs: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    clip = load_clip(ClipSource(arch=args.model, random_init=True))
    encoder = TextEncoder(clip)
    labels = preset_labels("kinetics400")
    prompts = [p for label in labels for p in format_prompts(label, [DEFAULT_TEMPLATE])]
    lengths = encoder.token_counts(prompts)
    encoder.encode(prompts[:8])  # warm-up
    encoder.encode(prompts[:8], trim=False)

    padded = _median_seconds(lambda: encoder.encode(prompts, trim=False), args.runs)
    trimmed = _median_seconds(lambda: encoder.encode(prompts, trim=True), args.runs)
    diff = (encoder.encode(prompts) - encoder.encode(prompts, trim=False)).abs().max().item()

    print(
        f"text encoding, {len(prompts)} Kinetics-400 prompts, {args.model} (random weights), "
        f"CPU, {args.threads} threads, median of {args.runs}"
    )
    print(f"  prompt tokens: mean {statistics.mean(lengths):.1f}, max {max(lengths)} (context 77)")
    print(f"  padded to 77 (baseline):  {padded:8.3f} s  {len(prompts) / padded:8.1f} prompts/s")
    print(f"  padded to longest/batch:  {trimmed:8.3f} s  {len(prompts) / trimmed:8.1f} prompts/s")
    print(f"  speed-up: {padded / trimmed:.2f}x   max |difference| {diff:.1e}")


if __name__ == "__main__":
    main()
