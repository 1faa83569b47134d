"""What a store keeps of one vocabulary version (``stores/``), read by the registry and the lint."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import numpy as np

from text4vis.engine.request import AbstainDefaults
from text4vis.engine.vocab.few_shot import FewShot


@dataclass(frozen=True)
class LintWarning:
    kind: Literal["similar", "near_duplicate", "examples"]
    labels: tuple[str, str]
    cosine: float


def warnings_to_json(warnings: list[LintWarning]) -> str:
    """How a store keeps a version's lint (beside its matrix)."""
    return json.dumps([[w.kind, *w.labels, w.cosine] for w in warnings], ensure_ascii=False)


def warnings_from_json(text: str | bytes | None) -> tuple[LintWarning, ...] | None:
    """None: not linted yet (a version stored before the lint was, or by an earlier release)."""
    if not text:
        return None
    return tuple(LintWarning(kind, (a, b), float(c)) for kind, a, b, c in json.loads(text))


@dataclass(frozen=True)
class VocabRecord:
    name: str
    version: int
    etag: str
    text_model: str
    labels: tuple[str, ...]
    templates: tuple[str, ...]
    matrix: np.ndarray  # float32 [C, D]
    updated_at: float
    clean_labels: bool = False  # prompts from cleaned-up labels (opt-in; labels as written by default)
    abstain: AbstainDefaults | None = None  # the default for "none of these" (None: off unless asked)
    lint: tuple[LintWarning, ...] | None = None  # computed once per version, then stored with it (None: not yet)
    few_shot: FewShot | None = None  # examples and how they are used (few_shot.py)


@dataclass(frozen=True)
class VocabSummary:
    """What a listing shows, read without the labels or the matrix."""

    name: str
    version: int
    etag: str
    text_model: str
    num_labels: int
