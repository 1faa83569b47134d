"""Vocabularies that learn from a few examples, without training.

A vocabulary may carry examples: stored embeddings (the archive's rows, videos or windows) each
labelled with one of its classes. Two training-free ways to use them, both scored by the one
scoring rule (``scoring.py``):

``tip-adapter``  Tip-Adapter's cache (Zhang et al., ECCV 2022, ``run_tip_adapter`` in
                 gaopengcuhk/Tip-Adapter): ``logits = 100 f W^T + alpha exp(-beta (1 - f K^T)) V``
                 with ``f`` the video's normalized embedding, ``W`` the text rows, ``K`` the
                 examples' normalized embeddings and ``V`` their one-hot labels. Defaults are the
                 reference's UCF-101 config (``init_alpha: 3``, ``init_beta: 1``).
``prototype``    each labelled class's row becomes ``normalize((1 - blend) w_c + blend p_c)``, with
                 ``p_c`` the normalized mean of its examples: ``blend`` 1 is the classifier of
                 visual statistics the Text4Vis paper compares with text initialisations, 0 the
                 text classifier.

A label without examples keeps its text row (and gets no cache term). Parameters left unset are
fitted by leave-one-out over the examples (there is no validation set): each example is scored
as a query against the others, on a grid of the reference's search ranges and the same steps
scaled to the examples' own spread, and the answer reports the leave-one-out accuracy of
zero-shot and of the fitted classifier.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Protocol

import numpy as np
import torch

from text4vis.engine.request import FewShotAsk
from text4vis.models.errors import InputError

MAX_PER_LABEL = 64
MAX_EXAMPLES = 50_000
TIP_ALPHA, TIP_BETA = 3.0, 1.0  # the reference's configs/ucf101.yaml: init_alpha, init_beta
PROTOTYPE_BLEND = 0.5
# the grids of the fit: the reference's UCF-101 search ranges (beta 0.1..7, alpha 0.1..3), coarser,
# and the same steps scaled to the examples' own spread (_scaled_grids)
BETAS = tuple(round(0.1 + i * (7.0 - 0.1) / 11, 3) for i in range(12))
ALPHAS = tuple(round(0.1 + i * (3.0 - 0.1) / 9, 3) for i in range(10))
SPREAD_STEPS = (0.5, 1.0, 2.0, 4.0, 8.0)
BLENDS = tuple(i / 10 for i in range(11))
FIT_QUERIES = 1_000  # at most this many examples are the leave-one-out queries (a seeded draw)
BLOCK_ELEMENTS = 1 << 22  # affinities computed in blocks of about this many (32 MB of float64)


class ExampleSource(Protocol):
    """Where examples' embeddings come from (the archive, under the running model: the engine
    provides it; the vocabulary layer knows no archive)."""

    @property
    def fingerprint(self) -> str:
        """How the embeddings it answers were made (the archive table's fingerprint)."""
        ...

    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        """The stored embeddings of ``ids`` (float32 ``[N, D]``, in order); an error naming the
        first id it does not hold."""
        ...


@dataclass(frozen=True)
class Fit:
    """Leave-one-out accuracy over the examples: of the text classifier alone, and with them."""

    zero_shot: float
    few_shot: float
    queries: int  # examples scored as queries (all of them, or a seeded draw of FIT_QUERIES)


@dataclass(frozen=True)
class FewShot:
    """A vocabulary version's examples and how it uses them."""

    ask: FewShotAsk  # as the PUT asked (kept: a new model fits again)
    method: str  # tip-adapter | prototype
    alpha: float
    beta: float
    blend: float
    ids: tuple[str, ...]  # the archive rows
    labels: np.ndarray  # int64 [N]: index of each example's label in the vocabulary
    embeddings: np.ndarray  # float32 [N, D], normalized
    made_under: str  # the fingerprint of the archive table the embeddings were read from
    fit: Fit | None = None

    def counts(self, labels: tuple[str, ...]) -> dict[str, int]:
        """Examples per label (labels without any left out)."""
        found = np.bincount(self.labels, minlength=len(labels))
        return {labels[i]: int(n) for i, n in enumerate(found) if n}

    def to_bytes(self) -> bytes:
        """How a store keeps it: a JSON header, then the float32 embeddings."""
        header = {
            "ask": asdict(self.ask),
            "method": self.method,
            "alpha": self.alpha,
            "beta": self.beta,
            "blend": self.blend,
            "ids": list(self.ids),
            "labels": self.labels.tolist(),
            "dim": int(self.embeddings.shape[1]),
            "made_under": self.made_under,
            "fit": asdict(self.fit) if self.fit else None,
        }
        text = json.dumps(header).encode()
        return struct.pack("<I", len(text)) + text + np.ascontiguousarray(self.embeddings, np.float32).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> FewShot | None:
        if not data:
            return None
        (size,) = struct.unpack("<I", data[:4])
        h = json.loads(data[4 : 4 + size])
        embeddings = np.frombuffer(data[4 + size :], dtype=np.float32).reshape(-1, h["dim"]).copy()
        return cls(
            FewShotAsk(**h["ask"]),
            h["method"],
            float(h["alpha"]),
            float(h["beta"]),
            float(h["blend"]),
            tuple(h["ids"]),
            np.asarray(h["labels"], dtype=np.int64),
            embeddings,
            h["made_under"],
            Fit(**h["fit"]) if h["fit"] else None,
        )


@dataclass(frozen=True)
class TipCache:
    """Tip-Adapter's cache as scoring uses it."""

    keys: torch.Tensor  # float64 [N, D], normalized
    labels: torch.Tensor  # int64 [N]
    alpha: float
    beta: float

    def logits(self, queries: torch.Tensor, classes: int) -> torch.Tensor:
        """``alpha exp(-beta (1 - f K^T)) V`` for normalized ``queries [B, D]`` (float64): ``[B, C]``,
        the affinities computed a block of rows at a time (never ``B x N`` at once)."""
        out = torch.zeros(len(queries), classes, dtype=torch.float64)
        step = max(1, BLOCK_ELEMENTS // max(1, len(self.keys)))
        for start in range(0, len(queries), step):
            affinity = queries[start : start + step] @ self.keys.T
            weights = torch.exp(-self.beta * (1.0 - affinity))  # [b, N]
            out[start : start + step].index_add_(1, self.labels, weights)  # @ V, V one-hot
        return out.mul_(self.alpha)


def by_label(labels: tuple[str, ...], few_shot: FewShot) -> dict[str, list[str]]:
    """A version's examples as a PUT gives them: ``{label: [row ids]}``."""
    out: dict[str, list[str]] = {}
    for i, row_id in zip(few_shot.labels.tolist(), few_shot.ids, strict=True):
        out.setdefault(labels[i], []).append(row_id)
    return out


def check_examples(labels: tuple[str, ...], examples: dict[str, list[str]]) -> list[tuple[int, str]]:
    """``{label: [row ids]}`` -> ``(label index, id)`` pairs; :class:`InputError` naming the offending
    label or id (a label not in the vocabulary, an empty list, too many, an id given twice)."""
    index = {label: i for i, label in enumerate(labels)}
    pairs: list[tuple[int, str]] = []
    seen: dict[str, str] = {}
    for label, ids in examples.items():
        if label not in index:
            raise InputError(f"examples name the label {label!r}, which is not one of the vocabulary's labels")
        if not ids:
            raise InputError(f"the examples of {label!r} are an empty list: give at least one row id, or leave it out")
        if len(ids) > MAX_PER_LABEL:
            raise InputError(f"{label!r} has {len(ids)} examples; at most {MAX_PER_LABEL} per label")
        for row_id in ids:
            if row_id in seen:
                raise InputError(f"the row {row_id!r} is an example of both {seen[row_id]!r} and {label!r}")
            seen[row_id] = label
            pairs.append((index[label], row_id))
    if not pairs:
        raise InputError("examples is empty: give {label: [row ids]} for at least one label")
    if len(pairs) > MAX_EXAMPLES:
        raise InputError(f"{len(pairs)} examples in all; at most {MAX_EXAMPLES}")
    return pairs


def build(
    text: np.ndarray,
    labels: np.ndarray,
    ids: tuple[str, ...],
    embeddings: np.ndarray,
    ask: FewShotAsk,
    made_under: str,
) -> FewShot:
    """The few-shot part of a version: ``text [C, D]`` the text rows (normalized), ``labels [N]``
    and ``embeddings [N, D]`` the examples. Unset parameters are fitted by leave-one-out."""
    keys = _normalized(embeddings)
    tip = _fit_tip(text, keys, labels, ask) if ask.method in ("tip-adapter", "auto") else None
    proto = _fit_prototype(text, keys, labels, ask) if ask.method in ("prototype", "auto") else None
    options = [f for f in (tip, proto) if f is not None]
    best = max(options, key=lambda f: f.fit.few_shot if f.fit else 0.0)  # tip-adapter first on a tie
    return replace(best, ids=ids, labels=labels, embeddings=keys.astype(np.float32), made_under=made_under)


def classifier_rows(text: np.ndarray, few_shot: FewShot) -> np.ndarray:
    """The prototype classifier's rows: text rows blended with the classes' example means."""
    return _blended(text, _normalized(few_shot.embeddings), few_shot.labels, few_shot.blend)


def tip_cache(few_shot: FewShot) -> TipCache:
    return TipCache(
        torch.from_numpy(_normalized(few_shot.embeddings).astype(np.float64)),
        torch.from_numpy(few_shot.labels),
        few_shot.alpha,
        few_shot.beta,
    )


def confused_examples(labels: tuple[str, ...], few_shot: FewShot) -> list[tuple[str, str, float]]:
    """``(label, other label, mean cosine)`` for each label most of whose examples are nearer
    another label's example mean than their own (the own mean taken without the example): the
    examples say the two are one class, or one of them is mislabelled."""
    keys, labels_of = _normalized(few_shot.embeddings), few_shot.labels
    sums = np.zeros((len(labels), keys.shape[1]))
    np.add.at(sums, labels_of, keys)
    counts = np.bincount(labels_of, minlength=len(labels))
    means = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    scores = keys @ means.T  # [N, C]
    scores[:, counts == 0] = -np.inf
    own = sums[labels_of] - keys
    alone = counts[labels_of] == 1
    own_mean = own / np.maximum(np.linalg.norm(own, axis=1, keepdims=True), 1e-12)
    scores[np.arange(len(keys)), labels_of] = np.where(alone, -np.inf, np.sum(keys * own_mean, axis=1))
    nearest = np.argmax(scores, axis=1)
    found: list[tuple[str, str, float]] = []
    for c in np.flatnonzero(counts > 1):
        rows = np.flatnonzero(labels_of == c)
        others = nearest[rows][nearest[rows] != c]
        if len(others) * 2 > len(rows):
            other = int(np.bincount(others).argmax())
            if (labels[other], labels[c]) not in {(a, b) for a, b, _ in found}:  # a pair once
                found.append((labels[c], labels[other], float(np.mean(scores[rows, other]))))
    return found


# -- the fit ----------------------------------------------------------------------------------


def _normalized(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))[:, None]
    return rows / np.maximum(norms, 1e-12)


def _queries(n: int) -> np.ndarray:
    """Which examples are the leave-one-out queries: all, or a seeded draw of FIT_QUERIES."""
    if n <= FIT_QUERIES:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, FIT_QUERIES, replace=False))


