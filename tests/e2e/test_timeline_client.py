"""Timelines through a real `t4v serve`: the SDK's streamed segments, the async client, the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from t4v_client import AsyncClient, Client, Segment, TimelineEnd, TimelineStart, UnsupportedMedia
from tests.media import joined_parts, moving_square_frames, write_frames

LABELS = ["arm wrestling", "surfing", "yoga"]


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return joined_parts(tmp_path_factory.mktemp("parts"))[0]


def test_streamed_segments_arrive_before_the_video_is_done(live_server: str, tmp_path: Path) -> None:
    """A 60 s video in 1 s windows: eight decode jobs of 8 windows. The first segment reaches the
    client while later windows are still decoding, and the stream equals the one-piece answer."""
    video = write_frames(
        tmp_path / "minute.mp4", moving_square_frames(600, 96, 64), fps=10, options={"preset": "ultrafast", "g": "20"}
    )
    with Client(live_server) as c:
        t0 = time.perf_counter()
        arrivals, items = [], []
        for item in c.stream_timeline(video, labels=LABELS, window_s=1.0):
            arrivals.append(time.perf_counter() - t0)
            items.append(item)
        whole = c.timeline(video, labels=LABELS, window_s=1.0)
    assert isinstance(items[0], TimelineStart) and items[0].windows == 60
    assert isinstance(items[-1], TimelineEnd) and items[-1].events == whole.events
    segments = items[1:-1]
    assert all(isinstance(s, Segment) for s in segments) and segments == whole.segments
    first, last = arrivals[1], arrivals[-1]
    assert first < 0.5 * last, (first, last)  # streamed, not buffered until the end


def test_async_client_streams_a_timeline(live_server: str, joined: Path) -> None:
    async def go() -> list[object]:
        async with AsyncClient(live_server) as c:
            items = [item async for item in c.stream_timeline(joined, labels=LABELS, window_s=4.0)]
            whole = await c.timeline(joined, labels=LABELS, window_s=4.0)
            assert items[1:-1] == whole.segments
            with pytest.raises(UnsupportedMedia):
                async for _ in c.stream_timeline(b"not a video" * 50, labels=LABELS, filename="x.mp4"):
                    pass
            return items

    items = asyncio.run(go())
    assert [type(i).__name__ for i in items] == ["TimelineStart", "Segment", "Segment", "Segment", "TimelineEnd"]


def test_cli_prints_the_timeline_as_it_arrives(live_server: str, joined: Path) -> None:
    cli = [
        sys.executable,
        "-m",
        "t4v_client.cli",
        "timeline",
        str(joined),
        "--labels",
        ",".join(LABELS),
        "--window",
        "4",
        "--url",
        live_server,
    ]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "joined.mp4: 12.0 s, 3 windows of 4 s every 4 s"
    assert [line.split()[0] for line in lines[1:4]] == ["0:00.0-0:04.0", "0:04.0-0:08.0", "0:08.0-0:12.0"]
    assert lines[4] == "events:" and len(lines) > 5
    raw = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=120)
    assert [json.loads(line)["type"] for line in raw.stdout.splitlines()] == [
        "start",
        "segment",
        "segment",
        "segment",
        "end",
    ]
    bad = subprocess.run(
        [*cli[:5], "--labels", "a,b", "--window", "0", "--url", live_server], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: window_s: input should be greater than 0")
