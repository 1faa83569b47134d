"""Open-set abstention: the decision and the background set, on constructed embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from text4vis.engine.vocab.abstain import background_for, decide
from text4vis.engine.vocab.classifier import Classifier, Prediction
from text4vis.engine.vocab.scoring import predictions, rank


def _classifier(labels: list[str], rows: torch.Tensor) -> Classifier:
    return Classifier(tuple(labels), F.normalize(rows.float(), dim=-1))


def test_a_video_nearer_a_background_label_abstains() -> None:
    torch.manual_seed(0)
    basis = torch.eye(6)
    vocab = _classifier(["basketball", "surfing"], basis[:2])
    rows = torch.stack([basis[2], basis[1] + 0.01 * basis[3], basis[0]])
    background = _classifier(["cooking", "surfing water", "Basketball!"], rows)
    kept = background_for(vocab, background)
    assert kept.labels == ("cooking",)  # "surfing water" is within cosine 0.9 of surfing; "Basketball!" is its name
    video = F.normalize(0.9 * basis[2] + 0.3 * basis[1], dim=-1)  # mostly cooking, a little like surfing
    (best,) = predictions(vocab, rank(vocab, video[None], 1))[0]
    nearest = predictions(kept, rank(kept, video[None], 3))[0]
    assert best.label == "surfing" and best.probability > 0.9  # the closed vocabulary is sure, and wrong
    verdict = decide(best, nearest)
    assert verdict.abstained and "cooking" in (verdict.reason or "") and verdict.background[0].label == "cooking"
    assert not decide(best, nearest, margin=0.7).abstained  # the margin must be beaten


def test_min_score_alone() -> None:
    best = Prediction("surfing", 0.99, 0.21)
    assert decide(best, [], min_score=0.25).abstained
    assert not decide(best, [], min_score=0.2).abstained
    assert decide(best, [], min_score=0.25).reason == "the best label 'surfing' scores 0.210, under min_score 0.25"


def test_the_background_is_filtered_in_blocks() -> None:
    """The nearest-label cosines of 8,000 background labels against 8,000 labels, in a fresh
    process: the peak RSS grows by a few MB (the whole 8k x 8k matrix was +256 MB), and the
    blocked answer is the direct one."""
    import subprocess
    import sys

    script = """
import resource, torch, torch.nn.functional as F
from text4vis.engine.vocab.abstain import nearest_cosines
torch.manual_seed(0)
rows, others = F.normalize(torch.randn(8000, 64), dim=-1), F.normalize(torch.randn(8000, 64), dim=-1)
small = nearest_cosines(rows[:300], others[:500], block_elements=1000)
assert torch.allclose(small, (rows[:300] @ others[:500].T).max(dim=1).values)
torch.set_num_threads(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
nearest_cosines(rows, others)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    grown_mb = float(out.stdout.strip())
    assert grown_mb < 64, f"filtering the background grew the peak RSS by {grown_mb:.0f} MB"
