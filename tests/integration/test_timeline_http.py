"""``POST /classify/timeline`` in-process: the JSON answer, the NDJSON stream, bad parameters."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.media import generated_videos, joined_parts
from tests.server_helpers import make_app, running
from text4vis.engine.runtime.build import Runtime
from text4vis.models.errors import MediaError

LABELS = ["yoga", "surfing", "arm wrestling", "cooking"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    return joined_parts(tmp_path_factory.mktemp("timeline"))


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def test_timeline_segments_are_the_parts_classified_alone(
    tmp_path: Path, runtime: Runtime, parts: tuple[Path, list[Path]]
) -> None:
    joined, files = parts

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            await c.put("/vocab/acts", json={"labels": LABELS})
            r = await c.post(
                "/classify/timeline",
                files={"file": ("joined.mp4", joined.read_bytes())},
                data={"vocab": "acts", "window_s": "4", "top_k": "0"},
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["vocab"] == {"name": "acts", "version": 1} and body["duration_s"] == 12.0
            assert (body["window_s"], body["stride_s"], body["frames"]) == (4.0, 4.0, 8)
            assert [(s["start_s"], s["end_s"]) for s in body["segments"]] == [(0, 4), (4, 8), (8, 12)]
            assert set(body["timing_ms"]) == {"vocab", "plan", "total"}
            for segment, part in zip(body["segments"], files, strict=True):
                alone = await c.post(
                    "/classify", files={"file": (part.name, part.read_bytes())}, data={"vocab": "acts", "top_k": "0"}
                )
                expected = {p["label"]: p["probability"] for p in alone.json()["predictions"]}
                got = {p["label"]: p["probability"] for p in segment["predictions"]}
                assert got == pytest.approx(expected, abs=1e-5)
            tops = [s["predictions"][0]["label"] for s in body["segments"]]
            assert [e["label"] for e in body["events"]] == [t for i, t in enumerate(tops) if i == 0 or tops[i - 1] != t]
            assert body["events"][0]["start_s"] == 0 and body["events"][-1]["end_s"] == 12.0

            # overlapping windows, 4 frames each, ad-hoc labels
            r = await c.post(
                "/classify/timeline",
                files={"file": ("joined.mp4", joined.read_bytes())},
                data={"labels": json.dumps(LABELS), "window_s": "4", "stride_s": "2", "frames": "4"},
            )
            assert r.status_code == 200, r.text
            spans = [(s["start_s"], s["end_s"]) for s in r.json()["segments"]]
            assert spans == [(0, 4), (2, 6), (4, 8), (6, 10), (8, 12)]
            assert all(len(s["frame_indices"]) == 4 == len(s["times_s"]) for s in r.json()["segments"])

    run(go())


def test_streamed_timeline_is_ndjson_start_segments_end(
    tmp_path: Path, runtime: Runtime, parts: tuple[Path, list[Path]]
) -> None:
    joined, _ = parts

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            data = {"labels": json.dumps(LABELS), "window_s": "4"}
            whole = (
                await c.post("/classify/timeline", files={"file": ("j.mp4", joined.read_bytes())}, data=data)
            ).json()
            r = await c.post(
                "/classify/timeline", files={"file": ("j.mp4", joined.read_bytes())}, data={**data, "stream": "true"}
            )
            assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
            lines = [json.loads(line) for line in r.text.splitlines()]
            assert [line["type"] for line in lines] == ["start", "segment", "segment", "segment", "end"]
            assert lines[0]["windows"] == 3 and lines[0]["duration_s"] == 12.0 and lines[0]["vocab"] is None
            for line, segment in zip(lines[1:4], whole["segments"], strict=True):
                assert {k: v for k, v in line.items() if k != "type"} == segment
            assert lines[-1]["events"] == whole["events"]

    run(go())


def test_a_file_failing_midway_ends_the_stream_with_an_error_line(
    tmp_path: Path, runtime: Runtime, parts: tuple[Path, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status line went out with the first segment: the failure is the last line, with the
    status it would have had, and the server answers the next request."""
    import text4vis.engine.flow.decode_worker as worker

    real, calls = worker.sample_frames, []

    def third_group_fails(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 3:  # the third group: windows 3 and 4 (the first window goes alone)
            raise MediaError("j.mp4: truncated or corrupt video (invalid data)")
        return real(*args, **kwargs)

    monkeypatch.setattr(worker, "sample_frames", third_group_fails)
    joined, _ = parts

    async def go() -> None:
        async with running(make_app(tmp_path, runtime, max_batch_frames=16)) as c:  # two windows per job
            r = await c.post(
                "/classify/timeline",
                files={"file": ("j.mp4", joined.read_bytes())},
                data={"labels": json.dumps(LABELS), "window_s": "2", "stream": "true"},
            )
            lines = [json.loads(line) for line in r.text.splitlines()]
            assert [line["type"] for line in lines] == ["start", "segment", "segment", "segment", "error"]
            assert lines[-1] == {
                "type": "error",
                "status": 415,
                "detail": "j.mp4: truncated or corrupt video (invalid data)",
            }
            again = await c.post(
                "/classify/timeline",
                files={"file": ("j.mp4", joined.read_bytes())},
                data={"labels": json.dumps(LABELS), "window_s": "6"},
            )
            assert again.status_code == 200 and len(again.json()["segments"]) == 2

    run(go())


def test_timeline_takes_uploads_as_large_as_classify(tmp_path: Path, runtime: Runtime) -> None:
    """Long videos are large: the timeline has the upload cap of /classify, not the JSON bodies' 8 MB."""

    async def go() -> None:
        async with running(make_app(tmp_path, runtime, max_upload_bytes=12 * 2**20)) as c:
            for size, status in ((10 * 2**20, 415), (13 * 2**20, 413)):
                r = await c.post(
                    "/classify/timeline", files={"file": ("big.mp4", b"\0" * size)}, data={"labels": json.dumps(LABELS)}
                )
                assert r.status_code == status, r.text

    run(go())


@pytest.mark.parametrize(
    ("data", "upload", "status", "fragment"),
    [
        ({"window_s": "0"}, "video", 422, "window_s: input should be greater than 0"),
        ({"stride_s": "-1"}, "video", 422, "stride_s: input should be greater than 0"),
        ({"window_s": "5000"}, "video", 422, "window_s: input should be less than or equal to 3600"),
        ({"window_s": "eight"}, "video", 422, "window_s: input should be a valid number"),
        ({"window_s": "0.01"}, "video", 422, "T4V_MAX_TIMELINE_WINDOWS"),
        ({"frames": "64"}, "video", 422, "at most 32"),
        ({"vocab": "missing", "labels": ""}, "video", 404, "no vocabulary named 'missing'"),
        ({}, "image", 422, "a.png is an image; a timeline needs a video"),
        ({}, "junk", 415, "a.mp4: not a video or image"),
    ],
)
def test_timeline_bad_input(
    tmp_path: Path,
    runtime: Runtime,
    parts: tuple[Path, list[Path]],
    data: dict,
    upload: str,
    status: int,
    fragment: str,
) -> None:
    from PIL import Image

    Image.new("RGB", (64, 48), "red").save(tmp_path / "a.png")
    files = {
        "video": ("j.mp4", parts[0].read_bytes()),
        "image": ("a.png", (tmp_path / "a.png").read_bytes()),
        "junk": ("a.mp4", b"not a video at all" * 50),
    }[upload]

    async def go() -> None:
        async with running(make_app(tmp_path, runtime, max_timeline_windows=100)) as c:
            r = await c.post("/classify/timeline", files={"file": files}, data={"labels": json.dumps(LABELS), **data})
            assert r.status_code == status, r.text
            assert fragment in r.json()["detail"]
            assert str(tmp_path) not in r.text

    run(go())


def test_every_reference_in_the_openapi_schema_resolves(tmp_path: Path, runtime: Runtime) -> None:
    """The NDJSON lines of a streamed timeline are documented in place: schemathesis reported
    their references as unresolvable when they pointed at components that did not exist."""

    async def go() -> dict:
        async with running(make_app(tmp_path, runtime)) as c:
            return (await c.get("/openapi.json")).json()

    schema = run(go())
    refs = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    components = schema["components"]["schemas"]
    assert refs and all(ref.removeprefix("#/components/schemas/") in components for ref in refs), refs
    lines = schema["paths"]["/classify/timeline"]["post"]["responses"]["200"]["content"]["application/x-ndjson"]
    assert [s["properties"]["type"]["const"] for s in lines["schema"]["oneOf"]] == ["start", "segment", "end", "error"]


def _endless_lines(produced: list[int]):  # noqa: ANN202
    async def lines():  # noqa: ANN202
        while True:
            produced.append(1)
            yield b'{"type": "segment"}\n'
            await asyncio.sleep(0.01)

    return lines()


async def _drive(response: Any, send: Any) -> float:
    """Run a streamed response to its end against ``send`` and a client that says nothing (as
    uvicorn calls it): the seconds it took."""

    async def receive() -> dict:
        await asyncio.Event().wait()
        return {}

    t0 = time.monotonic()
    await asyncio.wait_for(response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send), 5)
    return time.monotonic() - t0


