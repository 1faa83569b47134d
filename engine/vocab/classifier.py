"""A vocabulary ready to score against: labels and their frozen text-embedding matrix."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from text4vis.engine.errors import NonFiniteOutput
from text4vis.engine.vocab.validation import check_prompt_lengths, validate_labels, validate_templates
from text4vis.models.classifiers import text_classifier
from text4vis.models.prompts import DEFAULT_TEMPLATE
from text4vis.models.text_encoder import TextEncoder


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float  # softmax over all classes of 100 x cosine
    score: float  # cosine similarity between the video and the class embedding


@dataclass(frozen=True)
class AbstainDefaults:
    """A vocabulary's default for "none of these" (``engine/vocab/abstain.py``), stored with it: score a
    background vocabulary (``background``: a registered vocabulary's name; None: the built-in one)
    and abstain when it wins by ``margin``, or under ``min_score``. A request's own fields override."""

    margin: float = 0.0
    min_score: float | None = None
    background: str | None = None

    def to_json(self) -> str:
        return json.dumps({"margin": self.margin, "min_score": self.min_score, "background": self.background})

    @classmethod
    def from_json(cls, text: str | bytes | None) -> AbstainDefaults | None:
        if not text:
            return None
        value = json.loads(text)
        return cls(float(value.get("margin", 0.0)), value.get("min_score"), value.get("background"))


@dataclass(frozen=True)
class Classifier:
    labels: tuple[str, ...]
    matrix: torch.Tensor  # [C, D], rows L2-normalized
    templates: tuple[str, ...] = (DEFAULT_TEMPLATE,)
    text_model: str = ""
    abstain: AbstainDefaults | None = None  # a stored vocabulary's default for "none of these"

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2 or self.matrix.shape[0] != len(self.labels):
            raise ValueError(f"matrix {tuple(self.matrix.shape)} does not fit {len(self.labels)} labels")

    @classmethod
    def from_labels(
        cls,
        encoder: TextEncoder,
        labels: Sequence[str],
        templates: Sequence[str] = (DEFAULT_TEMPLATE,),
        clean_labels: bool = False,
    ) -> Classifier:
        """Encode ``labels`` with ``templates`` (see :func:`models.classifiers.text_classifier`), under
        the server's rules (engine/vocab/validation.py): a prompt over the encoder's length is refused."""
        clean, temps = validate_labels(labels), validate_templates(templates)
        check_prompt_lengths(encoder, clean, temps, clean=clean_labels)
        matrix = text_classifier(encoder, clean, temps, clean_labels)
        return cls(tuple(clean), matrix, tuple(temps), encoder.model_id)

    def predictions(self, logits: torch.Tensor, top_k: int = 5) -> list[Prediction]:
        """Top ``top_k`` (0 = all) of ``logits [C]`` (100 x cosine), sorted by probability. A
        NaN or infinite logit (an engine fault) is :class:`NonFiniteOutput`, never a probability
        served as null."""
        if not bool(torch.isfinite(logits).all()):
            raise NonFiniteOutput(
                "the model produced a non-finite score (NaN or infinity) for this input: a fault of the "
                "server's engine, not of the file (see the log)"
            )
        probs = logits.double().softmax(dim=-1)
        k = len(self.labels) if top_k <= 0 else min(top_k, len(self.labels))
        top = torch.topk(probs, k)
        return [Prediction(self.labels[i], float(probs[i]), float(logits[i]) / 100.0) for i in top.indices.tolist()]
