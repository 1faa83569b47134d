"""/archive over HTTP: index=true stores what /classify computed, the archive re-labels to the
same probabilities, search finds the rows, writes need a key, another model's table is a 409."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.media import generated_videos, moving_square_frames, write_frames
from tests.server_helpers import make_app, running
from text4vis.engine.request import ClipSpec
from text4vis.engine.runtime.build import Runtime

LABELS = ["yoga", "surfing", "arm wrestling", "cooking"]


def upload(name: str) -> dict[str, tuple[str, bytes, str]]:
    return {"file": (name, generated_videos()[name].read_bytes(), "video/mp4")}


@pytest.mark.parametrize("views", ["1x1", "4x3"])
def test_index_true_then_labels_equal_classify(runtime: Runtime, tmp_path: Path, views: str) -> None:
    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            answers = {}
            for name in ("clip_a.mp4", "clip_c.avi"):
                data = {"labels": json.dumps(LABELS), "top_k": "0", "views": views, "index": "true"}
                r = await c.post("/classify", files=upload(name), data=data)
                assert r.status_code == 200, r.text
                answers[r.json()["archive_id"]] = {p["label"]: p["probability"] for p in r.json()["predictions"]}
            r = await c.post("/archive/labels", json={"labels": LABELS, "top_k": 0, "views": views})
            assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson"), r.text
            assert r.headers["x-accel-buffering"] == "no"  # a proxy in front streams it line by line
            *rows, summary = [json.loads(line) for line in r.text.splitlines()]
            assert summary["done"] and summary["rows"] == 2
            for row in rows:
                stored = {p["label"]: p["probability"] for p in row["predictions"]}
                assert max(abs(stored[k] - v) for k, v in answers[row["id"]].items()) < 1e-6
            # the other views' table does not hold them
            other = "4x3" if views == "1x1" else "1x1"
            r = await c.get("/archive/videos", params={"views": other})
            assert r.status_code == 409 and "holds no embeddings of this model and sampling" in r.json()["detail"]

    asyncio.run(go())


def test_upload_list_get_search_delete(runtime: Runtime, tmp_path: Path) -> None:
    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            r = await c.post(
                "/archive/videos", files=upload("clip_b.mp4"), data={"window_s": "4", "metadata": '{"camera": 3}'}
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["new"] and body["windows"] == 3 and body["video"]["metadata"] == {"camera": 3}
            assert body["video"]["thumbnail"].startswith("data:image/jpeg;base64,")
            video_id = body["video"]["id"]
            again = await c.post("/archive/videos", files=upload("clip_b.mp4"), data={"window_s": "4"})
            assert again.status_code == 200 and not again.json()["new"] and again.json()["video"]["id"] == video_id
            await c.post("/archive/videos", files=upload("clip_a.mp4"))

            page = (await c.get("/archive/videos", params={"limit": 1})).json()
            assert page["total"] == 2 and len(page["rows"]) == 1
            windows = (await c.get("/archive/videos", params={"kind": "window"})).json()
            assert windows["total"] == 3 and all(w["content_id"] == video_id for w in windows["rows"])
            assert (await c.get(f"/archive/videos/{video_id}")).json()["name"] == "clip_b.mp4"
            assert (await c.get("/archive/videos/nope")).status_code == 404
            filtered = (await c.get("/archive/videos", params={"meta": "camera=3", "limit": 1})).json()
            assert filtered["total"] == 1 and filtered["rows"][0]["id"] == video_id  # over the whole table
            assert (await c.get("/archive/videos", params={"meta": ["camera=3", "site=x"]})).json()["total"] == 0
            bad = await c.get("/archive/videos", params={"meta": "=3"})
            assert bad.status_code == 422 and "meta must be key=value" in bad.json()["detail"]

            hits = (await c.get("/archive/search", params={"q": "surfing", "k": 5})).json()["results"]
            assert len(hits) == 2 and hits[0]["score"] >= hits[1]["score"] and hits[0]["thumbnail"]
            hits = (await c.get("/archive/search", params={"q": "surfing", "kind": "window"})).json()["results"]
            assert len(hits) == 3 and all(h["kind"] == "window" for h in hits)
            stats = (await c.get("/archive/stats")).json()
            assert [(t["videos"], t["windows"]) for t in stats["tables"]] == [(2, 3)]

            assert (await c.delete(f"/archive/videos/{video_id}")).json() == {"deleted": 4}
            assert (await c.get("/archive/videos")).json()["total"] == 1

            bad = await c.post("/archive/videos", files=upload("clip_a.mp4"), data={"metadata": "[1]"})
            assert bad.status_code == 422 and "metadata must be a JSON object" in bad.json()["detail"]
            bad = await c.post("/archive/videos", files=upload("clip_a.mp4"), data={"vocab": "x"})
            assert bad.status_code == 422 and "not supported by this route" in bad.json()["detail"]
            broken = {"file": ("x.mp4", b"\x00" * 500, "video/mp4")}
            assert (await c.post("/archive/videos", files=broken)).status_code == 415
            assert (await c.get("/archive/videos")).json()["total"] == 1  # nothing stored lost

    asyncio.run(go())


def test_archive_writes_need_a_key(runtime: Runtime, tmp_path: Path) -> None:
    async def go() -> None:
        async with running(make_app(tmp_path, runtime, api_keys=["s3cret"])) as c:
            assert (await c.post("/archive/videos", files=upload("clip_a.mp4"))).status_code == 401
            data = {"labels": json.dumps(LABELS), "index": "true"}
            assert (await c.post("/classify", files=upload("clip_a.mp4"), data=data)).status_code == 401
            assert (await c.get("/archive/videos")).json()["total"] == 0
            key = {"Authorization": "Bearer s3cret"}
            r = await c.post("/archive/videos", files=upload("clip_a.mp4"), headers=key)
            assert r.status_code == 200, r.text
            assert (await c.delete(f"/archive/videos/{r.json()['video']['id']}")).status_code == 401

    asyncio.run(go())


@pytest.mark.parametrize("stream", [False, True])
def test_timeline_index_stores_its_windows(runtime: Runtime, tmp_path: Path, stream: bool) -> None:
    """index=true on the timeline stores each window's embedding; re-labelled, the windows give
    the timeline's own probabilities."""

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            data = {"labels": json.dumps(LABELS), "top_k": "0", "window_s": "4", "index": "true"}
            if stream:
                data["stream"] = "true"
            r = await c.post("/classify/timeline", files=upload("clip_b.mp4"), data=data)
            assert r.status_code == 200, r.text
            if stream:
                lines = [json.loads(line) for line in r.text.splitlines()]
                segments = [line for line in lines if line["type"] == "segment"]
                archive_id = lines[-1]["archive_id"]
            else:
                segments, archive_id = r.json()["segments"], r.json()["archive_id"]
            assert archive_id and len(segments) == 3
            r = await c.post("/archive/labels", json={"labels": LABELS, "top_k": 0, "kind": "window"})
            *rows, summary = [json.loads(line) for line in r.text.splitlines()]
            assert summary["rows"] == 3
            rows.sort(key=lambda row: row["start_s"])
            for row, segment in zip(rows, segments, strict=True):
                assert (row["start_s"], row["end_s"]) == (segment["start_s"], segment["end_s"])
                stored = {p["label"]: p["probability"] for p in row["predictions"]}
                answered = {p["label"]: p["probability"] for p in segment["predictions"]}
                assert max(abs(stored[k] - v) for k, v in answered.items()) < 1e-6

    asyncio.run(go())


