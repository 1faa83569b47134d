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


def test_many_similar_pairs_keep_only_the_best_in_bounded_memory() -> None:
    """5,000 near-identical labels (12.5M pairs above the threshold): the 100 best pairs, exactly
    those a brute-force sort finds, in a few tens of MB (the pair list was 700 MB and 10 s)."""
    import tracemalloc

    rng = np.random.default_rng(2)
    centre = rng.normal(size=(1, 64))
    rows = _unit(centre + 0.02 * rng.normal(size=(5000, 64)))
    labels = [f"label {i}" for i in range(5000)]
    tracemalloc.start()
    warnings = lint(labels, rows)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40e6, f"lint peaked at {peak / 1e6:.0f} MB"
    cos = rows @ rows.T
    i, j = np.triu_indices(5000, k=1)
    best = np.sort(cos[i, j])[::-1][:100]  # brute force (the order of near-ties may differ by rounding)
    assert len(warnings) == 100 and all(w.kind == "similar" for w in warnings)
    assert np.allclose([w.cosine for w in warnings], best, atol=1e-6)
    index = {label: k for k, label in enumerate(labels)}
    assert all(cos[index[w.labels[0]], index[w.labels[1]]] >= best[-1] - 1e-6 for w in warnings)
    assert all(index[w.labels[0]] < index[w.labels[1]] for w in warnings)


def test_near_duplicates_fill_the_limit_before_similar_pairs() -> None:
    labels = [f"walking{'s' if i % 2 else ''} {i // 2}" for i in range(400)]  # "walking 3" == "walkings 3"
    rows = _unit(np.ones((400, 8)) + 1e-3 * np.random.default_rng(3).normal(size=(400, 8)))
    warnings = lint(labels, rows, limit=50)
    assert len(warnings) == 50 and all(w.kind == "near_duplicate" for w in warnings)
    assert len(lint(labels, rows, limit=250)) == 250
