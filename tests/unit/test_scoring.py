"""The one scoring rule (``engine/vocab/scoring.py``): its top-k is the float64 softmax of every
label; one row scored alone equals the same row in a batch of thousands (what makes /classify,
the timeline and the archive's re-labelling agree); re-labelling keeps the rows' fields and gives
a non-finite stored row no predictions, while a non-finite served score is an error."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from text4vis.engine.archive.relabel import relabel_batches
from text4vis.engine.errors import NonFiniteOutput
from text4vis.engine.request import AbstainPolicy, ResolvedAbstain
from text4vis.engine.vocab.classifier import Classifier
from text4vis.engine.vocab.scoring import ScoringPlan, rank, score
from text4vis.models.video_classifier import class_logits

OFF = AbstainPolicy().resolved(None)


def plan(classifier: Classifier, top_k: int = 5, policy: ResolvedAbstain = OFF) -> ScoringPlan:
    return ScoringPlan(classifier, None, top_k, policy)


def _clustered(g: torch.Generator) -> Classifier:
    # clustered labels: close logits, the hardest case for the selection and the denominator
    centres = F.normalize(torch.randn(20, 512, generator=g), dim=-1)
    matrix = F.normalize(centres.repeat(20, 1) + 0.3 * torch.randn(400, 512, generator=g) / 512**0.5, dim=-1)
    return Classifier(tuple(f"l{i}" for i in range(400)), matrix)


def test_top_k_equals_the_full_float64_softmax() -> None:
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(5000, 512, generator=g), dim=-1)
    classifier = _clustered(g)
    full = class_logits(emb, classifier.matrix).softmax(dim=-1)
    for k in (1, 5, 400):
        ranked = rank(classifier, emb, k)
        expected = torch.topk(full, k, dim=-1)
        assert torch.equal(ranked.indices, expected.indices)
        assert float((ranked.probabilities - expected.values).abs().max()) < 1e-12
        cosines = class_logits(emb, classifier.matrix).gather(1, ranked.indices) / 100
        assert float((ranked.cosines - cosines).abs().max()) < 1e-12


def test_float32_scoring_stays_within_its_documented_deviation() -> None:
    """Re-labelling's opt-in: probabilities within 1e-5 of float64's (what the docs promise) on
    clustered labels, the hardest case; a label may swap only with one tied to float32's
    precision; the relabel output says the same."""
    g = torch.Generator().manual_seed(3)
    emb = F.normalize(torch.randn(5000, 512, generator=g), dim=-1)
    classifier = _clustered(g)
    wide, narrow = rank(classifier, emb, 5), rank(classifier, emb, 5, torch.float32)
    full = class_logits(emb, classifier.matrix).softmax(dim=-1)
    swapped = narrow.indices != wide.indices
    assert float((full.gather(1, narrow.indices) - wide.probabilities).abs().max()) < 1e-5
    assert float((narrow.probabilities - full.gather(1, narrow.indices)).abs().max()) < 1e-5
    assert float(swapped.double().mean()) < 0.01
    # two near labels (logits a few units apart at scale 100) so no probability saturates at 1.0
    near = torch.randn(1, 8, generator=g).repeat(2, 1) + 0.02 * torch.randn(2, 8, generator=g)
    small, few = (
        F.normalize(torch.randn(3, 8, generator=g), dim=-1),
        Classifier(("p", "q"), F.normalize(near, dim=-1)),
    )
    (a,) = relabel_batches([_rows(small)], plan(few, 1), scoring="float32")
    (b,) = relabel_batches([_rows(small)], plan(few, 1))
    got, expected = ([r["predictions"][0]["probability"] for r in x.to_pylist()] for x in (a, b))
    assert max(abs(x - y) for x, y in zip(got, expected, strict=True)) < 1e-5 and got != expected


def test_a_row_alone_equals_the_same_row_in_a_batch() -> None:
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(3000, 512, generator=g)  # stored rows, not normalized again by the caller
    classifier = _clustered(g)
    batch = score(plan(classifier, 0), emb)
    for i in (0, 1234, 2999):
        (alone,) = score(plan(classifier, 0), emb[i][None])
        assert [p.label for p in alone.predictions] == [p.label for p in batch[i].predictions]
        pairs = zip(alone.predictions, batch[i].predictions, strict=True)
        assert max(abs(a.probability - b.probability) for a, b in pairs) < 1e-12


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


def test_relabelled_rows_keep_their_fields_and_order_and_equal_score() -> None:
    emb = F.normalize(torch.randn(3, 8), dim=-1)
    classifier = Classifier(("p", "q"), F.normalize(torch.randn(2, 8), dim=-1))
    (out,) = relabel_batches([_rows(emb)], plan(classifier, 1))
    rows = out.to_pylist()
    assert [r["name"] for r in rows] == ["x.mp4", "y.mp4", "z.mp4"] and all(len(r["predictions"]) == 1 for r in rows)
    served = score(plan(classifier, 1), emb)
    assert [r["predictions"][0]["probability"] for r in rows] == [s.predictions[0].probability for s in served]


def test_a_non_finite_row_gets_no_predictions_and_no_nan() -> None:
    """A stored row of NaN (written before the archive refused them, or by another tool) is
    re-labelled as an empty list, never as probability NaN (JSON null); its neighbours as usual."""
    emb = F.normalize(torch.randn(3, 8), dim=-1)
    emb[1, 3] = float("nan")
    classifier = Classifier(("p", "q", "r"), F.normalize(torch.randn(3, 8), dim=-1))
    policy = ResolvedAbstain(margin=0.0, min_score=0.99, background=None, score_background=False)
    (out,) = relabel_batches([_rows(emb)], plan(classifier, 2, policy))
    rows = out.to_pylist()
    assert [len(r["predictions"]) for r in rows] == [2, 0, 2]
    assert all(math.isfinite(p["probability"]) for r in rows for p in r["predictions"])
    assert rows[1]["abstained"] is None and rows[1]["abstain_reason"] == "the stored embedding is not finite"
    assert rows[0]["abstained"] is True and rows[2]["abstained"] is True  # min_score 0.99: no cosine reaches it


def test_a_non_finite_served_score_is_an_error_not_a_probability() -> None:
    classifier = Classifier(("p", "q"), F.normalize(torch.randn(2, 8), dim=-1))
    with pytest.raises(NonFiniteOutput, match="non-finite score"):
        score(plan(classifier), torch.full((1, 8), float("nan")))
