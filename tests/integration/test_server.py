"""The HTTP API in-process (httpx ASGITransport): vocabularies, classify, limits, errors, batching."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from tests.media import generated_videos
from tests.server_helpers import classify_offline, make_app, running
from text4vis.engine.facade import TIMING_KEYS
from text4vis.engine.runtime.build import Runtime

LABELS = ["yoga", "surfing", "arm wrestling", "ApplyEyeMakeup"]


def clip_bytes(name: str = "clip_a.mp4") -> bytes:
    return generated_videos()[name].read_bytes()


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def test_vocab_lifecycle(tmp_path: Path, runtime: Runtime) -> None:
    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            r = await c.put("/vocab/sports", json={"labels": LABELS})
            assert r.status_code == 201, r.text
            body = r.json()
            assert body["version"] == 1 and body["labels"] == LABELS and r.headers["etag"] == f'"{body["etag"]}"'
            assert body["templates"] == ["a video of a person {}."] and body["text_model"] == runtime.info.model_id

            again = await c.put("/vocab/sports", json={"labels": LABELS})
            assert again.status_code == 200 and again.json()["version"] == 1
            assert again.headers["etag"] == r.headers["etag"]

            stale = await c.put("/vocab/sports", json={"labels": ["x", "y"]}, headers={"If-Match": '"nope"'})
            assert stale.status_code == 412
            ok = await c.put(
                "/vocab/sports",
                json={"labels": [*LABELS, "skiing"], "templates": ["a photo of {}."]},
                headers={"If-Match": r.headers["etag"]},
            )
            assert ok.status_code == 200 and ok.json()["version"] == 2

            listing = (await c.get("/vocab")).json()["vocabularies"]
            assert [(v["name"], v["version"], v["num_labels"]) for v in listing] == [("sports", 2, 5)]
            got = await c.get("/vocab/sports")
            assert got.status_code == 200 and got.json()["templates"] == ["a photo of {}."]
            assert (await c.delete("/vocab/sports")).status_code == 204
            assert (await c.get("/vocab/sports")).status_code == 404
            assert (await c.delete("/vocab/sports")).status_code == 404

    run(go())


@pytest.mark.parametrize(
    ("name", "body", "fragment"),
    [
        ("sp ace", {"labels": ["a", "b"]}, "name: string should match pattern"),
        ("ok", {"labels": []}, "labels: list should have at least 1 item"),
        ("ok", {"labels": ["a"]}, "one label cannot be classified"),
        ("ok", {"labels": ["a", "a"]}, "duplicate labels: a"),
        ("ok", {"labels": ["a", ""]}, "labels.1: string should have at least 1 character"),
        ("ok", {"labels": ["ab " * 90, "b"]}, "tokens"),
        ("ok", {"labels": [f"l{i}" for i in range(11)]}, "at most 10"),
        ("ok", {"labels": ["a", "b"], "templates": ["nothing"]}, "templates.0 must hold one {} where the label goes"),
        ("ok", {"labels": ["a", "b"], "templates": ["{} and {}"]}, "templates.0 must hold one {} where the label goes"),
        ("ok", {"labels": ["a", "b"], "preset": "kinetics400"}, "preset is not a known field"),
        ("ok", {"preset": "nope"}, "preset: input should be 'kinetics400'"),
        ("ok", {"labels": "a,b"}, "labels: input should be a valid list"),
        ("ok", {}, "labels is required"),
    ],
)
def test_bad_vocab_is_422_and_nothing_lost(
    tmp_path: Path, runtime: Runtime, name: str, body: dict, fragment: str
) -> None:
    async def go() -> None:
        async with running(make_app(tmp_path, runtime, max_labels=10)) as c:
            assert (await c.put("/vocab/ok", json={"labels": ["kept", "also"]})).status_code == 201
            r = await c.put(f"/vocab/{name}", json=body)
            assert r.status_code == 422, r.text
            assert isinstance(r.json()["detail"], str) and fragment in r.json()["detail"], r.json()["detail"]
            assert (await c.get("/vocab/ok")).json()["labels"] == ["kept", "also"]

    run(go())


def test_a_422_lists_a_bounded_number_of_errors(tmp_path: Path, runtime: Runtime) -> None:
    """100k blank labels (a 0.5 MB body) answered a 16.7 MB 422: now 20 errors and a count."""

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            r = await c.put("/vocab/blank", json={"labels": [" "] * 100_000})
            assert r.status_code == 422 and len(r.content) < 10_000, len(r.content)
            body = r.json()
            assert "must not be blank" in body["detail"] and "more)" in body["detail"], body["detail"]
            assert len(body["errors"]) == 20 and body["errors_omitted"] >= 100_000 - 20
            assert body["errors"][0]["loc"] == ["body", "labels", 0] and body["errors"][0]["input"] == " "
            huge = await c.put("/vocab/huge", json={"labels": "x" * 100_000})
            assert huge.status_code == 422 and "input" not in huge.json()["errors"][0] and len(huge.content) < 2000

    run(go())


def test_redirects_are_relative_and_hosts_can_be_restricted(tmp_path: Path, runtime: Runtime) -> None:
    """A trailing slash's redirect echoed the request's Host (``Location: http://evil.example/vocab``);
    T4V_ALLOWED_HOSTS refuses other hosts with a 400."""

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            r = await c.get("/vocab/?x=1", headers={"Host": "evil.example"})
            assert r.status_code == 307 and r.headers["location"] == "/vocab?x=1"
        async with running(make_app(tmp_path, runtime, allowed_hosts="t4v,*")) as c:
            assert (await c.get("/vocab", headers={"Host": "anything.example"})).status_code == 200  # '*': any
        async with running(make_app(tmp_path, runtime, allowed_hosts="t4v, *.example.com")) as c:
            assert (await c.get("/vocab")).status_code == 200  # the test client's Host is t4v
            assert (await c.get("/vocab", headers={"Host": "t4v:8000"})).status_code == 200
            assert (await c.get("/vocab", headers={"Host": "api.example.com"})).status_code == 200
            for host in ("evil.example", "example.com.evil", "t4vx"):
                refused = await c.get("/vocab", headers={"Host": host})
                assert refused.status_code == 400 and "T4V_ALLOWED_HOSTS" in refused.json()["detail"], host

    run(go())


def test_an_upload_gets_time_in_proportion_to_what_it_sends(tmp_path: Path, runtime: Runtime) -> None:
    """The upload's pace (upload_timeout_s + 1 s per upload_min_rate bytes): a 1.5 MB clip sent
    over ~1.6 s is served although upload_timeout_s is 0.5 s (at 200 KB/s its bytes buy 8 s more);
    16 KB trickled over the same time is a 408 that names the rule, after ~0.6 s."""
    clip = clip_bytes()
    boundary = "t4vpace"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="labels"\r\n\r\n["a", "b"]\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def body(payload: bytes, pieces: int):  # noqa: ANN202
        yield head
        step = -(-len(payload) // pieces)
        for i in range(0, len(payload), step):
            await asyncio.sleep(0.1)
            yield payload[i : i + step]
        yield tail

    async def go() -> None:
        app = make_app(tmp_path, runtime, upload_timeout_s=0.5, upload_min_rate=200_000)
        async with running(app) as c:
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
            steady = await c.post("/classify", content=body(clip, 16), headers=headers)
            assert steady.status_code == 200, steady.text
            t0 = time.monotonic()
            slow = await c.post("/classify", content=body(clip[:16_000], 16), headers=headers)
            assert slow.status_code == 408 and slow.headers["connection"] == "close", slow.text
            assert "arrived too slowly" in slow.json()["detail"] and time.monotonic() - t0 < 1.2

    run(go())


def test_a_failing_sqlite_store_is_a_503_and_not_ready(tmp_path: Path, runtime: Runtime) -> None:
    """An SQLite error on a vocabulary route is a 503 naming the store (it was a 500), and
    /health/ready says not ready until the store can be read and written again."""

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            assert (await c.put("/vocab/v", json={"labels": ["a", "b"]})).status_code == 201
            store = c._transport.app.state.server.registry.store  # type: ignore[attr-defined]
            db = store._db
            store._db = sqlite3.connect(":memory:", check_same_thread=False)  # no tables: every call fails
            r = await c.put("/vocab/w", json={"labels": ["a", "c"]})
            assert r.status_code == 503 and r.json()["detail"].startswith("the vocabulary store "), r.text
            ready = await c.get("/health/ready")
            assert ready.status_code == 503 and "no such table" in ready.json()["detail"]
            store._db = db
            assert (await c.get("/vocab/v")).status_code == 200
            assert (await c.get("/health/ready")).status_code == 200
            # read-only after start: reads succeed, writes fail, and ready says so until writes work
            db.execute("PRAGMA query_only = ON")
            assert (await c.put("/vocab/w", json={"labels": ["a", "c"]})).status_code == 503
            assert (await c.get("/vocab/v")).status_code == 200
            ready = await c.get("/health/ready")
            assert ready.status_code == 503 and "readonly database" in ready.json()["detail"], ready.text
            db.execute("PRAGMA query_only = OFF")
            assert (await c.get("/health/ready")).status_code == 200  # its own write probe clears it
            assert (await c.put("/vocab/w", json={"labels": ["a", "c"]})).status_code == 201

    run(go())


def test_a_nan_classifier_row_is_a_503_never_a_null_probability(tmp_path: Path, runtime: Runtime) -> None:
    """A vocabulary whose stored matrix holds a NaN row (written by an earlier release or by hand
    into Redis/SQLite): /classify answers 503 with a sentence, not probabilities of null."""
    import dataclasses

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            assert (await c.put("/vocab/v", json={"labels": ["a", "b", "c"]})).status_code == 201
            store = c._transport.app.state.server.registry.store  # type: ignore[attr-defined]
            record = store.get("v")
            matrix = record.matrix.copy()
            matrix[1] = np.nan
            store.put(dataclasses.replace(record, etag="tampered", matrix=matrix))
            files = {"file": ("a.mp4", clip_bytes(), "video/mp4")}
            r = await c.post("/classify", files=files, data={"vocab": "v", "top_k": "0"})
            assert r.status_code == 503 and "non-finite score" in r.json()["detail"], r.text

    run(go())


def test_classify_vocab_and_adhoc_match_the_offline_pipeline(tmp_path: Path, runtime: Runtime) -> None:
    (offline,) = classify_offline(runtime, LABELS, [generated_videos()["clip_a.mp4"]], top_k=0)
    assert not isinstance(offline, BaseException)

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            await c.put("/vocab/sports", json={"labels": LABELS})
            files = {"file": ("arm_wrestling.mp4", clip_bytes(), "video/mp4")}
            r = await c.post("/classify", files=files, data={"vocab": "sports", "top_k": "0"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["vocab"] == {"name": "sports", "version": 1}
            assert body["frame_indices"] == offline.frame_indices
            assert body["model"] == runtime.info.model_id
            assert list(body["timing_ms"]) == list(TIMING_KEYS) == list(offline.timing_ms)
            assert body["timing_ms"]["total"] >= body["timing_ms"]["encode"] > 0
            got = {p["label"]: p["probability"] for p in body["predictions"]}
            for p in offline.predictions:
                assert abs(got[p.label] - p.probability) < 1e-6
            adhoc = await c.post("/classify", files=files, data={"labels": json.dumps(LABELS), "top_k": "2"})
            assert adhoc.status_code == 200 and adhoc.json()["vocab"] is None
            assert [p["label"] for p in adhoc.json()["predictions"]] == [p.label for p in offline.predictions[:2]]
            multi = await c.post("/classify", files=files, data={"vocab": "sports", "views": "4x3", "frames": "16"})
            assert multi.status_code == 200 and len(multi.json()["frame_indices"]) == 64

    run(go())


@pytest.mark.parametrize(
    ("data", "content", "status", "fragment"),
    [
        ({"vocab": "missing"}, None, 404, "no vocabulary named 'missing'"),
        ({}, None, 422, "exactly one of vocab or labels"),
        ({"labels": "not json"}, None, 422, "JSON array"),
        ({"labels": '{"a": 1}'}, None, 422, "JSON array"),
        ({"vocab": "sports", "views": "9x3"}, None, 422, "at most 4x3"),
        ({"vocab": "sports", "frames": "64"}, None, 422, "at most 32"),
        ({"vocab": "sports", "top_k": "-1"}, None, 422, "greater than or equal"),
        ({"vocab": "sports"}, b"definitely not a video" * 100, 415, "notes.mp4: not a video or image"),
        ({"vocab": "sports"}, b"", 415, "empty"),
    ],
)
def test_classify_bad_input(
    tmp_path: Path, runtime: Runtime, data: dict, content: bytes | None, status: int, fragment: str
) -> None:
    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            await c.put("/vocab/sports", json={"labels": LABELS})
            files = {"file": ("notes.mp4", clip_bytes() if content is None else content, "video/mp4")}
            r = await c.post("/classify", files=files, data=data)
            assert r.status_code == status, r.text
            assert fragment in json.dumps(r.json()["detail"])
            assert str(tmp_path) not in r.text  # no server paths in messages

    run(go())


def test_truncated_upload_is_415(tmp_path: Path, runtime: Runtime) -> None:
    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            data = clip_bytes("clip_b.mp4")
            files = {"file": ("cut.mp4", data[: len(data) // 2], "video/mp4")}
            r = await c.post("/classify", files=files, data={"labels": '["a", "b"]'})
            assert r.status_code == 415 and "cut.mp4" in r.json()["detail"]

    run(go())


def test_upload_cap_is_413(tmp_path: Path, runtime: Runtime) -> None:
    async def go() -> None:
        async with running(make_app(tmp_path, runtime, max_upload_bytes=64 * 1024)) as c:
            files = {"file": ("big.mp4", clip_bytes(), "video/mp4")}
            r = await c.post("/classify", files=files, data={"labels": '["a"]'})
            assert r.status_code == 413 and "larger than 65536 bytes" in r.json()["detail"]

            async def chunks():  # noqa: ANN202 - no Content-Length: the cap is counted while streaming
                yield (
                    b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
                    b"Content-Type: video/mp4\r\n\r\n"
                )
                for _ in range(100):
                    yield b"x" * 4096
                yield b"\r\n--xyz--\r\n"

            streamed = await c.post(
                "/classify", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xyz"}
            )
            assert streamed.status_code == 413

    run(go())


def test_concurrent_requests_are_batched_and_equal_alone(tmp_path: Path, runtime: Runtime) -> None:
    """N concurrent classify requests -> fewer encoder calls than N; each equals the request alone."""
    clips = ["clip_a.mp4", "clip_b.mp4", "clip_c.avi"] * 2

    async def go() -> None:
        app = make_app(tmp_path, runtime, max_delay_ms=300.0, max_batch_frames=64)
        async with running(app) as c:
            await c.put("/vocab/sports", json={"labels": LABELS})

            async def post(name: str) -> dict:
                files = {"file": (name, clip_bytes(name), "video/mp4")}
                r = await c.post("/classify", files=files, data={"vocab": "sports", "top_k": "0"})
                assert r.status_code == 200, r.text
                return {p["label"]: p["probability"] for p in r.json()["predictions"]}

            alone = {name: await post(name) for name in set(clips)}
            stats = app.state.server.engine.flow.batcher.stats
            before = stats.batches
            together = await asyncio.gather(*(post(name) for name in clips))
            calls = stats.batches - before
            assert calls < len(clips), f"{calls} encoder calls for {len(clips)} requests"
            for name, probs in zip(clips, together, strict=True):
                for label, p in probs.items():
                    assert abs(p - alone[name][label]) < 1e-5

    run(go())


def test_a_burst_that_fits_the_wait_is_served_whole(tmp_path: Path, runtime: Runtime) -> None:
    """16 concurrent requests on 2 decode threads: the predicted wait is well under
    max_queue_wait_s, so none is refused (a fixed queue of twice the workers refused 12)."""

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            files = {"file": ("a.mp4", clip_bytes(), "video/mp4")}
            data = {"labels": '["a", "b"]'}
            assert (await c.post("/classify", files=files, data=data)).status_code == 200  # the estimate
            results = await asyncio.gather(*(c.post("/classify", files=files, data=data) for _ in range(16)))
            assert [r.status_code for r in results] == [200] * 16, [r.text for r in results if r.status_code != 200]

    run(go())


def test_admission_refuses_by_predicted_wait_with_retry_after(
    tmp_path: Path, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoding takes 0.4 s a file on 2 threads and max_queue_wait_s is 1 s: a burst of 12 is
    admitted while the work ahead stays under 1 s (about 6) and the rest is refused at once with
    Retry-After, the predicted wait rounded up; every admitted request is answered."""
    from text4vis.engine.flow import decode_worker

    real = decode_worker.sample_clip

    def slow(*args):  # noqa: ANN002, ANN202
        time.sleep(0.4)
        return real(*args)

    monkeypatch.setattr(decode_worker, "sample_clip", slow)

    async def go() -> None:
        async with running(make_app(tmp_path, runtime, max_queue_wait_s=1.0)) as c:
            files = {"file": ("a.mp4", clip_bytes(), "video/mp4")}
            data = {"labels": '["a", "b"]'}
            for _ in range(2):  # the running estimate of a decode
                assert (await c.post("/classify", files=files, data=data)).status_code == 200
            results = await asyncio.gather(*(c.post("/classify", files=files, data=data) for _ in range(12)))
            codes = [r.status_code for r in results]
            assert 4 <= codes.count(200) <= 8 and codes.count(503) == 12 - codes.count(200), codes
            metrics = (await c.get("/metrics")).text
            assert 't4v_requests_in_progress{stage="working"} 0.0' in metrics
            assert "t4v_predicted_wait_seconds 0.0" in metrics  # all answered: nothing ahead
            for busy in (r for r in results if r.status_code == 503):
                assert "max_queue_wait_s of 1 s" in busy.json()["detail"], busy.text
                assert int(busy.headers["retry-after"]) >= 1

    run(go())


def test_full_decode_queue_is_fast_503(tmp_path: Path, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    from text4vis.engine.flow import decode_worker

    real = decode_worker.sample_clip

    def slow(*args):  # noqa: ANN002, ANN202 - a decoder busy for 0.4 s per upload
        time.sleep(0.4)
        return real(*args)

    monkeypatch.setattr(decode_worker, "sample_clip", slow)

    async def go() -> None:
        async with running(make_app(tmp_path, runtime, max_decode_queue=2)) as c:
            files = {"file": ("a.mp4", clip_bytes(), "video/mp4")}
            data = {"labels": '["a", "b"]'}
            results = await asyncio.gather(*(c.post("/classify", files=files, data=data) for _ in range(5)))
            codes = sorted(r.status_code for r in results)
            assert codes.count(200) >= 2 and 503 in codes, codes
            busy = next(r for r in results if r.status_code == 503)
            assert busy.headers["retry-after"] == "1" and "requests are in progress" in busy.json()["detail"]
            assert "t4v_decode_pending 0.0" in (await c.get("/metrics")).text

    run(go())


def test_health_models_metrics(tmp_path: Path, runtime: Runtime) -> None:
    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            assert (await c.get("/health/live")).json() == {"status": "ok", "detail": None}
            assert (await c.get("/health/ready")).status_code == 200
            models = (await c.get("/models")).json()
            assert models[0]["arch"] == runtime.info.arch and models[0]["backend"] == "torch"
            assert models[0]["text_device"] == models[0]["device"] == "cpu"
            await c.put("/vocab/v", json={"labels": ["a", "b"]})
            await c.put("/vocab/w", json={"labels": ["b", "c"]})
            files = {"file": ("a.mp4", clip_bytes(), "video/mp4")}
            await c.post("/classify", files=files, data={"vocab": "v"})
            text = (await c.get("/metrics")).text
            assert 't4v_http_requests_total{method="POST",route="/classify",status="200"} 1.0' in text
            assert 't4v_text_embedding_cache_total{result="hit"} 1.0' in text
            assert 't4v_text_embedding_cache_total{result="miss"} 3.0' in text
            assert "t4v_batch_frames_count" in text and "t4v_decode_seconds_count 1.0" in text
            assert "t4v_queue_frames" in text

    run(go())


def test_metric_labels_come_from_closed_sets(tmp_path: Path, runtime: Runtime) -> None:
    """Random method names and paths make no new series: 200 of them leave /metrics as it was
    after the first (each was one new series per method before)."""

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            for i in range(200):
                await c.request(f"X{i}FOO", f"/vocab/v{i}")
                await c.request("GET", f"/no/such/path/{i}")
            text = (await c.get("/metrics")).text
            series = [line for line in text.splitlines() if line.startswith("t4v_http_requests_total")]
            assert 't4v_http_requests_total{method="other",route="/vocab/{name}",status="405"} 200.0' in series
            assert 't4v_http_requests_total{method="GET",route="unmatched",status="404"} 200.0' in series
            assert len(series) == 2 and "FOO" not in text and "/no/such" not in text

    run(go())


def test_not_ready_until_loaded(tmp_path: Path, tiny_clip_path: Path) -> None:
    """Without a pre-built runtime the app loads in the background; ready flips from 503 to 200."""
    import httpx

    from tests.server_helpers import settings
    from text4vis.models.clip_loader import TINY_ARCH
    from text4vis.server.app import create_app

    async def go() -> None:
        app = create_app(settings(tmp_path, model=TINY_ARCH, clip_checkpoint=tiny_clip_path))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t4v") as c:
                first = await c.get("/health/ready")
                vocab = await c.put("/vocab/a", json={"labels": ["a"]})
                await app.state.server.wait_ready()
                assert first.status_code == 503 and first.json()["status"] == "loading"
                assert vocab.status_code == 503 and "Retry-After" in vocab.headers
                assert (await c.get("/health/ready")).status_code == 200

    run(go())


def test_startup_presets_and_vocab_file(tmp_path: Path, runtime: Runtime) -> None:
    vocab_file = tmp_path / "vocabs.json"
    vocab_file.write_text(json.dumps({"mine": {"labels": ["a", "b"], "templates": ["a photo of {}."]}}))

    async def go() -> None:
        async with running(make_app(tmp_path, runtime, presets=["kinetics400"], vocab_file=vocab_file)) as c:
            k400 = (await c.get("/vocab/kinetics400")).json()
            assert len(k400["labels"]) == 400 and k400["labels"][0] == "abseiling"
            assert (await c.get("/vocab/mine")).json()["templates"] == ["a photo of {}."]

    run(go())


def test_the_upload_is_written_once_into_the_spool_and_removed(
    tmp_path: Path, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from starlette import formparsers

    def spooled(*args: object, **kwargs: object) -> None:
        raise AssertionError("Starlette's form parser spooled the upload")

    monkeypatch.setattr(formparsers.MultiPartParser, "parse", spooled)
    seen: dict[str, object] = {}

    async def go() -> None:
        app = make_app(tmp_path, runtime)
        async with running(app) as c:
            engine = app.state.server.engine
            real = engine.classify

            async def spy(path: Path, *args: object, **kwargs: object):  # noqa: ANN202
                seen["path"], seen["bytes"] = path, path.read_bytes()
                return await real(path, *args, **kwargs)

            engine.classify = spy
            files = {"file": ("clip.mp4", clip_bytes(), "video/mp4")}
            r = await c.post("/classify", files=files, data={"labels": '["a", "b"]', "top_k": "1"})
            assert r.status_code == 200, r.text
            r = await c.post("/classify", files=files, data={"labels": '["a", "b"]', "top_k": "-1"})
            assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "top_k"]
            assert r.json()["detail"].startswith("top_k: input should be greater than or equal to 0")
            r = await c.post("/classify", data={"labels": '["a", "b"]'}, files={"other": ("x", b"y")})
            assert r.status_code == 422 and r.json()["detail"].startswith("unknown field 'other'; the fields are file,")
            r = await c.post(
                "/classify", data={"labels": '["a", "b"]', "top_k": "1"}, files={"labels": (None, '["a", "b"]')}
            )
            assert r.status_code == 422 and r.json()["detail"] == "file is required"

    run(go())
    assert Path(str(seen["path"])).parent == tmp_path / "uploads" and seen["bytes"] == clip_bytes()
    assert not list((tmp_path / "uploads").iterdir())  # removed once answered, refused uploads too


def test_fast_sampling_per_request_and_as_the_default(tmp_path: Path, runtime: Runtime) -> None:
    async def go() -> None:
        files = {"file": ("clip.mp4", clip_bytes(), "video/mp4")}  # 280 frames, keyframe every 12
        labels = '["a", "b"]'
        async with running(make_app(tmp_path / "a", runtime)) as c:
            exact = (await c.post("/classify", files=files, data={"labels": labels})).json()["frame_indices"]
            r = await c.post("/classify", files=files, data={"labels": labels, "sampling": "fast"})
            assert r.status_code == 200, r.text
            fast = r.json()["frame_indices"]
            assert fast != exact and len(set(fast)) == 8
            assert all(280 * k // 8 <= i < 280 * (k + 1) // 8 for k, i in enumerate(fast))
            r = await c.post("/classify", files=files, data={"labels": labels, "sampling": "fast", "views": "4x3"})
            assert r.status_code == 422 and "one clip per video" in r.json()["detail"]
            r = await c.post("/classify", files=files, data={"labels": labels, "sampling": "quick"})
            assert r.status_code == 422
        async with running(make_app(tmp_path / "b", runtime, default_sampling="fast")) as c:
            assert (await c.post("/classify", files=files, data={"labels": labels})).json()["frame_indices"] == fast

    run(go())


@pytest.mark.parametrize(
    "body",
    [
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n\x00\x01',  # cut short
        b"--xyz\r\nnot a header line at all\r\n\r\n--xyz--\r\n",
        b"no boundary anywhere",
    ],
)
def test_a_malformed_multipart_body_is_a_4xx(tmp_path: Path, runtime: Runtime, body: bytes) -> None:
    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            r = await c.post("/classify", content=body, headers={"content-type": "multipart/form-data; boundary=xyz"})
            assert 400 <= r.status_code < 500, (r.status_code, r.text)
            assert not list((tmp_path / "uploads").iterdir())

    run(go())


def test_labels_are_prompted_as_written_and_clean_up_is_opt_in(tmp_path: Path, runtime: Runtime) -> None:
    """The stored classifier rows are the CLIP text embeddings of the reference's prompt, computed
    here straight from open_clip's model and tokenizer: "a video of a person ApplyEyeMakeup."
    unless clean_labels asks for "a video of a person apply eye makeup."."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from text4vis.engine.vocab.registry import VocabRegistry
    from text4vis.engine.vocab.stores.sqlite import SQLiteStore

    encoder = runtime.text_encoder

    def direct(prompt: str) -> np.ndarray:
        with torch.no_grad():
            emb = encoder.model.encode_text(encoder.tokenizer([prompt]).to(encoder.device))
        return F.normalize(emb.float(), dim=-1)[0].cpu().numpy()

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            as_written = await c.put("/vocab/ucf", json={"labels": ["ApplyEyeMakeup", "brush_hair"]})
            assert as_written.status_code == 201 and as_written.json()["clean_labels"] is False
            assert as_written.json()["templates"] == ["a video of a person {}."]  # the reference's one template
            cleaned = await c.put("/vocab/ucf", json={"labels": ["ApplyEyeMakeup", "brush_hair"], "clean_labels": True})
            assert cleaned.status_code == 200 and cleaned.json()["version"] == 2 and cleaned.json()["clean_labels"]
            assert cleaned.json()["etag"] != as_written.json()["etag"]
            files = {"file": ("a.mp4", clip_bytes(), "video/mp4")}
            form = {"labels": '["ApplyEyeMakeup", "brush_hair"]', "top_k": "0"}
            adhoc = await c.post("/classify", files=files, data=form)
            adhoc_clean = await c.post("/classify", files=files, data={**form, "clean_labels": "true"})
            scores = {p["label"]: p["score"] for p in adhoc.json()["predictions"]}
            assert scores != {p["label"]: p["score"] for p in adhoc_clean.json()["predictions"]}

    run(go())
    record = SQLiteStore(tmp_path / "vocab.db").get("ucf")
    assert record is not None and record.clean_labels is True
    np.testing.assert_allclose(record.matrix[0], direct("a video of a person apply eye makeup."), atol=1e-5)
    np.testing.assert_allclose(record.matrix[1], direct("a video of a person brush hair."), atol=1e-5)
    stored, _ = VocabRegistry(SQLiteStore(tmp_path / "other.db"), encoder).put("ucf", ["ApplyEyeMakeup", "brush_hair"])
    np.testing.assert_allclose(stored.matrix[0], direct("a video of a person ApplyEyeMakeup."), atol=1e-5)
    np.testing.assert_allclose(stored.matrix[1], direct("a video of a person brush_hair."), atol=1e-5)


def test_a_database_of_an_earlier_version_opens_and_keeps_its_vocabularies(tmp_path: Path) -> None:
    import sqlite3

    import numpy as np

    from text4vis.engine.vocab.stores.sqlite import SQLiteStore

    db = sqlite3.connect(tmp_path / "vocab.db")
    db.execute(
        "CREATE TABLE vocabs (name TEXT PRIMARY KEY, version INTEGER NOT NULL, etag TEXT NOT NULL, "
        "text_model TEXT NOT NULL, labels TEXT NOT NULL, templates TEXT NOT NULL, dim INTEGER NOT NULL, "
        "matrix BLOB NOT NULL, updated_at REAL NOT NULL)"
    )
    db.execute(
        "INSERT INTO vocabs VALUES ('old', 3, 'e', 'm', '[\"a\", \"b\"]', '[\"{}\"]', 2, ?, 1.0)",
        (np.eye(2, dtype=np.float32).tobytes(),),
    )
    db.commit()
    db.close()
    record = SQLiteStore(tmp_path / "vocab.db").get("old")
    assert record is not None and record.version == 3 and record.labels == ("a", "b") and not record.clean_labels


def test_every_error_is_one_sentence_naming_the_field(tmp_path: Path, runtime: Runtime) -> None:
    async def go() -> None:
        async with running(make_app(tmp_path, runtime, max_frames=32)) as c:
            empty = await c.put("/vocab/v", json={"labels": []})
            assert empty.status_code == 422 and isinstance(empty.json()["detail"], str)
            assert empty.json()["detail"].startswith("labels: list should have at least 1 item")
            assert "VocabPresetIn" not in empty.text.split('"errors"')[0]  # the sentence judges the labels shape
            assert isinstance(empty.json()["errors"], list)  # pydantic's list, for programs
            blank = await c.put("/vocab/v", json={"labels": ["a", "  "]})
            assert blank.json()["detail"] == "labels.1 must not be blank"
            assert (await c.put("/vocab/v", json={})).json()["detail"] == "labels is required"
            await c.put("/vocab/v", json={"labels": ["a", "b"]})
            files = {"file": ("a.mp4", clip_bytes(), "video/mp4")}
            zero = await c.post("/classify", files=files, data={"vocab": "v", "frames": "0"})
            assert zero.status_code == 422 and zero.json()["detail"].startswith("frames: input should be greater")
            many = await c.post("/classify", files=files, data={"vocab": "v", "frames": "100"})
            assert many.json()["detail"] == "frames must be at most 32 on this server (its max_frames)"

    run(go())


def test_classify_files_reports_each_file_done(runtime: Runtime, tmp_path: Path) -> None:
    """The CLI's progress bar advances once per file, a file that fails included."""
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    done: list[int] = []
    videos = generated_videos()
    out = classify_offline(
        runtime, LABELS, [videos["clip_a.mp4"], bad, videos["clip_b.mp4"]], on_done=lambda: done.append(1)
    )
    assert len(done) == 3 and isinstance(out[1], BaseException) and not isinstance(out[0], BaseException)


def test_vocab_warnings_and_similarity(tmp_path: Path, runtime: Runtime) -> None:
    import io

    from PIL import Image

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            put = await c.put("/vocab/lint", json={"labels": ["surfing", "Surfing!", "yoga", "dancing"]})
            assert put.status_code == 201, put.text
            warnings = put.json()["warnings"]
            assert {"kind": "near_duplicate", "labels": ["surfing", "Surfing!"]}.items() <= warnings[0].items()
            got = await c.get("/vocab/lint")
            assert got.json()["warnings"] == warnings  # the same lint on a read
            sim = (await c.get("/vocab/lint/similarity")).json()
            matrix = sim["matrix"]
            assert sim["labels"] == ["surfing", "Surfing!", "yoga", "dancing"] and sorted(sim["order"]) == [0, 1, 2, 3]
            assert all(
                abs(matrix[i][i] - 1) < 1e-4 and matrix[i][j] == matrix[j][i] for i in range(4) for j in range(4)
            )
            png = await c.get("/vocab/lint/similarity", params={"format": "png"})
            assert png.headers["content-type"] == "image/png"
            assert Image.open(io.BytesIO(png.content)).size[0] > 200
            bad = await c.get("/vocab/lint/similarity", params={"format": "svg"})
            assert bad.status_code == 422 and bad.json()["detail"].startswith("format: input should be")
            assert (await c.get("/vocab/nope/similarity")).status_code == 404
            await c.put("/vocab/big", json={"labels": [f"class {i}" for i in range(501)]})
            big = await c.get("/vocab/big/similarity")
            assert big.status_code == 422 and "at most 500" in big.json()["detail"]

    run(go())


def test_abstention_contract(tmp_path: Path, runtime: Runtime) -> None:
    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            await c.put("/vocab/two", json={"labels": ["basketball", "surfing"]})
            files = {"file": ("a.mp4", clip_bytes(), "video/mp4")}
            plain = (await c.post("/classify", files=files, data={"vocab": "two"})).json()
            assert plain["abstained"] is None and plain["background"] is None
            r = await c.post("/classify", files=files, data={"vocab": "two", "abstain": "true"})
            out = r.json()
            assert r.status_code == 200 and isinstance(out["abstained"], bool) and len(out["background"]) == 3
            assert not {"basketball", "surfing"} & {b["label"] for b in out["background"]}
            assert out["predictions"]  # still returned when it abstains
            best, top_bg = out["predictions"][0]["score"], out["background"][0]["score"]
            assert out["abstained"] == (top_bg > best)
            always = (await c.post("/classify", files=files, data={"vocab": "two", "min_score": "1"})).json()
            assert always["abstained"] is True and "under min_score 1" in always["abstain_reason"]
            bad = await c.post(
                "/classify", files=files, data={"vocab": "two", "abstain": "true", "abstain_margin": "2"}
            )
            assert bad.status_code == 422 and bad.json()["detail"].startswith("abstain_margin:")

    run(go())


def test_abstention_with_a_named_background_and_vocabulary_defaults(tmp_path: Path, runtime: Runtime) -> None:
    """A background the user names (minus the vocabulary's own labels), and a default stored with
    the vocabulary that requests follow unless they say otherwise."""

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            await c.put("/vocab/kitchen", json={"labels": ["cooking", "washing dishes", "surfing", "chopping onion"]})
            await c.put("/vocab/two", json={"labels": ["basketball", "surfing"]})
            files = {"file": ("a.mp4", clip_bytes(), "video/mp4")}
            named = (await c.post("/classify", files=files, data={"vocab": "two", "background": "kitchen"})).json()
            assert named["abstained"] is not None  # background implies abstain
            assert {b["label"] for b in named["background"]} == {"cooking", "washing dishes", "chopping onion"}
            missing = await c.post("/classify", files=files, data={"vocab": "two", "background": "nope"})
            assert missing.status_code == 404 and "no vocabulary named 'nope' to use as the background" in missing.text
            off = await c.post(
                "/classify", files=files, data={"vocab": "two", "background": "kitchen", "abstain": "false"}
            )
            assert off.status_code == 422 and "needs abstain unset or true" in off.json()["detail"]

            default = {"margin": 1.0, "min_score": 1.0, "background": "kitchen"}
            put = await c.put("/vocab/two", json={"labels": ["basketball", "surfing"], "abstain": default})
            assert put.status_code == 200 and put.json()["version"] == 2  # a new default is a new version
            assert put.json()["abstain"] == default
            assert (await c.get("/vocab/two")).json()["abstain"] == put.json()["abstain"]
            by_default = (await c.post("/classify", files=files, data={"vocab": "two"})).json()
            assert by_default["abstained"] is True and "under min_score 1" in by_default["abstain_reason"]
            assert {b["label"] for b in by_default["background"]} <= {"cooking", "washing dishes", "chopping onion"}
            overridden = (
                await c.post("/classify", files=files, data={"vocab": "two", "min_score": "-1", "abstain_margin": "1"})
            ).json()
            assert overridden["abstained"] is False  # the request's own values win
            plain = (await c.post("/classify", files=files, data={"vocab": "two", "abstain": "false"})).json()
            assert plain["abstained"] is None and plain["background"] is None
            bad = await c.put("/vocab/three", json={"labels": ["a", "b"], "abstain": {"background": "../x"}})
            assert bad.status_code == 422 and bad.json()["detail"].startswith("abstain.background:")
            same = await c.put("/vocab/two", json={"labels": ["basketball", "surfing"], "abstain": default})
            assert same.json()["version"] == 2  # identical content: nothing new
            cleared = await c.put("/vocab/two", json={"labels": ["basketball", "surfing"]})
            assert cleared.json()["version"] == 3 and cleared.json()["abstain"] is None

    run(go())


@pytest.mark.parametrize(
    ("route", "field", "suggestion"),
    [
        ("/classify", "topk", "top_k"),
        ("/classify", "top-k", "top_k"),
        ("/classify", "frame", "frames"),
        ("/classify/timeline", "window", "window_s"),
        ("/classify", "zzzz", None),
    ],
)
def test_an_unknown_form_field_is_a_422_naming_the_closest_known_one(
    tmp_path: Path, runtime: Runtime, route: str, field: str, suggestion: str | None
) -> None:
    """``-F topk=1`` used to be ignored: the user got every label. Now it names the field it meant."""

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            files = {"file": ("a.mp4", clip_bytes(), "video/mp4")}
            r = await c.post(route, files=files, data={"labels": '["a", "b"]', field: "1"})
            assert r.status_code == 422, r.text
            detail = r.json()["detail"]
            assert detail.startswith(f"unknown field {field!r}"), detail
            if suggestion:
                assert detail.endswith(f"did you mean {suggestion!r}?"), detail
            else:
                assert "the fields are file, vocab, labels" in detail

    run(go())


def test_an_upload_without_its_closing_boundary_is_a_400(tmp_path: Path, runtime: Runtime) -> None:
    """A connection cut mid-upload must not be classified as if the file were whole."""
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="labels"\r\n\r\n["a", "b"]\r\n'
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
        b"Content-Type: video/mp4\r\n\r\n" + clip_bytes()
    )

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            headers = {"content-type": "multipart/form-data; boundary=xyz"}
            r = await c.post("/classify", content=body, headers=headers)
            assert r.status_code == 400, r.text
            assert r.json()["detail"] == "the upload ended before the multipart body did (no closing boundary)"
            whole = await c.post("/classify", content=body + b"\r\n--xyz--\r\n", headers=headers)
            assert whole.status_code == 200, whole.text
            assert not list((tmp_path / "uploads").iterdir())

    run(go())


def test_too_many_form_fields_are_a_400_before_they_are_read(tmp_path: Path, runtime: Runtime) -> None:
    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            fields = {f"f{i}": "x" for i in range(2000)}
            files = {"file": ("a.mp4", clip_bytes(), "video/mp4")}
            r = await c.post("/classify", files=files, data={"labels": '["a", "b"]', **fields})
            assert r.status_code == 400 and r.json()["detail"] == "the form has more than 64 parts", r.text

    run(go())


def test_messages_a_user_can_act_on(tmp_path: Path, runtime: Runtime) -> None:
    """A PUT without content-type, a template without {}: one sentence that says what to do, and
    no internal model names (VocabLabelsIn, VocabPresetIn) anywhere in the answer."""

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            r = await c.put("/vocab/x", content=b'{"labels": ["a", "b"]}')
            assert r.status_code == 422
            assert r.json()["detail"] == (
                "the request body must be a JSON object, sent with Content-Type: application/json"
            )
            r = await c.put("/vocab/x", json={"labels": ["a", "b"], "templates": ["no placeholder"]})
            assert (
                r.json()["detail"]
                == 'templates.0 must hold one {} where the label goes, e.g. "a video of a person {}."'
            )
            for body in ({"preset": "nope"}, {"labels": []}):
                r = await c.put("/vocab/x", json=body)
                assert r.status_code == 422 and "VocabLabelsIn" not in r.text and "VocabPresetIn" not in r.text

    run(go())


def test_the_list_says_which_vocabularies_are_encoded_for_this_model(tmp_path: Path, runtime: Runtime) -> None:
    """Restarted with another model, the server lists the old vocabularies as not yet encoded for
    it; classifying with one encodes it again (no 422 asking to PUT it again)."""
    from text4vis.engine.vocab.registry import VocabRegistry
    from text4vis.engine.vocab.stores.sqlite import SQLiteStore
    from text4vis.models.clip_loader import TINY_ARCH, ClipSource, load_clip
    from text4vis.models.text_encoder import TextEncoder

    store = SQLiteStore(tmp_path / "vocab.db")
    VocabRegistry(store, TextEncoder(load_clip(ClipSource(arch=TINY_ARCH, random_init=True, seed=3)))).put(
        "old", ["yoga", "surfing"]
    )
    store.close()

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            (row,) = (await c.get("/vocab")).json()["vocabularies"]
            assert row["name"] == "old" and row["encoded_for_this_model"] is False
            files = {"file": ("a.mp4", clip_bytes(), "video/mp4")}
            r = await c.post("/classify", files=files, data={"vocab": "old"})
            assert r.status_code == 200, r.text
            assert r.json()["vocab"] == {"name": "old", "version": 2} and r.json()["model"] == runtime.info.model_id
            (row,) = (await c.get("/vocab")).json()["vocabularies"]
            assert row["encoded_for_this_model"] is True and row["text_model"] == runtime.info.model_id

    run(go())
