"""The archive: stored embeddings re-label to what /classify answers, search is exact below the
index size, rows are stored once, and an archive of another model is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.checkpoints import prefixed_state, trained_like
from tests.media import generated_videos
from tests.server_helpers import classify_offline, tiny_runtime
from text4vis.engine.archive.indexer import index_files, spec_for
from text4vis.engine.archive.relabel import relabel_batches
from text4vis.engine.archive.spec import ArchiveSpec
from text4vis.engine.archive.store import Archive, ArchiveRow, ArchiveTable
from text4vis.engine.errors import ArchiveMismatch, ArchiveUnavailable
from text4vis.engine.flow.service import ClassifyResult, ClassifyService
from text4vis.engine.options import ModelOptions
from text4vis.engine.request import ClassifyRequest, ClipSpec, RequestLimits
from text4vis.engine.runtime.build import Runtime, build_runtime
from text4vis.engine.vocab.registry import VocabRegistry
from text4vis.engine.vocab.stores import SQLiteStore
from text4vis.models.clip_loader import TINY_ARCH
from text4vis.models.temporal import TransformerHead
from text4vis.models.windows import plan_timeline

LABELS = ["yoga", "surfing", "arm wrestling", "cooking", "skiing"]
LIMITS = RequestLimits(max_frames=64, max_views="16x3")


@pytest.fixture(scope="module")
def runtimes(tiny_clip_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Runtime]:
    """The mean head (CLIP's weights) and a trained-looking T-Trans head."""
    mean = tiny_runtime(tiny_clip_path)
    torch.manual_seed(3)
    head = trained_like(TransformerHead(64))
    checkpoint = tmp_path_factory.mktemp("t4v") / "t4v.pt"
    visual = mean.pipeline.encoder.module.visual  # type: ignore[attr-defined]
    torch.save({"epoch": 1, "model_state_dict": prefixed_state(visual, head)}, checkpoint)
    transf = build_runtime(
        ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, text4vis_checkpoint=checkpoint, device="cpu")
    )
    return {"mean": mean, "transf": transf}


def table_for(runtime: Runtime, uri: Path, clip: ClipSpec) -> ArchiveTable:
    resolved = ClassifyRequest(labels=("-",), clip=clip).resolved(LIMITS)
    spec = spec_for(runtime.pipeline, runtime.info.model_id, runtime.info.weights_sha256, resolved)
    return Archive(str(uri)).table(spec, create=True)


@pytest.mark.parametrize("head", ["mean", "transf"])
@pytest.mark.parametrize("views", ["1x1", "4x3"])
def test_relabel_equals_classify(runtimes: dict[str, Runtime], tmp_path: Path, head: str, views: str) -> None:
    runtime = runtimes[head]
    paths = list(generated_videos().values())
    table = table_for(runtime, tmp_path / "archive", ClipSpec(8, views))
    indexed = index_files(runtime.pipeline, table, paths, ClipSpec(8, views), limits=LIMITS)
    assert [getattr(i, "rows", i) for i in indexed] == [1, 1, 1]

    classified = classify_offline(runtime, LABELS, paths, top_k=0, views=views)
    registry = VocabRegistry(SQLiteStore(Path(":memory:")), runtime.text_encoder)
    relabelled = {
        row["name"]: row
        for batch in relabel_batches(table.embeddings(), registry.ad_hoc(LABELS), top_k=0)
        for row in batch.to_pylist()
    }
    for path, result in zip(paths, classified, strict=True):
        assert isinstance(result, ClassifyResult)
        stored = {p["label"]: p["probability"] for p in relabelled[str(path)]["predictions"]}
        answered = {p.label: p.probability for p in result.predictions}
        assert stored.keys() == answered.keys()
        assert max(abs(stored[k] - answered[k]) for k in answered) < 1e-6
        assert [p["label"] for p in relabelled[str(path)]["predictions"]] == [p.label for p in result.predictions]


def test_indexing_again_stores_nothing_new(runtimes: dict[str, Runtime], tmp_path: Path) -> None:
    runtime = runtimes["mean"]
    paths = list(generated_videos().values())
    table = table_for(runtime, tmp_path / "archive", ClipSpec())
    first = index_files(runtime.pipeline, table, paths[:2], ClipSpec(), limits=LIMITS)
    again = index_files(runtime.pipeline, table, paths, ClipSpec(), limits=LIMITS)
    assert [i.skipped for i in first] == [False, False]  # type: ignore[union-attr]
    assert [i.skipped for i in again] == [True, True, False]  # type: ignore[union-attr]
    assert table.count() == 3
    # a copy under another name is the same content: one row
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(paths[0].read_bytes())
    (result,) = index_files(runtime.pipeline, table, [copy], ClipSpec(), limits=LIMITS)
    assert result.skipped and table.count() == 3  # type: ignore[union-attr]


