"""``t4v-client relabel --out``: rows written as ``t4v relabel --out`` writes them (JSON lines; CSV
with the row's fields then ``label_1, probability_1, score_1, ...``; Parquet when pyarrow is
installed, the client itself needs no more than the standard library)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from t4v_client.models import RelabelledRow

FIELDS = ("id", "content_id", "name", "kind", "start_s", "end_s")


def write_rows(rows: Iterable[RelabelledRow], out: Path | None) -> int:
    """Write ``rows`` to ``out`` by its extension (None: JSON lines on stdout); how many."""
    suffix = out.suffix.lower() if out is not None else ".jsonl"
    if suffix == ".parquet":
        return _parquet(rows, out)  # type: ignore[arg-type]
    n = 0
    with out.open("w", newline="") if out is not None else _stdout() as f:
        writer = csv.writer(f) if suffix == ".csv" else None
        for row in rows:
            if writer is None:
                f.write(row.model_dump_json() + "\n")
            else:
                if n == 0:
                    k = len(row.predictions)
                    ranks = [f"{name}_{r}" for r in range(1, k + 1) for name in ("label", "probability", "score")]
                    writer.writerow([*FIELDS, "names", "abstained", "abstain_reason", *ranks])
                cells: list[object] = [getattr(row, c) for c in FIELDS]
                cells += [json.dumps(row.names), row.abstained, row.abstain_reason]
                for p in row.predictions:
                    cells += [p.label, f"{p.probability:.6g}", f"{p.score:.6f}"]
                writer.writerow(cells)
            n += 1
    return n


def _parquet(rows: Iterable[RelabelledRow], out: Path) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("writing .parquet needs pyarrow (pip install pyarrow); .jsonl and .csv need nothing") from None
    table = pa.Table.from_pylist([row.model_dump() for row in rows])
    pq.write_table(table, out)
    return table.num_rows


class _stdout:
    """stdout as a context manager that does not close it."""

    def __enter__(self):  # noqa: ANN204
        return sys.stdout

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
