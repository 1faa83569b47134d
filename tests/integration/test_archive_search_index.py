"""The archive's search index in memory (``engine/archive/vectors.py``): exact below its IVF
threshold, IVF above it with the candidates re-ranked by their stored embeddings, the two kinds
apart, this process's writes searchable at once, other processes' read in by its thread, and
rows deleted anywhere gone from the answers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.integration.test_archive_store import random_rows, spec
from tests.processes import wait_until
from text4vis.engine.archive import vectors
from text4vis.engine.archive.lance import LanceArchive
from text4vis.engine.archive.store import ArchiveRow
from text4vis.engine.archive.vectors import SearchedTable, VectorIndexes


def windows_of(rows: list[ArchiveRow]) -> list[ArchiveRow]:
    rng = np.random.default_rng(5)
    out = []
    for row in rows:
        v = rng.normal(size=row.embedding.shape).astype(np.float32)
        out.append(replace(row, id=f"{row.id}@0.000-1.000", kind="window", embedding=v / np.linalg.norm(v)))
    return out


def exact(rows: list[ArchiveRow], query: np.ndarray, k: int) -> list[str]:
    matrix = np.stack([r.embedding for r in rows])
    return [rows[i].id for i in np.argsort(-(matrix @ query))[:k]]


@pytest.fixture
def indexes() -> Iterator[VectorIndexes]:
    out = VectorIndexes(sync_every_s=0.05)
    yield out
    out.stop()


def test_exact_with_kinds_apart_and_writes_from_anywhere(tmp_path: Path, indexes: VectorIndexes) -> None:
    archive = LanceArchive(str(tmp_path / "a"))
    videos = random_rows(300, 32)
    table = archive.table(spec(), create=True)
    table.add(videos + windows_of(videos[:100]))
    searched = SearchedTable(table, indexes.of(table, 32))
    assert indexes.wait_ready(60)
    queries = np.random.default_rng(9).normal(size=(5, 32)).astype(np.float32)
    for q in queries:
        q /= np.linalg.norm(q)
        hits = searched.search(q, k=7, kind="video")
        assert [h.row["id"] for h in hits] == exact(videos, q, 7)
        assert np.allclose([h.score for h in hits], np.sort(np.stack([r.embedding for r in videos]) @ q)[::-1][:7])
        assert all(h.row["kind"] == "window" for h in searched.search(q, k=7, kind="window"))

    mine = random_rows(20, 32, seed=4)
    mine = [replace(r, id=f"{'e' * 60}{i:04d}", content_id=f"{'e' * 60}{i:04d}") for i, r in enumerate(mine)]
    searched.add(mine)  # this process's commit: searchable at once (no sync in between)
    assert searched.search(mine[3].embedding, k=1, kind="video")[0].row["id"] == mine[3].id

    other = LanceArchive(str(tmp_path / "a")).table(spec())  # another process's handle
    theirs = [
        replace(r, id=f"{'d' * 60}{i:04d}", content_id=f"{'d' * 60}{i:04d}")
        for i, r in enumerate(random_rows(5, 32, seed=6))
    ]
    other.add(theirs)
    assert wait_until(lambda: searched.search(theirs[2].embedding, k=1, kind="video")[0].row["id"] == theirs[2].id, 30)

    other.set_metadata(videos[2].id, {"camera": 7})  # another process's update: read in by the thread
    assert wait_until(
        lambda: searched.search(videos[2].embedding, k=1, kind="video")[0].row["metadata"].get("camera") == 7, 30
    )
    searched.set_metadata(videos[3].id, {"camera": 8})  # this process's: at once
    assert searched.search(videos[3].embedding, k=1, kind="video")[0].row["metadata"] == {
        "i": 3,
        "odd": True,
        "camera": 8,
    }

    other.delete(videos[0].id)  # deleted elsewhere: dropped where thumbnails are read, else by the thread
    shown = searched.search(videos[0].embedding, k=5, kind=None, thumbnail=True)
    assert videos[0].id not in {h.row["id"] for h in shown} and len(shown) == 4
    assert wait_until(
        lambda: videos[0].id not in {h.row["id"] for h in searched.search(videos[0].embedding, k=5, kind=None)}, 30
    )
    searched.delete(videos[1].id)  # here: gone from the index at once, windows too
    assert videos[1].id not in {h.row["id"] for h in searched.search(videos[1].embedding, k=5, kind=None)}


def test_ivf_above_its_threshold_finds_text_like_queries_and_trains_again(
    tmp_path: Path, indexes: VectorIndexes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows in 60 clusters; queries at cosine 0.3 from a cluster's centre, as a text sits from
    the videos it describes: the IVF index finds (nearly) the exact 10 nearest."""
    monkeypatch.setattr(vectors, "IVF_MIN_ROWS", 2_000)
    monkeypatch.setattr(vectors, "NPROBE", 16)
    dim, rng = 64, np.random.default_rng(2)
    centres = rng.normal(size=(60, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def clustered(n: int, start: int) -> list[ArchiveRow]:
        v = centres[rng.integers(0, 60, n)] + 0.35 * rng.normal(size=(n, dim)).astype(np.float32) / np.sqrt(dim)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        ids = [f"{i:064x}" for i in range(start, start + n)]
        return [ArchiveRow(i, i, f"v{j}.mp4", "video", 0.0, 1.0, 1.0, v[j]) for j, i in enumerate(ids)]

    rows = clustered(3_000, 0)
    table = LanceArchive(str(tmp_path / "a")).table(spec(dim), create=True)
    table.add(rows)
    index = indexes.of(table, dim)
    searched = SearchedTable(table, index)
    assert indexes.wait_ready(120)
    assert index._state is not None and index._state.kinds["video"].trained_rows == 3_000  # IVF

    def recall() -> float:
        found = []
        for c in centres[:20]:
            r = rng.normal(size=dim).astype(np.float32)
            r -= (r @ c) * c
            q = 0.3 * c + np.sqrt(1 - 0.09) * r / np.linalg.norm(r)
            found.append(len({h.row["id"] for h in searched.search(q, k=10, kind="video")} & set(exact(rows, q, 10))))
        return sum(found) / (10 * len(found))

    assert recall() >= 0.95
    more = clustered(9_000, 3_000)
    searched.add(more)
    rows += more
    assert recall() >= 0.95  # rows joined the trained lists
    # each joined the list its nearest centroid heads (assigned before the lock, appended under it)
    assert all(searched.search(r.embedding, k=1, kind="video")[0].row["id"] == r.id for r in more[::300])
    assert wait_until(lambda: index._state is not None and index._state.kinds["video"].trained_rows == 12_000, 120)
    assert recall() >= 0.95  # trained again at 4x: as good
