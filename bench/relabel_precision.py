"""Re-labelling's arithmetic: the CPU-seconds of scoring stored rows in float64 (the default: it
equals /classify), in float32 (``--scoring float32``), and the float32 floor (the bare product,
log-sum-exp and top-k, nothing else), interleaved; and how far float32's probabilities are from
float64's.

    PYTHONPATH=. .venv/bin/python bench/relabel_precision.py [--rows 65536] [--labels 400] [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from text4vis.engine.vocab.classifier import Classifier
from text4vis.engine.vocab.scoring import rank


def floor32(matrix: torch.Tensor, emb: torch.Tensor, k: int) -> None:
    with torch.inference_mode():
        logits = (emb @ matrix.T).mul_(100.0)
        torch.topk(logits, k, dim=-1)
        torch.logsumexp(logits, dim=-1)


def cpu(fn: object, *args: object) -> float:
    t0 = time.process_time()
    fn(*args)  # type: ignore[operator]
    return time.process_time() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=65_536)
    parser.add_argument("--labels", type=int, default=400)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(args.rows, args.dim, generator=g), dim=-1)
    matrix = F.normalize(torch.randn(args.labels, args.dim, generator=g), dim=-1)
    classifier = Classifier(tuple(f"l{i}" for i in range(args.labels)), matrix)
    times: dict[str, list[float]] = {"float64": [], "float32": [], "floor": []}
    for _ in range(args.runs):  # interleaved
        times["float64"].append(cpu(rank, classifier, emb, 5))
        times["float32"].append(cpu(rank, classifier, emb, 5, torch.float32))
        times["floor"].append(cpu(floor32, matrix, emb, 5))
    med = {k: statistics.median(v) for k, v in times.items()}
    wide, narrow = rank(classifier, emb, 5), rank(classifier, emb, 5, torch.float32)
    same = narrow.indices == wide.indices
    gap = float((narrow.probabilities - wide.probabilities).abs()[same].max())
    print(
        f"relabel scoring, {args.rows:,} x {args.dim} rows, {args.labels} labels, top 5, median of {args.runs} "
        f"interleaved runs (CPU-s): float64 {med['float64']:.3f}, float32 {med['float32']:.3f}, float32 floor "
        f"{med['floor']:.3f}; float64 / float32 = x{med['float64'] / med['float32']:.2f}, "
        f"float32 / floor = x{med['float32'] / med['floor']:.2f}"
    )
    moved = float((~same).double().mean())
    print(f"float32 vs float64: largest probability gap {gap:.2e}; labels in another order {moved:.4%}")


if __name__ == "__main__":
    main()
