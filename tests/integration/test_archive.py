"""The archive through the engine: stored embeddings re-label to what /classify answers, stored
windows equal the timeline's, rows are stored once, window rows go to the table of how they were
made (one view), and windows asked for a stored video are added."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from tests.checkpoints import prefixed_state, trained_like
from tests.media import generated_videos
from tests.server_helpers import classify_offline
from text4vis.engine.archive.relabel import relabel_batches
from text4vis.engine.archive.spec import ArchiveSpec
from text4vis.engine.archive.store import Archive, ArchiveTable, open_archive
from text4vis.engine.facade import ClassifyResult, Engine
from text4vis.engine.offline import index_files
from text4vis.engine.options import ModelOptions
from text4vis.engine.request import AbstainPolicy, ClassifyRequest, ClipSpec, IndexRequest, RequestLimits, WindowSpec
from text4vis.engine.runtime.build import Runtime, build_runtime
from text4vis.engine.vocab.classifier import Classifier
from text4vis.engine.vocab.registry import VocabRegistry
from text4vis.engine.vocab.scoring import ScoringPlan
from text4vis.engine.vocab.stores.sqlite import SQLiteStore
from text4vis.models.clip_loader import TINY_ARCH
from text4vis.models.temporal import TransformerHead

LABELS = ["yoga", "surfing", "arm wrestling", "cooking", "skiing"]
LIMITS = RequestLimits(max_frames=64, max_views="16x3")


@pytest.fixture(scope="module")
def runtimes(runtime: Runtime, tiny_clip_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Runtime]:
    """The mean head (CLIP's weights) and a trained-looking T-Trans head."""
    torch.manual_seed(3)
    head = trained_like(TransformerHead(64))
    checkpoint = tmp_path_factory.mktemp("t4v") / "t4v.pt"
    visual = runtime.pipeline.encoder.module.visual  # type: ignore[attr-defined]
    torch.save({"epoch": 1, "model_state_dict": prefixed_state(visual, head)}, checkpoint)
    transf = build_runtime(
        ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, text4vis_checkpoint=checkpoint, device="cpu")
    )
    return {"mean": runtime, "transf": transf}


def table_for(runtime: Runtime, archive: Archive, clip: ClipSpec) -> ArchiveTable:
    return archive.table(ArchiveSpec.of(runtime, clip.resolve(LIMITS)), create=True)


def plan_of(runtime: Runtime, labels: list[str] = LABELS) -> ScoringPlan:
    classifier: Classifier = VocabRegistry(SQLiteStore(Path(":memory:")), runtime.text_encoder).ad_hoc(labels)
    return ScoringPlan(classifier, None, 0, AbstainPolicy().resolved(None))


def relabelled(table: ArchiveTable, plan: ScoringPlan, kind: str | None = "video") -> dict[str, dict[str, float]]:
    """Each stored row's probabilities, by name (videos) or by start (windows)."""
    out = {}
    for batch in relabel_batches(table.scan(kind), plan):
        for row in batch.to_pylist():
            key = row["name"] if row["kind"] == "video" else f"{row['start_s']:.1f}"
            out[key] = {p["label"]: p["probability"] for p in row["predictions"]}
    return out


@pytest.mark.parametrize("head", ["mean", "transf"])
@pytest.mark.parametrize("views", ["1x1", "4x3"])
def test_relabel_equals_classify(runtimes: dict[str, Runtime], tmp_path: Path, head: str, views: str) -> None:
    runtime = runtimes[head]
    paths = list(generated_videos().values())
    archive = open_archive(str(tmp_path / "archive"))
    indexed = index_files(runtime, archive, paths, IndexRequest(ClipSpec(8, views)), limits=LIMITS)
    assert [getattr(i, "rows", i) for i in indexed] == [1, 1, 1]

    classified = classify_offline(runtime, LABELS, paths, top_k=0, views=views)
    stored = relabelled(table_for(runtime, archive, ClipSpec(8, views)), plan_of(runtime))
    for path, result in zip(paths, classified, strict=True):
        assert isinstance(result, ClassifyResult)
        answered = {p.label: p.probability for p in result.predictions}
        assert stored[str(path)].keys() == answered.keys()
        assert max(abs(stored[str(path)][k] - answered[k]) for k in answered) < 1e-6
        assert list(stored[str(path)]) == [p.label for p in result.predictions]