def test_a_stream_whose_client_reads_nothing_is_cut_and_releases_its_slot() -> None:
    """Issue 25: a client that stops reading held its slot and upload forever (the deadline was
    checked only when a decode job was submitted). Each send now has a limit: past it the stream
    ends, and what it held is released."""
    import contextlib

    from text4vis.server.streaming import GuardedStream

    released: list[bool] = []
    produced: list[int] = []
    body = _endless_lines(produced)

    async def go() -> float:
        held = contextlib.AsyncExitStack()
        held.callback(released.append, True)
        response = GuardedStream(body, error_line=lambda s, d: b"", stall_s=0.3, held=held)
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)
            if len(sent) > 3:  # the client's buffers are full: the send never completes
                await asyncio.Event().wait()

        return await _drive(response, send)

    took = run(go())
    assert released == [True] and 0.3 <= took < 2.0, took
    assert body.ag_frame is None  # the work stopped with it
    assert len(produced) <= 4


def test_a_stream_past_its_deadline_is_cut_even_while_the_client_reads_slowly() -> None:
    """``timeline_timeout_s`` covers the whole answer, sends included."""
    import contextlib

    from text4vis.server.streaming import GuardedStream

    released: list[bool] = []

    async def go() -> float:
        held = contextlib.AsyncExitStack()
        held.callback(released.append, True)
        loop = asyncio.get_running_loop()
        response = GuardedStream(
            _endless_lines([]), error_line=lambda s, d: b"", stall_s=60, deadline=loop.time() + 0.5, held=held
        )

        async def send(message: dict) -> None:
            await asyncio.sleep(0.05)  # a slow reader, never stalled for long

        return await _drive(response, send)

    took = run(go())
    assert released == [True] and 0.5 <= took < 2.0, took