def test_a_model_change_is_said_and_reindexed_from_the_stored_paths(
    runtime: Runtime, tmp_path: Path, tiny_clip_path: Path
) -> None:
    """Three files indexed (absolute paths) under fp32; a server running bf16 says they are stored
    under another model (stats, search), and POST /archive/reindex embeds again the two whose file
    is still there, counts the deleted one, and skips them all on a rerun."""
    import shutil

    from tests.server_helpers import settings
    from text4vis.engine.archive.store import open_archive
    from text4vis.engine.offline import index_files
    from text4vis.engine.request import IndexRequest
    from text4vis.models.clip_loader import TINY_ARCH
    from text4vis.server.app import create_app

    folder = tmp_path / "clips"
    folder.mkdir()
    paths = [Path(shutil.copy(p, folder / p.name)) for p in generated_videos().values()]
    archive = tmp_path / "archive"
    index_files(runtime, open_archive(str(archive)), paths, IndexRequest())
    paths[2].unlink()
    app = create_app(
        settings(tmp_path, model=TINY_ARCH, clip_checkpoint=tiny_clip_path, precision="bf16", archive_uri=str(archive))
    )

    async def go() -> None:
        async with running(app) as c:
            stats = (await c.get("/archive/stats")).json()
            (old,) = [t["fingerprint"] for t in stats["tables"]]
            assert stats["elsewhere"] == {old: 3} and stats["current"] != old
            found = await c.get("/archive/search", params={"q": "surfing"})  # no table of this model yet
            assert found.status_code == 409 and "t4v archive reindex" in found.json()["detail"]
            r = await c.post("/archive/reindex", json={})
            *lines, summary = [json.loads(line) for line in r.text.splitlines()]
            assert summary == {"done": True, "indexed": 2, "missing": 1}, summary
            assert {line["path"] for line in lines if line["status"] == "indexed"} == {str(p) for p in paths[:2]}
            assert (await c.get("/archive/stats")).json()["elsewhere"] == {old: 1}  # the deleted file's
            again = (await c.post("/archive/reindex", json={})).text.splitlines()
            assert json.loads(again[-1]) == {"done": True, "missing": 1}
            found = (await c.get("/archive/search", params={"q": "surfing"})).json()
            assert len(found["results"]) == 2 and found["elsewhere"] == {old: 1}  # said beside the answer
            assert all(h["names"] == [h["name"]] for h in found["results"])

    asyncio.run(go())


