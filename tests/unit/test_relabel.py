"""Re-labelling's arithmetic: the top-k it computes from float32 selection and float64 top logits
is the float64 softmax of every label, within 1e-6 in probability (and 1e-12 for all labels)."""

from __future__ import annotations

import pyarrow as pa
import torch
import torch.nn.functional as F

from text4vis.engine.archive.relabel import _top, relabel_batches
from text4vis.engine.vocab.classifier import Classifier
from text4vis.models.video_classifier import class_logits


def test_top_k_equals_the_full_float64_softmax() -> None:
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(5000, 512, generator=g), dim=-1)
    # clustered labels: close logits, the hardest case for the selection and the denominator
    centres = F.normalize(torch.randn(20, 512, generator=g), dim=-1)
    matrix = F.normalize(centres.repeat(20, 1) + 0.3 * torch.randn(400, 512, generator=g) / 512**0.5, dim=-1)
    classifier = Classifier(tuple(f"l{i}" for i in range(400)), matrix)
    full = class_logits(emb, matrix).softmax(dim=-1)  # what /classify computes, row by row
    for k in (1, 5, 400):
        idx, prob, score = _top(classifier, emb, k)
        expected = torch.topk(full, k, dim=-1)
        assert torch.equal(idx, expected.indices)
        tolerance = 1e-12 if k == 400 else 1e-6
        assert float((prob - expected.values).abs().max()) < tolerance
        assert float((score - class_logits(emb, matrix).gather(1, idx) / 100).abs().max()) < 1e-12


def _rows(emb: torch.Tensor) -> pa.RecordBatch:
    """Stored rows of three videos with embeddings ``emb [3, 8]``."""
    return pa.RecordBatch.from_pydict(
        {
            "id": ["a", "b", "c"],
            "content_id": ["a", "b", "c"],
            "name": ["x.mp4", "y.mp4", "z.mp4"],
            "kind": ["video"] * 3,
            "start_s": [0.0] * 3,
            "end_s": [1.0] * 3,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1).numpy()), 8),
        }
    )


def test_rows_keep_their_fields_and_order() -> None:
    emb = F.normalize(torch.randn(3, 8), dim=-1)
    classifier = Classifier(("p", "q"), F.normalize(torch.randn(2, 8), dim=-1))
    (out,) = relabel_batches([_rows(emb)], classifier, top_k=1)
    rows = out.to_pylist()
    assert [r["name"] for r in rows] == ["x.mp4", "y.mp4", "z.mp4"] and all(len(r["predictions"]) == 1 for r in rows)


def test_a_non_finite_row_gets_no_predictions_and_no_nan() -> None:
    """A stored row of NaN (written before the archive refused them, or by another tool) is
    re-labelled as an empty list, never as probability NaN (JSON null); its neighbours as usual."""
    import math

    from text4vis.engine.request import ResolvedAbstain

    emb = F.normalize(torch.randn(3, 8), dim=-1)
    emb[1, 3] = float("nan")
    classifier = Classifier(("p", "q", "r"), F.normalize(torch.randn(3, 8), dim=-1))
    policy = ResolvedAbstain(margin=0.0, min_score=0.99, background=None, score_background=False)
    (out,) = relabel_batches([_rows(emb)], classifier, top_k=2, policy=policy)
    rows = out.to_pylist()
    assert [len(r["predictions"]) for r in rows] == [2, 0, 2]
    assert all(math.isfinite(p["probability"]) for r in rows for p in r["predictions"])
    assert rows[1]["abstained"] is None and rows[1]["abstain_reason"] == "the stored embedding is not finite"
    assert rows[0]["abstained"] is True and rows[2]["abstained"] is True  # min_score 0.99: no cosine reaches it


def test_a_nan_logit_is_an_error_not_a_probability() -> None:
    import pytest

    from text4vis.engine.errors import NonFiniteOutput

    classifier = Classifier(("p", "q"), F.normalize(torch.randn(2, 8), dim=-1))
    with pytest.raises(NonFiniteOutput, match="non-finite score"):
        classifier.predictions(torch.tensor([float("nan"), 1.0]))
