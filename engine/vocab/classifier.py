"""A vocabulary ready to score against: labels and their frozen text-embedding matrix (and, for a
few-shot vocabulary, Tip-Adapter's cache of its examples: ``few_shot.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from text4vis.engine.request import AbstainDefaults
from text4vis.engine.vocab.few_shot import TipCache
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
class Classifier:
    labels: tuple[str, ...]
    matrix: torch.Tensor  # [C, D], rows L2-normalized
    templates: tuple[str, ...] = (DEFAULT_TEMPLATE,)
    text_model: str = ""
    abstain: AbstainDefaults | None = None  # a stored vocabulary's default for "none of these"
    cache: TipCache | None = None  # a few-shot vocabulary's examples, added to the logits (tip-adapter)

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
