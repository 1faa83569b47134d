"""The few-shot math on synthetic embeddings: the leave-one-out fit, the draw of the protocol, the
lint of mislabelled examples, and the stored form of a version's examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from text4vis.engine.request import FewShotAsk
from text4vis.engine.vocab.classifier import Classifier
from text4vis.engine.vocab.few_shot import FewShot, build, check_examples, confused_examples
from text4vis.engine.vocab.few_shot_eval import draw, evaluate_shots
from text4vis.models.errors import InputError


def clusters(classes: int = 5, per_class: int = 6, dim: int = 32, spread: float = 0.3, seed: int = 0):  # noqa: ANN201
    """Embeddings around one centre per class, and text rows that say nothing of them (random)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    labels = torch.arange(classes).repeat_interleave(per_class)
    emb = F.normalize(centres[labels] + spread * torch.randn(len(labels), dim, generator=g) / dim**0.5, dim=-1)
    text = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    return Classifier(tuple(f"c{i}" for i in range(classes)), text), emb.numpy(), labels.numpy()


def test_the_protocol_beats_the_words_and_reports_every_method() -> None:
    classifier, emb, labels = clusters()
    result = evaluate_shots(classifier, emb, labels, shots=2, draws=3)
    assert result["examples_per_draw"] == 10 and result["videos"] == 30
    assert result["prototype"]["top1_mean"] > 0.9 and result["tip-adapter"]["top1_mean"] > 0.9
    assert result["zero-shot"]["top1_mean"] < 0.6  # random text rows
    assert all(0.0 <= result[m]["top5_mean"] <= 1.0 for m in ("zero-shot", "prototype", "tip-adapter"))


def test_a_draw_keeps_one_video_of_each_class_to_score() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    picked = draw(labels, 5, seed=1)
    assert sorted(labels[picked].tolist()) == [0, 0, 1]  # class 2's only video stays; the others keep one
    assert np.array_equal(draw(labels, 5, seed=1), picked)  # seeded


def test_the_fit_reports_leave_one_out_and_explicit_values_are_kept() -> None:
    classifier, emb, labels = clusters()
    text = classifier.matrix.numpy().astype(np.float64)
    ids = tuple(map(str, range(len(labels))))
    fitted = build(text, labels, ids, emb, FewShotAsk("auto"), "fp")
    assert fitted.fit is not None and fitted.fit.few_shot > fitted.fit.zero_shot and fitted.fit.queries == 30
    kept = build(text, labels, ids, emb, FewShotAsk("tip-adapter", alpha=2.5, beta=4.0), "fp")
    assert (kept.method, kept.alpha, kept.beta) == ("tip-adapter", 2.5, 4.0) and kept.fit is not None
    again = FewShot.from_bytes(kept.to_bytes())
    assert again is not None and again.ids == ids and np.array_equal(again.labels, labels)
    assert np.array_equal(again.embeddings, kept.embeddings) and again.ask == kept.ask and again.fit == kept.fit


def test_mislabelled_examples_are_named_once() -> None:
    """Labels c0 and c1 both hold videos of one class, c2 its own: the pair is named once; the
    same examples filed by their class are named never."""
    classifier, emb, labels = clusters(classes=3, per_class=4, spread=0.1)
    text = classifier.matrix.numpy().astype(np.float64)
    right = build(text, labels, (), emb, FewShotAsk("prototype", blend=1.0), "")
    assert confused_examples(classifier.labels, right) == []
    rows = np.flatnonzero(labels > 0)  # classes 1 and 2
    filed = np.where(labels[rows] == 1, np.arange(len(rows)) % 2, 2)  # class 1's videos under c0 and c1
    mixed = build(text, filed, (), emb[rows], FewShotAsk("prototype", blend=1.0), "")
    assert [{a, b} for a, b, _ in confused_examples(classifier.labels, mixed)] == [{"c0", "c1"}]


@pytest.mark.parametrize(
    ("examples", "named"),
    [
        ({"nope": ["a"]}, "'nope'"),
        ({"c0": []}, "'c0'"),
        ({"c0": ["a"], "c1": ["a"]}, "'a'"),
        ({"c0": [str(i) for i in range(65)]}, "at most 64"),
        ({}, "examples is empty"),
    ],
)
def test_bad_examples_name_the_item(examples: dict[str, list[str]], named: str) -> None:
    with pytest.raises(InputError, match=named):
        check_examples(("c0", "c1"), examples)


@pytest.mark.parametrize("ask", [{"method": "knn"}, {"alpha": float("nan")}, {"beta": -1.0}, {"blend": 1.5}])
def test_bad_parameters_are_refused(ask: dict[str, object]) -> None:
    with pytest.raises(InputError):
        FewShotAsk(**ask)  # type: ignore[arg-type]
