"""Vocabulary lint on constructed embeddings: similar pairs, near duplicates, clustering."""

from __future__ import annotations

import numpy as np

from text4vis.engine.vocab.lint import SIMILAR_COSINE, clustered_order, lint, normalized


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_similar_pairs_above_the_threshold_most_similar_first() -> None:
    rng = np.random.default_rng(0)
    rows = _unit(rng.normal(size=(2500, 64)))  # random directions: cosines near 0
    rows[2000] = _unit(rows[10:11] + 0.005 * rng.normal(size=(1, 64)))[0]  # in another block of 1024 rows
    rows[7] = _unit(rows[3:4] + 0.04 * rng.normal(size=(1, 64)))[0]
    labels = [f"class {i}" for i in range(2500)]
    warnings = lint(labels, rows, threshold=0.9)
    pairs = [(w.kind, w.labels) for w in warnings]
    assert pairs[0] == ("similar", ("class 10", "class 2000"))
    assert ("similar", ("class 3", "class 7")) in pairs and len(pairs) == 2
    assert warnings[0].cosine > warnings[1].cosine > 0.9
    assert lint(labels, rows, threshold=0.9, limit=1) == warnings[:1]


def test_near_duplicates_after_normalisation() -> None:
    assert normalized("Playing Guitar!") == normalized("playing_guitars") == "playing guitar"
    assert normalized("yoga") != normalized("yogi")
    labels = ["surfing", "Surfing!", "yoga", "Surfings", "dancing"]
    rows = _unit(np.eye(5, 8) + 0.01)
    warnings = lint(labels, rows)
    assert [(w.kind, w.labels) for w in warnings] == [
        ("near_duplicate", ("surfing", "Surfing!")),
        ("near_duplicate", ("surfing", "Surfings")),
    ]
    assert all(w.cosine < SIMILAR_COSINE for w in warnings)


def test_clustering_puts_similar_labels_next_to_each_other() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=64), rng.normal(size=64)
    rows = _unit(
        np.stack([a + 0.1 * rng.normal(size=64) if i % 2 == 0 else b + 0.1 * rng.normal(size=64) for i in range(8)])
    )
    order = clustered_order(rows)
    assert sorted(order) == list(range(8))
    groups = [i % 2 for i in order]
    assert groups in ([0] * 4 + [1] * 4, [1] * 4 + [0] * 4)  # one block per cluster