def test_indexing_again_stores_nothing_new(runtime: Runtime, tmp_path: Path) -> None:
    paths = list(generated_videos().values())
    archive = open_archive(str(tmp_path / "archive"))
    first = index_files(runtime, archive, paths[:2], IndexRequest(), limits=LIMITS)
    again = index_files(runtime, archive, paths, IndexRequest(), limits=LIMITS)
    assert [i.skipped for i in first] == [False, False]  # type: ignore[union-attr]
    assert [i.skipped for i in again] == [True, True, False]  # type: ignore[union-attr]
    table = table_for(runtime, archive, ClipSpec())
    assert table.count() == 3
    # a copy under another name is the same content: one row
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(paths[0].read_bytes())
    (result,) = index_files(runtime, archive, [copy], IndexRequest(), limits=LIMITS)
    assert result.skipped and table.count() == 3  # type: ignore[union-attr]


def _timeline(runtime: Runtime, video: Path, window_s: float) -> dict[str, dict[str, float]]:
    """The timeline's windows as ``POST /classify/timeline`` scores them, by start."""
    registry = VocabRegistry(SQLiteStore(Path(":memory:")), runtime.text_encoder)

    async def go() -> dict[str, dict[str, float]]:
        engine = Engine(runtime, registry)
        await engine.start()
        try:
            run = await engine.timeline(
                video, ClassifyRequest(labels=tuple(LABELS), top_k=0), WindowSpec(window_s, window_s), timeout_s=600
            )
            return {f"{s.start_s:.1f}": {p.label: p.probability for p in s.predictions} async for s in run.segments()}
        finally:
            await engine.stop()

    return asyncio.run(go())


def test_stored_windows_equal_the_timeline(runtimes: dict[str, Runtime], tmp_path: Path) -> None:
    runtime = runtimes["transf"]
    video = generated_videos()["clip_b.mp4"]  # 300 frames at 25 fps: 12 s
    archive = open_archive(str(tmp_path / "archive"))
    index_files(runtime, archive, [video], IndexRequest(ClipSpec(8), window_s=4.0), limits=LIMITS)
    table = table_for(runtime, archive, ClipSpec(8))
    windows = table.windows_of(table.page(kind="video")[0]["content_id"])
    assert [(w["start_s"], w["end_s"]) for w in windows] == [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]
    stored = relabelled(table, plan_of(runtime), kind="window")
    segments = _timeline(runtime, video, 4.0)
    assert stored.keys() == segments.keys() and len(segments) == 3
    for start, probabilities in segments.items():
        assert max(abs(stored[start][k] - probabilities[k]) for k in probabilities) < 1e-6


def test_window_rows_go_to_the_table_of_how_they_were_made(runtime: Runtime, tmp_path: Path) -> None:
    """``--views 4x3 --windows 4``: the video's row is a 4x3 embedding, its windows are one-view
    embeddings (as the timeline makes them): they go to the 1x1 table of the same frames, where
    they equal the timeline, not to the 4x3 one."""
    video = generated_videos()["clip_b.mp4"]
    archive = open_archive(str(tmp_path / "archive"))
    (done,) = index_files(runtime, archive, [video], IndexRequest(ClipSpec(8, "4x3"), window_s=4.0), limits=LIMITS)
    assert not isinstance(done, BaseException) and (done.rows, done.windows) == (4, 3)
    views = table_for(runtime, archive, ClipSpec(8, "4x3"))
    single = table_for(runtime, archive, ClipSpec(8, "1x1"))
    assert (views.count("video"), views.count("window")) == (1, 0)
    assert (single.count("video"), single.count("window")) == (0, 3)
    stored = relabelled(single, plan_of(runtime), kind="window")
    for start, probabilities in _timeline(runtime, video, 4.0).items():
        assert max(abs(stored[start][k] - probabilities[k]) for k in probabilities) < 1e-6


