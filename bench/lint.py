"""Vocabulary lint on near-identical labels: the bounded lint vs the all-pairs list it replaced.

    python bench/lint.py [--labels 5000] [--dim 512] [--runs 3]

5,000 labels whose classifier rows all sit within cosine 0.95 of each other (12.5M pairs above
the threshold): each run times, interleaved, ``engine.vocab.lint.lint`` (blocks, the best pairs
of each) and the baseline, what lint did before (every pair above the threshold into a Python
list, sorted, the first 100 kept). Prints the median CPU-seconds of each, their ratio, and the
peak of traced memory of one more call of each (tracemalloc: numpy's buffers and the Python
objects; tracing slows the baseline's allocations, so those calls are not timed).
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from text4vis.engine.vocab.lint import MAX_WARNINGS, SIMILAR_COSINE, lint


def all_pairs(labels: list[str], rows: np.ndarray) -> list[tuple[float, str, str]]:
    """The baseline: every pair above the threshold, then sorted."""
    similar: list[tuple[float, int, int]] = []
    for start in range(0, len(rows), 1024):
        block = rows[start : start + 1024] @ rows.T
        ii, jj = np.nonzero(block > SIMILAR_COSINE)
        for i, j in zip((ii + start).tolist(), jj.tolist(), strict=True):
            if i < j:
                similar.append((float(block[i - start, j]), i, j))
    similar.sort(reverse=True)
    return [(c, labels[i], labels[j]) for c, i, j in similar[:MAX_WARNINGS]]


def cpu_s(fn: Callable[[], object]) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def peak_mb(fn: Callable[[], object]) -> float:
    """The traced peak of one call (tracemalloc slows Python allocations: not timed)."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(1, args.dim)) + 0.02 * rng.normal(size=(args.labels, args.dim))
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    labels = [f"label {i}" for i in range(args.labels)]
    bounded = [w.cosine for w in lint(labels, rows)]
    baseline = [c for c, _, _ in all_pairs(labels, rows)]
    assert np.allclose(bounded, baseline, atol=1e-6), "the two disagree on the best pairs"
    runs: dict[str, Callable[[], object]] = {
        "bounded lint": lambda: lint(labels, rows),
        "all pairs (before)": lambda: all_pairs(labels, rows),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.runs):  # interleaved: the machine's load falls on both alike
        for name, fn in runs.items():
            times[name].append(cpu_s(fn))
    print(f"{args.labels} near-identical labels, {args.dim} dims, median of {args.runs} runs:")
    cpu = {name: statistics.median(values) for name, values in times.items()}
    for name, fn in runs.items():
        print(f"  {name:20s} {cpu[name]:7.2f} CPU-s   peak {peak_mb(fn):7.1f} MB (traced, one run)")
    print(f"  ratio (before / bounded): {cpu['all pairs (before)'] / cpu['bounded lint']:.1f}x CPU")


if __name__ == "__main__":
    main()
