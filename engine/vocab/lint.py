"""Vocabulary lint: the label pairs a zero-shot classifier will confuse, known the moment the labels
are encoded (the paper's Figure 1 is this correlation map for a text classifier).

Warnings inform and never block a PUT: pairs whose classifier rows have a cosine above a threshold,
and labels that become the same words after normalisation (case, punctuation, a plural "s").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from text4vis.models.prompts import format_prompts

if TYPE_CHECKING:
    from text4vis.models.text_encoder import TextEncoder

SIMILAR_COSINE = 0.95  # CLIP text embeddings of unrelated action names sit around 0.6-0.85
MAX_WARNINGS = 100
MAX_MATRIX_LABELS = 500  # GET /vocab/{name}/similarity: beyond, a matrix is not readable anyway
MAX_PAIR_SEARCH = 20_000  # beyond, only near duplicates (C^2 dot products would take minutes)


@dataclass(frozen=True)
class LintWarning:
    kind: Literal["similar", "near_duplicate"]
    labels: tuple[str, str]
    cosine: float


def normalized(label: str) -> str:
    """Lower case, punctuation and underscores to spaces, each word without a plural "s"/"es"."""
    words = re.sub(r"[\W_]+", " ", label.lower()).split()
    return " ".join(re.sub(r"(?<=[a-z]{2})(es|s)$", "", w) for w in words)


def lint(
    labels: tuple[str, ...] | list[str],
    matrix: np.ndarray,
    threshold: float = SIMILAR_COSINE,
    limit: int = MAX_WARNINGS,
) -> list[LintWarning]:
    """Warnings for ``labels`` and their classifier rows ``matrix [C, D]`` (unit rows): near
    duplicates first, then the most similar pairs above ``threshold``; at most ``limit``.
    Computed in blocks of rows (never a C x C matrix); the pair search only up to
    ``MAX_PAIR_SEARCH`` labels."""
    rows = np.asarray(matrix, dtype=np.float32)
    found: dict[tuple[int, int], LintWarning] = {}
    keys: dict[str, int] = {}
    for i, label in enumerate(labels):
        j = keys.setdefault(normalized(label), i)
        if j != i:
            found[(j, i)] = LintWarning("near_duplicate", (labels[j], label), float(rows[j] @ rows[i]))
    similar: list[tuple[float, int, int]] = []
    for start in range(0, len(rows) if len(rows) <= MAX_PAIR_SEARCH else 0, 1024):
        block = rows[start : start + 1024] @ rows.T  # [b, C]
        ii, jj = np.nonzero(block > threshold)
        for i, j in zip((ii + start).tolist(), jj.tolist(), strict=True):
            if i < j and (i, j) not in found:
                similar.append((float(block[i - start, j]), i, j))
    similar.sort(reverse=True)
    warnings = list(found.values())
    warnings += [LintWarning("similar", (labels[i], labels[j]), c) for c, i, j in similar]
    return warnings[:limit]


@dataclass(frozen=True)
class TooLong:
    label: str
    prompt: str
    tokens: int


@dataclass(frozen=True)
class LintReport:
    """What ``t4v vocab lint`` finds offline: what PUT /vocab would warn about, and the prompts it
    would refuse as longer than the text encoder takes (``limit`` tokens)."""

    labels: int
    warnings: list[LintWarning]
    too_long: list[TooLong]
    limit: int


def lint_labels(encoder: TextEncoder, labels: list[str], templates: list[str], clean_labels: bool) -> LintReport:
    """Token counts of every prompt, then the lint of the labels whose prompts all fit."""
    from text4vis.models.classifiers import text_classifier

    prompts = [(label, p) for label in labels for p in format_prompts(label, templates, clean_labels)]
    limit = encoder.context_length
    counts = encoder.token_counts([p for _, p in prompts])
    too_long = [TooLong(label, p, n) for (label, p), n in zip(prompts, counts, strict=True) if n > limit]
    long_labels = {t.label for t in too_long}
    fitting = [label for label in labels if label not in long_labels]
    warnings: list[LintWarning] = []
    if len(fitting) >= 2:
        warnings = lint(fitting, text_classifier(encoder, fitting, templates, clean_labels).numpy())
    return LintReport(len(labels), warnings, too_long, limit)


def clustered_order(matrix: np.ndarray) -> list[int]:
    """Row order that puts similar labels next to each other (average-linkage clustering on
    1 - cosine), so the blocks of a heatmap show."""
    if len(matrix) < 3:
        return list(range(len(matrix)))
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    distance = np.clip(1.0 - matrix @ matrix.T, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    return [int(i) for i in leaves_list(linkage(squareform(distance, checks=False), method="average"))]


def heatmap_png(labels: tuple[str, ...] | list[str], matrix: np.ndarray, title: str) -> bytes:
    """The cosine matrix of the classifier rows as a PNG heatmap, rows and columns clustered."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = clustered_order(matrix)
    cos = (matrix @ matrix.T)[np.ix_(order, order)]
    size = min(20.0, 3.0 + 0.22 * len(order))
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(cos, cmap="viridis", vmin=float(cos.min()), vmax=1.0)
    ticks = range(len(order))
    names = [labels[i] for i in order]
    if len(order) <= 120:
        ax.set_xticks(ticks, names, rotation=90, fontsize=7)
        ax.set_yticks(ticks, names, fontsize=7)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="cosine of the classifier rows")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=80)
    plt.close(fig)
    return out.getvalue()
