"""Open-set abstention ("none of these"): a closed zero-shot vocabulary always names one of its
labels, so a video of cooking classified against {basketball, surfing} is "surfing" at 90%.
A background vocabulary (by default the Kinetics-400 names, minus those close to the user's
labels) is scored alongside; when its best label beats the vocabulary's best (by a margin), or
the best cosine is under ``min_score``, the answer abstains. Scores are cosines."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from text4vis.engine.vocab.classifier import Classifier, Prediction
from text4vis.engine.vocab.lint import normalized

CLOSE_TO_USER = 0.9  # a background label this close to one of the user's is the user's, not background


@dataclass(frozen=True)
class Abstention:
    abstained: bool
    reason: str | None
    background: list[Prediction]  # the nearest background labels (probability: softmax over the background)


def background_for(vocabulary: Classifier, candidates: Classifier, close: float = CLOSE_TO_USER) -> Classifier:
    """``candidates`` without the labels that are the vocabulary's own: the same words after
    normalisation, or a text embedding within cosine ``close`` of one of its rows."""
    own = {normalized(label) for label in vocabulary.labels}
    nearest = nearest_cosines(candidates.matrix, vocabulary.matrix)
    keep = [i for i, label in enumerate(candidates.labels) if normalized(label) not in own and nearest[i] < close]
    return Classifier(
        tuple(candidates.labels[i] for i in keep), candidates.matrix[keep], candidates.templates, candidates.text_model
    )


def nearest_cosines(rows: torch.Tensor, others: torch.Tensor, block_elements: int = 1 << 20) -> torch.Tensor:
    """For each row of ``rows [N, D]``, its largest cosine with a row of ``others [M, D]``,
    computed in blocks of about ``block_elements`` cosines: never the N x M matrix (20k labels
    against 20k background labels would be 1.6 GB per request)."""
    step = max(1, block_elements // max(1, len(others)))
    out = torch.empty(len(rows), dtype=rows.dtype)
    if len(others) == 0:
        return out.fill_(float("-inf"))
    for start in range(0, len(rows), step):
        out[start : start + step] = (rows[start : start + step] @ others.T).max(dim=1).values
    return out


def decide(
    best: Prediction, background: list[Prediction], margin: float = 0.0, min_score: float | None = None
) -> Abstention:
    """Abstain when the best background label's cosine beats the best vocabulary label's by more
    than ``margin``, or when the best vocabulary cosine is below ``min_score``."""
    if background and background[0].score > best.score + margin:
        return Abstention(
            True,
            f"background label {background[0].label!r} scores {background[0].score:.3f}, above "
            f"the best label {best.label!r} ({best.score:.3f}) by more than {margin:g}",
            background,
        )
    if min_score is not None and best.score < min_score:
        return Abstention(
            True, f"the best label {best.label!r} scores {best.score:.3f}, under min_score {min_score:g}", background
        )
    return Abstention(False, None, background)
