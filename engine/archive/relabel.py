"""Re-label stored embeddings under a vocabulary, without decoding anything.

The same numbers as ``/classify``: the one scoring rule (``engine/vocab/scoring.py``: float64
logits, the softmax over every label, the top ``k``) and "none of these" from the same policy.
Each batch of rows is one matrix product; the output is Arrow record batches, written as
Parquet, CSV or JSON lines (:func:`write`) or streamed by the server.
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

from text4vis.engine.vocab.classifier import Prediction
from text4vis.engine.vocab.scoring import Ranked, Scoring, ScoringPlan, abstentions, rank
from text4vis.models.errors import InputError

PREDICTION = pa.struct([("label", pa.string()), ("probability", pa.float64()), ("score", pa.float64())])
OUTPUT_FIELDS = ("id", "content_id", "name", "kind", "start_s", "end_s")
FORMATS = (".parquet", ".csv", ".jsonl")
log = logging.getLogger(__name__)


def _predictions(labels: np.ndarray, ranked: Ranked, finite: np.ndarray) -> pa.Array:
    """A ``list<struct<label, probability, score>>`` column, built without a Python loop over
    rows; a row whose stored embedding is not ``finite`` gets an empty list (never a probability
    of NaN, which JSON would carry as null)."""
    k = ranked.indices.shape[1]
    keep = torch.from_numpy(finite)
    flat = pa.StructArray.from_arrays(
        [
            pa.array(labels[ranked.indices[keep].reshape(-1).numpy()]),
            pa.array(ranked.probabilities[keep].reshape(-1).numpy()),
            pa.array(ranked.cosines[keep].reshape(-1).numpy()),
        ],
        fields=list(PREDICTION),
    )
    offsets = np.concatenate([[0], np.cumsum(finite.astype(np.int32) * k)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), flat)


def _names_of(contents: pa.Array, own: pa.Array, names: pa.Table) -> pa.Array:
    """Each row's names (a join on the content id, not a loop): those recorded, else its own."""
    import pyarrow.compute as pc

    keys = names.column("content_id").combine_chunks()
    found = pc.take(names.column("names").combine_chunks(), pc.index_in(contents, value_set=keys))
    fallback = pa.ListArray.from_arrays(pa.array(range(len(own) + 1), pa.int32()), own)
    return pc.if_else(pc.is_null(found), fallback, found)


PREDICTIONS_PER_BATCH = 65_536  # rows x predictions per output batch at most: about 5 MB of JSON lines


def _bounded(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """``batches`` cut to at most ``rows`` rows each (at least one): an answer of every label of a
    large vocabulary is made, and sent, a bounded piece at a time."""
    step = max(1, rows)
    for batch in batches:
        for start in range(0, batch.num_rows, step):
            yield batch.slice(start, step)


def relabel_batches(
    batches: Iterable[pa.RecordBatch],
    plan: ScoringPlan,
    with_embeddings: bool = False,
    names: pa.Table | None = None,
    scoring: Scoring = "float64",
) -> Iterator[pa.RecordBatch]:
    """Stored rows (an archive table's :meth:`~ArchiveTable.scan`) -> their predictions under
    ``plan``: the rows' fields, with ``names`` (the archive's ``names_table``) every name the file
    was seen under, ``predictions`` (the top ``plan.top_k``, 0 = every label), when the policy
    decides ``abstained`` and ``abstain_reason``, and ``with_embeddings`` the stored
    ``embedding`` (float32, a fixed-size list). ``scoring`` float32: :func:`rank`'s opt-in (the
    default float64 equals ``/classify``)."""
    dtype = torch.float32 if scoring == "float32" else torch.float64
    labels = np.array(plan.classifier.labels, dtype=object)
    for batch in _bounded(batches, PREDICTIONS_PER_BATCH // (plan.top_k or len(labels))):
        dim = batch.schema.field("embedding").type.list_size
        values = batch.column("embedding").flatten().to_numpy(zero_copy_only=False)
        emb = torch.from_numpy(np.array(values, copy=True).reshape(-1, dim))  # writable: torch wants it so
        finite = torch.isfinite(emb).all(dim=1).numpy()
        if not finite.all():  # stored before the archive refused such rows, or written by another tool
            log.warning("%d stored rows have a non-finite embedding: they get no predictions", int((~finite).sum()))
            emb[~torch.from_numpy(finite)] = 0.0
        ranked = rank(plan.classifier, emb, plan.top_k, dtype)
        columns = {name: batch.column(name) for name in OUTPUT_FIELDS}
        if names is not None:
            columns["names"] = _names_of(batch.column("content_id"), batch.column("name"), names)
        columns["predictions"] = _predictions(labels, ranked, finite)
        if plan.abstain.decides:
            best = [
                Prediction(labels[i], p, c)
                for i, p, c in zip(
                    ranked.indices[:, 0].tolist(),
                    ranked.probabilities[:, 0].tolist(),
                    ranked.cosines[:, 0].tolist(),
                    strict=True,
                )
            ]
            decisions = abstentions(plan, emb, best)
            columns["abstained"] = pa.array(
                [d.abstained if d is not None and ok else None for d, ok in zip(decisions, finite, strict=True)],
                pa.bool_(),
            )
            columns["abstain_reason"] = pa.array(
                [
                    (d.reason if d is not None else None) if ok else "the stored embedding is not finite"
                    for d, ok in zip(decisions, finite, strict=True)
                ],
                pa.string(),
            )
        if with_embeddings:
            columns["embedding"] = batch.column("embedding")
        yield pa.RecordBatch.from_pydict(columns)


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
    extra = [c for c in ("names", "abstained", "abstain_reason") if c in batch.schema.names]
    if header:
        ranks = [f"{name}_{r}" for r in range(1, k + 1) for name in ("label", "probability", "score")]
        out.writerow([*OUTPUT_FIELDS, *extra, *ranks])
    for row in batch.to_pylist():
        if "names" in row:
            row["names"] = json.dumps(row["names"])  # a JSON list in one cell: a path may hold any separator
        cells = [row[c] for c in (*OUTPUT_FIELDS, *extra)]
        for p in row["predictions"]:
            cells += [p["label"], f"{p['probability']:.6g}", f"{p['score']:.6f}"]
        out.writerow(cells)