def test_metadata_that_cannot_be_answered_is_refused_and_a_poisoned_row_fails_nothing(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Metadata nested 300 deep was stored (and the POST answered 500); from then on every page
    and search that reached the row answered 500. Now: deep, non-finite (NaN, 1e999) and
    non-object metadata is a 422 naming the rule, nothing is stored; a row poisoned by another
    writer is answered with an error entry in its metadata, the rest of the page intact."""
    deep = "[" * 300 + "]" * 300

    async def go() -> None:
        app = make_app(tmp_path, runtime)
        async with running(app) as c:
            for bad, says in (
                (f'{{"x": {deep}}}', "nested 16 levels"),
                ('{"x": NaN}', "finite numbers only"),
                ('{"x": 1e999}', "finite numbers only"),
                ('{"x": [1, {"y": -Infinity}]}', "finite numbers only"),
                ("[1, 2]", "a JSON object"),
            ):
                r = await c.post("/archive/videos", files=upload("clip_a.mp4"), data={"metadata": bad})
                assert r.status_code == 422 and says in r.json()["detail"], (bad[:40], r.text)
            assert (await c.get("/archive/stats")).json()["tables"] == []  # nothing stored
            for name in ("clip_a.mp4", "clip_b.mp4"):
                r = await c.post("/archive/videos", files=upload(name), data={"metadata": '{"ok": true}'})
                assert r.status_code == 200, r.text
            poisoned = r.json()["video"]["id"]
            engine = app.state.server.engine
            table = engine.table_blocking(engine.clip(ClipSpec()))
            table._table.update(where=f"id = '{poisoned}'", values={"metadata": '{"x": ' + deep + "}"})
            page = await c.get("/archive/videos")
            assert page.status_code == 200, page.text
            by_id = {row["id"]: row["metadata"] for row in page.json()["rows"]}
            assert "cannot be answered" in by_id[poisoned]["error"] and len(by_id) == 2
            assert list(by_id.values()).count({"ok": True}) == 1
            assert (await c.get(f"/archive/videos/{poisoned}")).status_code == 200
            merged = await c.post("/archive/videos", files=upload("clip_a.mp4"), data={"metadata": '{"n": 1e999}'})
            assert merged.status_code == 422

    asyncio.run(go())


class _Unwritable:
    """A LanceDB table whose commits fail as on a read-only disk; reads pass through."""

    def __init__(self, table: object) -> None:
        self._inner = table

    def merge_insert(self, *_: object) -> None:
        raise OSError(30, "Read-only file system")

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_an_archive_that_cannot_be_written_loses_no_acknowledged_row(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the archive's directory read-only, index=true answered 200 with an archive_id and the
    row was dropped for good; POST /archive/videos answered 500; /health/ready said 200. Now the
    row is kept and committed once the archive takes it again; the answers, readiness and
    /metrics say so meanwhile, and index_required / POST /archive/videos are 503s naming it."""
    from text4vis.engine.archive import writer

    monkeypatch.setattr(writer, "RETRY_S", 0.3)

    async def go() -> None:
        app = make_app(tmp_path, runtime)
        async with running(app) as c:
            data = {"labels": json.dumps(LABELS), "index": "true"}
            first = await c.post("/classify", files=upload("clip_a.mp4"), data=data)
            assert first.status_code == 200 and first.json()["archive_stored"] is True, first.text
            assert (await c.get("/archive/videos")).json()["total"] == 1  # a read commits what is queued
            engine = app.state.server.engine
            table = engine.table_blocking(engine.clip(ClipSpec())).table  # the LanceTable under the search index
            healthy = table._table
            table._table = _Unwritable(healthy)

            second = await c.post("/classify", files=upload("clip_b.mp4"), data=data)
            assert second.status_code == 200, second.text  # answered before its commit was tried
            for _ in range(50):
                ready = await c.get("/health/ready")
                if ready.status_code == 503:
                    break
                await asyncio.sleep(0.1)
            assert ready.status_code == 503 and "cannot be written" in ready.json()["detail"], ready.text
            third = await c.post("/classify", files=upload("clip_c.avi"), data=data)
            assert third.status_code == 200 and third.json()["archive_stored"] is False, third.text
            assert "Read-only file system" in third.json()["archive_error"]
            strict = await c.post("/classify", files=upload("clip_a.mp4"), data={**data, "index_required": "true"})
            assert strict.status_code == 503 and "cannot be written" in strict.json()["detail"], strict.text
            fresh = write_frames(tmp_path / "fresh.mp4", moving_square_frames(30, 96, 64, seed=7), 25)
            direct = await c.post("/archive/videos", files={"file": ("fresh.mp4", fresh.read_bytes(), "video/mp4")})
            assert direct.status_code == 503 and "cannot be written" in direct.json()["detail"], direct.text
            metrics = (await c.get("/metrics")).text
            assert "t4v_archive_rows_kept 2.0" in metrics, [m for m in metrics.splitlines() if "kept" in m]

            table._table = healthy  # writable again: the kept rows are committed
            for _ in range(50):
                if (await c.get("/health/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            page = (await c.get("/archive/videos")).json()
            assert {r["id"] for r in page["rows"]} == {
                first.json()["archive_id"],
                second.json()["archive_id"],
                third.json()["archive_id"],
            }
            assert "t4v_archive_rows_kept 0.0" in (await c.get("/metrics")).text

    asyncio.run(go())


def test_a_search_text_too_long_for_the_encoder_is_refused(runtime: Runtime, tmp_path: Path) -> None:
    """A query of 200 tokens was cut to the encoder's 77 silently (classify refuses such prompts)."""

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            assert (await c.post("/archive/videos", files=upload("clip_a.mp4"))).status_code == 200
            r = await c.get("/archive/search", params={"q": " ".join(["x"] * 140)})
            assert r.status_code == 422 and "tokens" in r.json()["detail"], r.text
            assert (await c.get("/archive/search", params={"q": "a dog"})).status_code == 200

    asyncio.run(go())
