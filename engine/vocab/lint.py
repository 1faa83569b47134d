"""Vocabulary lint: the label pairs a zero-shot classifier will confuse, known the moment the labels
are encoded (the paper's Figure 1 is this correlation map for a text classifier).

Warnings inform and never block a PUT: pairs whose classifier rows have a cosine above a threshold,
labels that become the same words after normalisation (case, punctuation, a plural "s"), and, in a
few-shot vocabulary, labels whose examples sit closer to another label's examples than to their own.
"""

from __future__ import annotations

import heapq
import logging
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from text4vis.engine.errors import StoreUnavailable
from text4vis.engine.vocab.few_shot import confused_examples
from text4vis.engine.vocab.record import LintWarning, VocabRecord
from text4vis.models.prompts import format_prompts

if TYPE_CHECKING:
    from text4vis.engine.vocab.stores.base import VocabStore
    from text4vis.models.text_encoder import TextEncoder

log = logging.getLogger(__name__)

SIMILAR_COSINE = 0.95  # CLIP text embeddings of unrelated action names sit around 0.6-0.85
MAX_WARNINGS = 100
MAX_MATRIX_LABELS = 500  # GET /vocab/{name}/similarity: beyond, a matrix is not readable anyway
MAX_PAIR_SEARCH = 20_000  # beyond, only near duplicates (C^2 dot products would take minutes)


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

    Bounded in memory whatever the labels: the cosines are computed in blocks of rows (about
    1M floats each, never a C x C matrix), and each block gives only its ``limit`` best pairs,
    merged into the ``limit`` best so far (5,000 near-identical labels have 12.5M pairs above the
    threshold, of which 100 are kept). The pair search runs up to ``MAX_PAIR_SEARCH`` labels."""
    rows = np.asarray(matrix, dtype=np.float32)
    found: dict[tuple[int, int], LintWarning] = {}
    keys: dict[str, int] = {}
    for i, label in enumerate(labels):
        j = keys.setdefault(normalized(label), i)
        if j != i and len(found) < limit:
            found[(j, i)] = LintWarning("near_duplicate", (labels[j], label), float(rows[j] @ rows[i]))
    wanted = limit - len(found)
    n = len(rows)
    best: list[tuple[float, int, int]] = []
    if wanted > 0 and n <= MAX_PAIR_SEARCH:
        step = max(1, (1 << 20) // max(n, 1))
        for start in range(0, n, step):
            block = rows[start : start + step] @ rows.T  # [b, C]
            # pairs (i, j) with i < j only, and only above the threshold
            block[np.arange(n)[None, :] <= np.arange(start, start + len(block))[:, None]] = -np.inf
            block[block <= threshold] = -np.inf
            flat = block.ravel()
            take = min(wanted + len(found), int(np.count_nonzero(flat > -np.inf)))
            if take == 0:
                continue
            top = np.argpartition(flat, -take)[-take:]
            for k in top.tolist():
                i, j = divmod(k, n)
                if (i + start, j) not in found:
                    best.append((float(flat[k]), i + start, j))
            best = heapq.nlargest(wanted, best)
    warnings = list(found.values())
    warnings += [LintWarning("similar", (labels[i], labels[j]), c) for c, i, j in sorted(best, reverse=True)]
    return warnings[:limit]


class Linter:
    """A vocabulary version's lint, computed once and kept with the version in the store.

    Lint runs on one thread of its own, so however many vocabularies are read at once it never
    takes the threads uploads and the store need; concurrent reads of one version that was not
    linted yet (after a restart, or a version stored by an earlier release) wait on the same
    computation (single flight)."""

    def __init__(self, store: VocabStore) -> None:
        self._store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="t4v-lint")
        self._running: dict[str, Future[list[LintWarning]]] = {}
        self._lock = threading.Lock()

    def warnings(self, record: VocabRecord) -> Future[list[LintWarning]]:
        """The lint of ``record``: at once when stored with it, else computed (once per ETag)."""
        if record.lint is not None:
            done: Future[list[LintWarning]] = Future()
            done.set_result(list(record.lint))
            return done
        with self._lock:
            running = self._running.get(record.etag)
            if running is None:
                running = self._running[record.etag] = self._executor.submit(self._lint, record)
            return running

    def _lint(self, record: VocabRecord) -> list[LintWarning]:
        try:
            warnings = lint(record.labels, record.matrix)
            if record.few_shot is not None:
                warnings += [
                    LintWarning("examples", (own, other), cosine)
                    for own, other, cosine in confused_examples(record.labels, record.few_shot)
                ]
            try:
                self._store.put_lint(record.name, record.etag, warnings)
            except StoreUnavailable:
                log.info("lint of %s v%d not stored (the store is unreachable)", record.name, record.version)
            return warnings
        finally:
            with self._lock:
                self._running.pop(record.etag, None)


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