def test_stored_windows_equal_the_timeline(runtimes: dict[str, Runtime], tmp_path: Path) -> None:
    runtime = runtimes["transf"]
    video = generated_videos()["clip_b.mp4"]  # 300 frames at 25 fps: 12 s
    table = table_for(runtime, tmp_path / "archive", ClipSpec(8))
    index_files(runtime.pipeline, table, [video], ClipSpec(8), windows_s=4.0, limits=LIMITS)
    content = table.page(kind="video")[0]["content_id"]
    windows = table.windows_of(content)
    assert [(w["start_s"], w["end_s"]) for w in windows] == [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]

    registry = VocabRegistry(SQLiteStore(Path(":memory:")), runtime.text_encoder)
    classifier = registry.ad_hoc(LABELS)

    async def timeline() -> list[dict[str, float]]:
        service = ClassifyService(runtime.pipeline, registry)
        await service.start()
        try:
            plan = plan_timeline(video, 4.0, 4.0, 8, 100)
            return [
                {p.label: p.probability for p in s.predictions}
                async for s in service.timeline(video, plan, classifier, top_k=0)
            ]
        finally:
            await service.stop()

    segments = asyncio.run(timeline())
    rows = [r for b in relabel_batches(table.embeddings(kind="window"), classifier, top_k=0) for r in b.to_pylist()]
    rows.sort(key=lambda r: r["start_s"])
    assert len(rows) == len(segments) == 3
    for row, segment in zip(rows, segments, strict=True):
        stored = {p["label"]: p["probability"] for p in row["predictions"]}
        assert max(abs(stored[k] - segment[k]) for k in segment) < 1e-6


def spec(dim: int = 32, **changes: object) -> ArchiveSpec:
    fields: dict[str, object] = {
        "text_model": "t4v-tiny/random",
        "weights_sha256": "ab" * 32,
        "temporal": "mean",
        "preprocess": "resize 224, crop 224",
        "frames": 8,
        "views": "1x1",
        "sampling": "exact",
        "embed_dim": dim,
    }
    return ArchiveSpec(**{**fields, **changes})  # type: ignore[arg-type]


def random_rows(n: int, dim: int, seed: int = 0) -> list[ArchiveRow]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        ArchiveRow(f"{i:064x}", f"{i:064x}", f"v{i}.mp4", "video", 0.0, 1.0, 1.0, vectors[i], None, {"i": i})
        for i in range(n)
    ]


def test_exact_search_equals_brute_force(tmp_path: Path) -> None:
    table = Archive(str(tmp_path / "a")).table(spec(), create=True)
    rows = random_rows(500, 32)
    assert table.add(rows) == 500 and table.add(rows[:10]) == 0
    matrix = np.stack([r.embedding for r in rows])
    query = np.random.default_rng(9).normal(size=32).astype(np.float32)
    cosines = matrix @ (query / np.linalg.norm(query))
    expected = np.argsort(-cosines)[:10]
    hits = table.search(query, k=10)
    assert [h.row["name"] for h in hits] == [f"v{i}.mp4" for i in expected]
    assert np.allclose([h.score for h in hits], cosines[expected], atol=1e-5)
    assert hits[0].row["metadata"] == {"i": int(expected[0])}


def test_a_non_finite_embedding_is_never_stored(tmp_path: Path) -> None:
    from text4vis.engine.errors import NonFiniteOutput

    table = Archive(str(tmp_path / "a")).table(spec(), create=True)
    rows = random_rows(3, 32)
    rows[1].embedding[4] = np.inf
    with pytest.raises(NonFiniteOutput, match="'v1.mp4' is not finite"):
        table.add(rows)
    assert table.count() == 0


def test_an_archive_of_another_model_is_refused(tmp_path: Path) -> None:
    archive = Archive(str(tmp_path / "a"))
    archive.table(spec(), create=True).add(random_rows(3, 32))
    other = spec(weights_sha256="cd" * 32)
    with pytest.raises(ArchiveMismatch) as caught:
        archive.table(other)
    message = str(caught.value)
    assert spec().fingerprint in message and other.fingerprint in message
    assert archive.table(spec()).count() == 3  # the stored rows are untouched


def test_an_archive_that_cannot_be_opened_is_one_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ArchiveUnavailable, match="cannot be opened"):
        Archive(str(not_a_dir))


def test_write_behind_commits_every_row_once_and_flush_waits(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from text4vis.engine.archive.writer import ArchiveWriter

    table = Archive(str(tmp_path / "a")).table(spec(), create=True)
    rows = random_rows(300, 32)
    writer = ArchiveWriter()
    with ThreadPoolExecutor(8) as pool:  # requests from many threads, some rows twice
        futures = list(pool.map(lambda r: writer.submit(table, [r]), rows + rows[:50]))
    writer.flush()
    assert all(f.done() for f in futures) and table.count() == 300
    assert sum(f.result() for f in futures) >= 300  # a group's count is shared by its requests

    class Broken:
        name = "broken"

        def add(self, rows: list[ArchiveRow]) -> int:
            raise OSError("disk full")

    failed = writer.submit(Broken(), rows[:1])  # type: ignore[arg-type]
    writer.flush()
    with pytest.raises(OSError, match="disk full"):
        failed.result()
    (fresh,) = random_rows(1, 32, seed=5)
    fresh.id = fresh.content_id = "f" * 64  # an id not stored yet
    late = writer.submit(table, [fresh])
    writer.close()  # commits what is queued
    assert late.result() == 1 and table.count() == 301
