"""Re-label stored embeddings under a vocabulary, without decoding anything.

The same numbers as ``/classify``: ``100 x normalize(v) @ W.T``, a softmax over every label,
the top ``k`` (:func:`_top` says how exactly); "none of these" from the same rules (``engine/vocab/abstain.py``). Each
batch of rows is one matrix product; the output is Arrow record batches, written as Parquet, CSV
or JSON lines (:func:`write`) or streamed by the server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import torch

from text4vis.engine.request import ResolvedAbstain
from text4vis.engine.vocab.abstain import decide
from text4vis.engine.vocab.classifier import Classifier, Prediction
from text4vis.models.errors import InputError
from text4vis.models.video_classifier import LOGIT_SCALE

PREDICTION = pa.struct([("label", pa.string()), ("probability", pa.float64()), ("score", pa.float64())])
OUTPUT_FIELDS = ("id", "content_id", "name", "kind", "start_s", "end_s")
FORMATS = (".parquet", ".csv", ".jsonl")
log = logging.getLogger(__name__)


def _top(classifier: Classifier, emb: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices, probabilities and cosines of the top ``k`` labels of each row of ``emb [B, D]``:
    the float64 logits serving computes (:func:`class_logits`; float32 products of this shape
    differ from a single video's by up to ~1e-5 in a logit), their log-sum-exp, the top ``k``."""
    wide = emb.double()
    # class_logits' arithmetic, with the normalization folded into one scale per row (to 1e-15)
    scale = LOGIT_SCALE / torch.linalg.vector_norm(wide, dim=-1, keepdim=True).clamp_min(1e-12)
    logits = (wide @ classifier.matrix.double().T).mul_(scale)  # float64 [B, C]
    top = torch.topk(logits, k, dim=-1)  # the softmax keeps the order
    probs = torch.exp(top.values - torch.logsumexp(logits, dim=-1, keepdim=True))
    return top.indices, probs, top.values / 100.0


def _predictions(
    labels: np.ndarray, idx: torch.Tensor, prob: torch.Tensor, score: torch.Tensor, finite: np.ndarray
) -> pa.Array:
    """A ``list<struct<label, probability, score>>`` column, built without a Python loop over
    rows; a row whose stored embedding is not ``finite`` gets an empty list (never a probability
    of NaN, which JSON would carry as null)."""
    k = idx.shape[1]
    keep = torch.from_numpy(finite)
    flat = pa.StructArray.from_arrays(
        [
            pa.array(labels[idx[keep].reshape(-1).numpy()]),
            pa.array(prob[keep].reshape(-1).numpy()),
            pa.array(score[keep].reshape(-1).numpy()),
        ],
        fields=list(PREDICTION),
    )
    offsets = np.concatenate([[0], np.cumsum(finite.astype(np.int32) * k)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), flat)