def test_a_server_shutting_down_ends_a_stream_with_an_error_line() -> None:
    """SIGTERM (``ServerState.begin_shutdown``) while a stream waits for its next window: the
    stream's last line is a 503 error line and the answer completes, no traceback."""
    import contextlib

    from text4vis.server.streaming import SHUTTING_DOWN, GuardedStream

    async def slow_lines():  # noqa: ANN202
        yield b'{"type": "start"}\n'
        await asyncio.sleep(30)
        yield b'{"type": "end"}\n'

    async def go() -> list[dict]:
        stopping = asyncio.Event()
        response = GuardedStream(
            slow_lines(),
            error_line=lambda status, detail: json.dumps({"status": status, "detail": detail}).encode() + b"\n",
            stall_s=5,
            stopping=stopping,
            held=contextlib.AsyncExitStack(),
        )
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)
            if message.get("body") == b'{"type": "start"}\n':
                asyncio.get_running_loop().call_later(0.2, stopping.set)

        await _drive(response, send)
        return sent

    sent = run(go())
    bodies = [m.get("body", b"") for m in sent if m["type"] == "http.response.body"]
    lines = [json.loads(b) for b in bodies if b]
    assert lines[-1] == {"status": 503, "detail": SHUTTING_DOWN}
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_a_stream_releases_what_it_holds_when_the_client_is_gone_before_the_first_line() -> None:
    """Starlette never starts the body of a response whose client left first: the admission and
    the upload are released by the response itself, and the body is closed."""
    import contextlib

    from starlette.requests import ClientDisconnect

    from text4vis.server.streaming import GuardedStream

    released: list[bool] = []

    async def lines():  # noqa: ANN202
        yield b"{}\n"

    body = lines()

    async def go() -> None:
        held = contextlib.AsyncExitStack()
        held.callback(released.append, True)
        response = GuardedStream(body, error_line=lambda s, d: b"", stall_s=5.0, held=held)

        async def send(message: dict) -> None:
            raise OSError("connection reset by peer")

        async def receive() -> dict:
            return {"type": "http.disconnect"}

        with pytest.raises(ClientDisconnect):
            await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)

    run(go())
    assert released == [True]
    assert body.ag_frame is None  # closed (it never ran: Starlette's send failed first)


@pytest.mark.parametrize(("field", "value"), [("views", "4x3"), ("sampling", "fast"), ("abstain", "true")])
def test_classify_options_a_timeline_does_not_support_are_refused(
    tmp_path: Path, runtime: Runtime, field: str, value: str
) -> None:
    """They used to be accepted and ignored (the web page's "none of these" did nothing there)."""

    async def go() -> None:
        async with running(make_app(tmp_path, runtime)) as c:
            files = {"file": ("a.mp4", generated_videos()["clip_a.mp4"].read_bytes(), "video/mp4")}
            r = await c.post("/classify/timeline", files=files, data={"labels": '["a", "b"]', field: value})
            assert r.status_code == 422, r.text
            assert r.json()["detail"] == f"{field!r} is not supported by this route (it applies to POST /classify)"

    run(go())
