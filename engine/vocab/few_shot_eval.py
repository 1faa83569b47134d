"""The few-shot protocol on a labelled list (``t4v eval --shots K``): K examples per class drawn
with a seed, the rest scored, top-1 and top-5 of zero-shot, of class prototypes and of Tip-Adapter
(each fitted by leave-one-out over the drawn examples, as a vocabulary PUT fits them), the mean and
std over several draws: the table the few-shot literature reports, from stored embeddings (a
sweep over K decodes nothing)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from text4vis.engine.request import FewShotAsk
from text4vis.engine.vocab.classifier import Classifier
from text4vis.engine.vocab.few_shot import build
from text4vis.engine.vocab.registry import with_few_shot
from text4vis.engine.vocab.scoring import rank

METHODS = ("zero-shot", "prototype", "tip-adapter")


def draw(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Indices of ``shots`` examples per class (fewer where a class has fewer than shots + 1:
    one of its videos always stays to be scored), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        picked.append(rng.choice(rows, min(shots, len(rows) - 1), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def _accuracy(classifier: Classifier, embeddings: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    ranked = rank(classifier, torch.from_numpy(embeddings), 5)
    hits = ranked.indices == torch.from_numpy(labels)[:, None]
    return float(hits[:, 0].double().mean()), float(hits.any(dim=1).double().mean())


def evaluate_shots(
    classifier: Classifier, embeddings: np.ndarray, labels: np.ndarray, shots: int, draws: int = 5, seed: int = 0
) -> dict[str, Any]:
    """``classifier`` the text classifier of the list's classes, ``embeddings [N, D]`` and
    ``labels [N]`` the list's videos. Each draw scores the videos not drawn as examples."""
    if shots < 1 or draws < 1:
        raise ValueError("shots and draws must be at least 1")
    text = classifier.matrix.numpy().astype(np.float64)
    found: dict[str, list[tuple[float, float]]] = {m: [] for m in METHODS}
    examples = 0
    for d in range(draws):
        chosen = draw(labels, shots, seed + d)
        held = np.setdiff1d(np.arange(len(labels)), chosen)
        if not len(chosen) or not len(held):
            raise ValueError(f"{shots} shots leave no example or no video to score")
        examples = len(chosen)
        found["zero-shot"].append(_accuracy(classifier, embeddings[held], labels[held]))
        for method in ("prototype", "tip-adapter"):
            ids = tuple(str(i) for i in chosen)
            few = build(text, labels[chosen], ids, embeddings[chosen], FewShotAsk(method), "")
            found[method].append(_accuracy(with_few_shot(classifier, few), embeddings[held], labels[held]))
    out: dict[str, Any] = {"shots": shots, "draws": draws, "videos": len(labels), "examples_per_draw": examples}
    for method, values in found.items():
        top1, top5 = np.array([v[0] for v in values]), np.array([v[1] for v in values])
        out[method] = {
            "top1_mean": float(top1.mean()),
            "top1_std": float(top1.std()),
            "top5_mean": float(top5.mean()),
            "top5_std": float(top5.std()),
        }
    return out