def _zero_shot(text: np.ndarray, keys: np.ndarray, labels: np.ndarray, queries: np.ndarray) -> float:
    return float(np.mean(np.argmax(keys[queries] @ text.T, axis=1) == labels[queries]))


def _fit_tip(text: np.ndarray, keys: np.ndarray, labels: np.ndarray, ask: FewShotAsk) -> FewShot:
    """Tip-Adapter's alpha and beta by leave-one-out (each query's own key left out of the cache):
    the grid's first best, or the values asked (their leave-one-out accuracy reported)."""
    queries = _queries(len(keys))
    scaled_betas, scaled_alphas = _scaled_grids(text, keys, queries)
    betas = (ask.beta,) if ask.beta is not None else scaled_betas
    alphas = (ask.alpha,) if ask.alpha is not None else scaled_alphas
    # float32: a fit picks parameters (its accuracies are counts); scoring itself runs in float64
    t_text, t_keys = torch.from_numpy(text.astype(np.float32)), torch.from_numpy(keys.astype(np.float32))
    t_labels = torch.from_numpy(labels)
    correct = torch.zeros(len(betas), len(alphas), dtype=torch.int64)
    step = max(1, BLOCK_ELEMENTS // max(1, len(keys)))
    for start in range(0, len(queries), step):
        rows = torch.from_numpy(queries[start : start + step])
        own = t_labels[rows]
        text_logits = 100.0 * t_keys[rows] @ t_text.T  # [b, C]
        affinity = t_keys[rows] @ t_keys.T  # [b, N]
        for i, beta in enumerate(betas):
            weights = torch.exp(-beta * (1.0 - affinity))
            weights[torch.arange(len(rows)), rows] = 0.0  # leave itself out
            cache = torch.zeros(len(rows), len(text)).index_add_(1, t_labels, weights)  # @ V
            for j, alpha in enumerate(alphas):
                correct[i, j] += int((torch.argmax(text_logits + alpha * cache, dim=1) == own).sum())
    flat = int(torch.argmax(correct))  # the first best: the smaller beta, then the smaller alpha
    i, j = divmod(flat, len(alphas))
    fit = Fit(_zero_shot(text, keys, labels, queries), float(correct[i, j]) / len(queries), len(queries))
    return _made("tip-adapter", ask, alphas[j], betas[i], PROTOTYPE_BLEND, fit)


def _scaled_grids(text: np.ndarray, keys: np.ndarray, queries: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """The reference's grids, and the same steps scaled to these examples: beta by their typical
    ``1 - affinity`` (embeddings whose cosines all sit near 1, as a small or random model's do,
    need a much sharper cache than CLIP's 0.1..7), alpha by the spread of their text logits (the
    cache must be able to outweigh it)."""
    sample = keys[queries[:512]]
    gaps = 1.0 - sample @ sample.T
    gap = float(np.median(gaps[~np.eye(len(sample), dtype=bool)])) if len(sample) > 1 else 1.0
    logits = 100.0 * sample @ text.T
    spread = float(np.median(logits.max(axis=1) - logits.min(axis=1))) if text.shape[0] > 1 else 1.0
    betas = {*BETAS, *(round(step / max(gap, 1e-6), 3) for step in SPREAD_STEPS)}
    alphas = {*ALPHAS, *(round(step * max(spread, 1e-6) / 2, 3) for step in SPREAD_STEPS)}
    return tuple(sorted(betas)), tuple(sorted(alphas))


def _fit_prototype(text: np.ndarray, keys: np.ndarray, labels: np.ndarray, ask: FewShotAsk) -> FewShot:
    """The blend by leave-one-out (each query's class mean taken without it): the grid's first
    best, or the value asked (its leave-one-out accuracy reported)."""
    queries = _queries(len(keys))
    zero = _zero_shot(text, keys, labels, queries)
    blends = (ask.blend,) if ask.blend is not None else BLENDS
    sums = np.zeros_like(text)
    np.add.at(sums, labels, keys)
    counts = np.bincount(labels, minlength=len(text))
    best = (-1.0, blends[0])
    for blend in blends:
        rows = _blended(text, keys, labels, blend)
        scores = keys[queries] @ rows.T  # [q, C]
        own = labels[queries]
        left = sums[own] - keys[queries]  # the class mean without the query
        has_others = counts[own] > 1
        mean = left / np.maximum(np.linalg.norm(left, axis=1, keepdims=True), 1e-12)
        row = np.where(has_others[:, None], (1 - blend) * text[own] + blend * mean, text[own])
        row /= np.maximum(np.linalg.norm(row, axis=1, keepdims=True), 1e-12)
        scores[np.arange(len(queries)), own] = np.sum(keys[queries] * row, axis=1)
        accuracy = float(np.mean(np.argmax(scores, axis=1) == own))
        if accuracy > best[0]:
            best = (accuracy, blend)
    fit = Fit(zero, best[0], len(queries))
    return _made("prototype", ask, TIP_ALPHA, TIP_BETA, best[1], fit)


def _blended(text: np.ndarray, keys: np.ndarray, labels: np.ndarray, blend: float) -> np.ndarray:
    sums = np.zeros_like(np.asarray(text, dtype=np.float64))
    np.add.at(sums, labels, keys)
    counts = np.bincount(labels, minlength=len(text))
    means = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    rows = np.where(counts[:, None] > 0, (1 - blend) * text + blend * means, text)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _made(method: str, ask: FewShotAsk, alpha: float, beta: float, blend: float, fit: Fit | None) -> FewShot:
    empty = np.zeros((0, 1), dtype=np.float32)
    return FewShot(ask, method, float(alpha), float(beta), float(blend), (), np.zeros(0, np.int64), empty, "", fit)