def test_windows_asked_for_a_stored_video_are_added(runtime: Runtime, tmp_path: Path) -> None:
    video = generated_videos()["clip_b.mp4"]
    archive = open_archive(str(tmp_path / "archive"))
    (first,) = index_files(runtime, archive, [video], IndexRequest(), limits=LIMITS)
    (again,) = index_files(runtime, archive, [video], IndexRequest(window_s=4.0), limits=LIMITS)
    (third,) = index_files(runtime, archive, [video], IndexRequest(window_s=4.0), limits=LIMITS)
    assert not isinstance(first, BaseException) and not first.skipped and first.rows == 1
    assert not isinstance(again, BaseException) and not again.skipped and (again.rows, again.windows) == (3, 3)
    assert not isinstance(third, BaseException) and third.skipped and third.rows == 0
    assert table_for(runtime, archive, ClipSpec()).count("window") == 3


def test_every_name_a_content_was_seen_under_is_kept(runtime: Runtime, tmp_path: Path) -> None:
    """A copy under another name and a moved folder add names, not rows, and nothing is decoded
    again; re-labelling answers every name of each row."""
    video = generated_videos()["clip_a.mp4"]
    first, moved = tmp_path / "clips", tmp_path / "moved" / "clips"
    first.mkdir()
    (first / "game.mp4").write_bytes(video.read_bytes())
    (first / "game copy.mp4").write_bytes(video.read_bytes())
    archive = open_archive(str(tmp_path / "archive"))
    done = index_files(runtime, archive, sorted(first.iterdir()), IndexRequest(), limits=LIMITS)
    # the same bytes twice in one run: decoded once (the second waits for the first), stored once
    assert sorted((d.rows, d.skipped, d.names_added) for d in done) == [(0, True, 1), (1, False, 1)]  # type: ignore[union-attr]
    moved.parent.mkdir()
    first.rename(moved)
    (again,) = index_files(runtime, archive, [moved / "game.mp4"], IndexRequest(), limits=LIMITS)
    assert not isinstance(again, BaseException) and again.skipped and again.names_added == 1
    engine = Engine(runtime, VocabRegistry(SQLiteStore(Path(":memory:")), runtime.text_encoder), archive)
    (row,) = [r for b in engine.relabel_blocking(ClassifyRequest(labels=tuple(LABELS))) for r in b.to_pylist()]
    assert set(row["names"][:2]) == {str(first / "game copy.mp4"), str(first / "game.mp4")}  # the same run
    assert row["names"][2] == str(moved / "game.mp4")  # seen last


def test_metadata_given_for_a_stored_file_is_merged_or_replaced(runtime: Runtime, tmp_path: Path) -> None:
    video = generated_videos()["clip_a.mp4"]
    archive = open_archive(str(tmp_path / "archive"))
    index_files(runtime, archive, [video], IndexRequest(metadata={"camera": 3}), limits=LIMITS)
    (merged,) = index_files(runtime, archive, [video], IndexRequest(metadata={"site": "north"}), limits=LIMITS)
    table = table_for(runtime, archive, ClipSpec())
    assert merged.metadata_updated and merged.skipped  # type: ignore[union-attr]
    assert table.page("video")[0]["metadata"] == {"camera": 3, "site": "north"}
    (same,) = index_files(runtime, archive, [video], IndexRequest(metadata={"site": "north"}), limits=LIMITS)
    assert not same.metadata_updated  # type: ignore[union-attr]
    replaced = IndexRequest(metadata={"lens": "wide"}, replace_metadata=True)
    index_files(runtime, archive, [video], replaced, limits=LIMITS)
    assert table.page("video")[0]["metadata"] == {"lens": "wide"}