def relabel_batches(
    batches: Iterable[pa.RecordBatch],
    classifier: Classifier,
    top_k: int = 5,
    policy: ResolvedAbstain | None = None,
    background: Classifier | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stored rows (the archive's :meth:`~ArchiveTable.embeddings`) -> their predictions: the
    rows' fields, ``predictions`` (the top ``top_k``, 0 = every label) and, when the policy
    decides, ``abstained`` and ``abstain_reason``."""
    labels = np.array(classifier.labels, dtype=object)
    k = len(labels) if top_k <= 0 else min(top_k, len(labels))
    decides = policy is not None and policy.decides
    for batch in batches:
        if batch.num_rows == 0:
            continue
        dim = batch.schema.field("embedding").type.list_size
        values = batch.column("embedding").values.to_numpy(zero_copy_only=False)
        emb = torch.from_numpy(np.array(values, copy=True).reshape(-1, dim))  # writable: torch wants it so
        finite = torch.isfinite(emb).all(dim=1).numpy()
        if not finite.all():  # stored before the archive refused such rows, or written by another tool
            log.warning("%d stored rows have a non-finite embedding: they get no predictions", int((~finite).sum()))
            emb[~torch.from_numpy(finite)] = 0.0
        with torch.inference_mode():
            idx, prob, score = _top(classifier, emb, k)
        columns = {name: batch.column(name) for name in OUTPUT_FIELDS}
        columns["predictions"] = _predictions(labels, idx, prob, score, finite)
        if decides:
            assert policy is not None
            abstained, reasons = _abstain(emb, idx, prob, score, labels, policy, background)
            columns["abstained"] = pa.array(
                [a if ok else None for a, ok in zip(abstained, finite, strict=True)], pa.bool_()
            )
            columns["abstain_reason"] = pa.array(
                [r if ok else "the stored embedding is not finite" for r, ok in zip(reasons, finite, strict=True)],
                pa.string(),
            )
        yield pa.RecordBatch.from_pydict(columns)


def _abstain(
    emb: torch.Tensor,
    idx: torch.Tensor,
    prob: torch.Tensor,
    score: torch.Tensor,
    labels: np.ndarray,
    policy: ResolvedAbstain,
    background: Classifier | None,
) -> tuple[list[bool], list[str | None]]:
    nearest: list[list[Prediction]] = [[] for _ in range(len(emb))]
    if background is not None and background.labels:
        bg_labels = np.array(background.labels, dtype=object)
        b_idx, b_prob, b_score = _top(background, emb, min(3, len(bg_labels)))
        nearest = [
            [Prediction(bg_labels[j], p, s) for j, p, s in zip(i.tolist(), pr.tolist(), sc.tolist(), strict=True)]
            for i, pr, sc in zip(b_idx, b_prob, b_score, strict=True)
        ]
    out_abstained, out_reasons = [], []
    for row in range(len(emb)):
        best = Prediction(labels[int(idx[row, 0])], float(prob[row, 0]), float(score[row, 0]))
        decision = decide(best, nearest[row], policy.margin, policy.min_score)
        out_abstained.append(decision.abstained)
        out_reasons.append(decision.reason)
    return out_abstained, out_reasons


def output_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"--out {path}: the extension picks the format, one of {', '.join(FORMATS)}")
    return suffix


def write(batches: Iterable[pa.RecordBatch], path: Path) -> int:
    """Write relabelled batches to ``path`` (Parquet, CSV or JSON lines by its extension); rows written."""
    fmt = output_format(path)
    rows = 0
    if fmt == ".parquet":
        import pyarrow.parquet as pq

        writer: Any = None
        for batch in batches:
            writer = writer or pq.ParquetWriter(path, batch.schema)
            writer.write_batch(batch)
            rows += batch.num_rows
        if writer is not None:
            writer.close()
        return rows
    with path.open("w", newline="") as f:
        for batch in batches:
            rows += batch.num_rows
            (_write_csv if fmt == ".csv" else write_jsonl)(batch, f, header=rows == batch.num_rows)
    return rows


def write_jsonl(batch: pa.RecordBatch, f: IO[str], header: bool = False) -> None:
    """One JSON object per row: the /classify fields (``predictions``, ``abstained``...) and the row's own."""
    f.write("".join(json.dumps(row) + "\n" for row in batch.to_pylist()))


def _write_csv(batch: pa.RecordBatch, f: IO[str], header: bool) -> None:
    """CSV: the row's fields, then ``label_1, probability_1, score_1, ...`` (a spreadsheet's view)."""
    import csv

    out = csv.writer(f)
    k = len(batch.column("predictions")[0]) if batch.num_rows else 0
    extra = [c for c in ("abstained", "abstain_reason") if c in batch.schema.names]
    if header:
        ranks = [f"{name}_{r}" for r in range(1, k + 1) for name in ("label", "probability", "score")]
        out.writerow([*OUTPUT_FIELDS, *extra, *ranks])
    for row in batch.to_pylist():
        cells = [row[c] for c in (*OUTPUT_FIELDS, *extra)]
        for p in row["predictions"]:
            cells += [p["label"], f"{p['probability']:.6g}", f"{p['score']:.6f}"]
        out.writerow(cells)
