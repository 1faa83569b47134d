"""Scoring: video embeddings -> predictions, for one row and for many, under a :class:`ScoringPlan`.

One rule, used by ``/classify``, the timeline and the archive's re-labelling alike (``t4v eval``
computes the same with :func:`models.video_classifier.class_logits`): logits ``100 x
normalize(v) @ W.T`` in float64, the softmax over every label, the top ``k``. Computed in float64
the same stored float32 embedding gets the same probabilities (to 1e-12) whatever the shape of
the product: a single video, a timeline's windows, a batch of a million stored rows.

A :class:`ScoringPlan` is what a request means once resolved (``Engine.resolve``): the classifier
and its version, how many predictions, the "none of these" policy and its background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from text4vis.engine.errors import NonFiniteOutput
from text4vis.engine.request import ResolvedAbstain
from text4vis.engine.vocab.abstain import Abstention, decide
from text4vis.engine.vocab.classifier import Classifier, Prediction
from text4vis.models.video_classifier import LOGIT_SCALE

BACKGROUND_SHOWN = 3  # the nearest background labels an abstention reports


@dataclass(frozen=True)
class VocabVersion:
    name: str
    version: int


# re-labelling's arithmetic: float64 (the default) equals /classify; float32 is the opt-in
Scoring = Literal["float64", "float32"]


@dataclass(frozen=True)
class ScoringPlan:
    """What a request means for scoring, resolved once (``Engine.resolve``): the same plan for a
    video, a timeline's windows or every stored row."""

    classifier: Classifier
    vocab: VocabVersion | None  # None: ad-hoc labels
    top_k: int  # 0: every label
    abstain: ResolvedAbstain
    background: Classifier | None = None  # scored when the policy says so

    @property
    def text_model(self) -> str:
        return self.classifier.text_model


@dataclass(frozen=True)
class Ranked:
    """The top ``k`` labels of each of ``N`` rows."""

    indices: torch.Tensor  # int64 [N, k]
    probabilities: torch.Tensor  # float64 [N, k]: softmax over every label of 100 x cosine (+ the cache)
    cosines: torch.Tensor  # float64 [N, k]: with the classifier's rows


def rank(classifier: Classifier, embeddings: torch.Tensor, top_k: int, dtype: torch.dtype = torch.float64) -> Ranked:
    """The top ``top_k`` (0: all) labels of each row of ``embeddings [N, D]``: the float64 logits
    ``100 x normalize(v) @ W.T`` (:func:`class_logits`, with the normalization folded into one
    scale per row: the same to 1e-15, a third less work on a million rows), their log-sum-exp, the
    top ``k`` (the softmax keeps the logits' order). A NaN or infinite score (an engine fault: an
    embedding or a classifier row that is not finite) is :class:`NonFiniteOutput`, never a
    probability served as null.

    ``dtype`` float32 (re-labelling's opt-in): about half the CPU on a million rows; probabilities
    within ~1e-5 of float64's, and labels whose logits tie to float32's precision may swap."""
    with torch.inference_mode():
        wide = embeddings.to(dtype)
        scale = LOGIT_SCALE / torch.linalg.vector_norm(wide, dim=-1, keepdim=True).clamp_min(1e-12)
        text = (wide @ classifier.matrix.to(dtype).T).mul_(scale)  # [N, C]: 100 x cosine
        logits = text
        if classifier.cache is not None:  # a few-shot vocabulary: Tip-Adapter's cache term
            cache = classifier.cache.logits(wide.double() * (scale.double() / LOGIT_SCALE), len(classifier.labels))
            logits = text + cache.to(dtype)
        k = len(classifier.labels) if top_k <= 0 else min(top_k, len(classifier.labels))
        top = torch.topk(logits, k, dim=-1)
        total = torch.logsumexp(logits, dim=-1, keepdim=True)  # NaN or infinite when any logit is
        if not (bool(torch.isfinite(total).all()) and bool(torch.isfinite(top.values).all())):
            raise NonFiniteOutput(
                "the model produced a non-finite score (NaN or infinity) for this input: a fault of the "
                "server's engine, not of the file (see the log)"
            )
        probabilities = torch.exp(top.values - total)
        cosines = text.gather(1, top.indices) / LOGIT_SCALE  # the text rows' cosines, whatever the cache adds
    return Ranked(top.indices, probabilities.double(), cosines.double())  # float64 out whatever the arithmetic


def predictions(classifier: Classifier, ranked: Ranked) -> list[list[Prediction]]:
    """Each row's ranked labels as :class:`Prediction` objects."""
    labels = classifier.labels
    return [
        [Prediction(labels[i], p, c) for i, p, c in zip(idx, prob, cos, strict=True)]
        for idx, prob, cos in zip(
            ranked.indices.tolist(), ranked.probabilities.tolist(), ranked.cosines.tolist(), strict=True
        )
    ]


def abstentions(plan: ScoringPlan, embeddings: torch.Tensor, best: list[Prediction]) -> list[Abstention | None]:
    """The "none of these" decision of each row (None where the policy decides nothing), from its
    best label and the nearest labels of the plan's background, scored from the same embedding."""
    if not plan.abstain.decides:
        return [None] * len(best)
    nearest: list[list[Prediction]] = [[] for _ in best]
    background = plan.background
    if plan.abstain.score_background and background is not None and background.labels:
        nearest = predictions(background, rank(background, embeddings, BACKGROUND_SHOWN))
    return [
        decide(top, near, plan.abstain.margin, plan.abstain.min_score) for top, near in zip(best, nearest, strict=True)
    ]


@dataclass(frozen=True)
class Scored:
    predictions: list[Prediction]
    abstention: Abstention | None = None  # with abstain or min_score: the decision


def score(plan: ScoringPlan, embeddings: torch.Tensor) -> list[Scored]:
    """Each row of ``embeddings [N, D]`` (a video, or a timeline's windows) under ``plan``."""
    rows = predictions(plan.classifier, rank(plan.classifier, embeddings, plan.top_k))
    decisions = abstentions(plan, embeddings, [row[0] for row in rows])
    return [Scored(row, decision) for row, decision in zip(rows, decisions, strict=True)]
