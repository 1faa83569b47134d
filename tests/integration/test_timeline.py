"""Timelines (issue 15, item 1): windows planned by timestamps, decoded a few at a time, each
window's embedding the one the window would get as a video of its own."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.media import joined_parts, moving_square_frames, write_frames
from text4vis.engine.flow.embedder import EmbeddedWindow, Embedder
from text4vis.engine.flow.options import FlowOptions
from text4vis.engine.flow.timeline import Event, Segment, merge_events
from text4vis.engine.runtime.build import Runtime
from text4vis.engine.vocab.classifier import Prediction
from text4vis.models.errors import InputError
from text4vis.models.media import FrameTimes
from text4vis.models.video_classifier import video_embedding
from text4vis.models.video_input import sample_clip
from text4vis.models.windows import plan_timeline, plan_windows, window_count


def times(pts: list[int], base: Fraction, end: int, keys: list[int] | None = None) -> FrameTimes:
    return FrameTimes(np.array(pts, dtype=np.int64), keys or [0], base, end)


# ---- planning: pure arithmetic on timestamps ----


def test_windows_hold_the_frames_shown_inside_them() -> None:
    plan = plan_windows(times(list(range(0, 500 * 512, 512)), Fraction(1, 12800), 500 * 512), 8.0, 8.0, 8, 100)
    assert plan.duration_s == 20.0
    assert [(w.start_s, w.end_s) for w in plan.windows] == [(0.0, 8.0), (8.0, 16.0), (16.0, 20.0)]
    assert plan.windows[0].indices == [0, 25, 50, 75, 100, 125, 150, 175]  # sample_indices(200, 8)
    assert plan.windows[1].indices == [200 + i for i in plan.windows[0].indices]
    assert plan.windows[2].indices == [400 + i for i in (0, 12, 25, 37, 50, 62, 75, 87)]  # 100 frames left


def test_overlapping_windows_stop_at_the_first_one_reaching_the_end() -> None:
    plan = plan_windows(times(list(range(200)), Fraction(1, 10), 200), 8.0, 4.0, 4, 100)
    assert [(w.start_s, w.end_s) for w in plan.windows] == [(0, 8), (4, 12), (8, 16), (12, 20)]
    assert window_count(20.0, 8.0, 4.0) == 4 and window_count(3.0, 8.0, 4.0) == 1


def test_a_window_without_frames_is_left_out_and_gaps_keep_true_times() -> None:
    # frames every 0.1 s for 5 s, nothing for 10 s, then 5 s more
    pts = list(range(0, 50)) + list(range(150, 200))
    plan = plan_windows(times(pts, Fraction(1, 10), 200), 5.0, 5.0, 2, 100)
    assert [(w.start_s, w.end_s) for w in plan.windows] == [(0, 5), (15, 20)]
    assert plan.windows[1].times_s == [15.0, 17.5]


def test_too_many_windows_is_refused_naming_the_setting() -> None:
    with pytest.raises(InputError, match="T4V_MAX_TIMELINE_WINDOWS"):
        plan_windows(times(list(range(36000)), Fraction(1, 10), 36000), 1.0, 1.0, 8, 512)
    with pytest.raises(InputError, match="window_s"):
        plan_windows(times([0, 1], Fraction(1, 10), 2), 0.0, 1.0, 8, 512)


def test_images_have_no_timeline(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 48), "red").save(tmp_path / "a.png")
    with pytest.raises(InputError, match="needs a video"):
        plan_timeline(tmp_path / "a.png", 8, 8, 8, 10)


def test_events_join_consecutive_windows_that_agree() -> None:
    def seg(start: float, label: str, p: float) -> Segment:
        return Segment(start, start + 8, [], [], [Prediction(label, p, 0.3)], torch.zeros(4))

    events = merge_events([seg(0, "a", 0.5), seg(8, "a", 0.7), seg(16, "b", 0.9), seg(24, "a", 0.4)])
    assert events == [Event("a", 0, 16, pytest.approx(0.6), 2), Event("b", 16, 24, 0.9, 1), Event("a", 24, 32, 0.4, 1)]


# ---- the flow, on real files ----


def _timeline(
    runtime: Runtime, path: Path, window_s: float, stride_s: float, frames: int, **kw: object
) -> tuple[list[EmbeddedWindow], float]:
    """The flow's windows of ``path`` (decoded in groups, encoded in shared batches)."""

    async def go() -> tuple[list[EmbeddedWindow], float]:
        flow = Embedder(runtime.pipeline, FlowOptions(decode_workers=0, max_batch_frames=32))
        await flow.start()
        try:
            deadline = time.monotonic() + 60
            plan = await flow.plan_timeline(
                path, window_s=window_s, stride_s=stride_s, frames=frames, max_windows=100, deadline=deadline
            )
            groups = flow.embed_windows(path, plan, deadline=deadline, **kw)  # type: ignore[arg-type]
            return [w async for group in groups for w in group], plan.duration_s
        finally:
            await flow.stop()

    return asyncio.run(go())


def _alone(runtime: Runtime, path: Path, frames: int) -> torch.Tensor:
    """The embedding ``path`` gets classified on its own (the classify flow's sampling and pooling)."""
    clip = sample_clip(path, runtime.pipeline.preprocess, frames, decoder="pyav")
    emb = runtime.pipeline.encoder.encode(torch.from_numpy(clip.pixels))
    with torch.inference_mode():
        return video_embedding(runtime.pipeline.head, emb[torch.from_numpy(clip.gather)])


def test_concatenated_parts_give_the_parts_own_embeddings(tmp_path: Path, runtime: Runtime) -> None:
    """Three generated parts of 4 s (different content) joined into one 12 s video: window 4 s
    gives three windows whose boundaries are where the parts meet and whose embeddings equal
    classifying each part as its own upload."""
    joined, files = joined_parts(tmp_path)
    # two windows per decode job and two jobs in flight: the groups run concurrently and come back in order
    segments, duration = _timeline(runtime, joined, 4.0, 4.0, 8, windows_per_job=2, jobs_in_flight=2)
    assert duration == 12.0
    assert [(s.window.start_s, s.window.end_s) for s in segments] == [(0, 4), (4, 8), (8, 12)]
    for k, (segment, part) in enumerate(zip(segments, files, strict=True)):
        assert segment.window.indices == [100 * k + i for i in (0, 12, 25, 37, 50, 62, 75, 87)]
        alone = _alone(runtime, part, 8)
        torch.testing.assert_close(segment.embedding, alone, atol=1e-5, rtol=0)
    # different parts really differ, so the check above could fail
    assert float((segments[0].embedding - segments[1].embedding).abs().max()) > 1e-3


def test_variable_frame_rate_gives_true_times(tmp_path: Path, runtime: Runtime) -> None:
    """4 s at 10 fps, then 4 s at 50 fps: nominal fps would put the 4 s boundary anywhere else
    (frame 40 of 240). The frames read are the planned ones (a full decode's, at those indices)."""
    n_slow, n_fast = 40, 200
    frames = np.zeros((n_slow + n_fast, 64, 64, 3), np.uint8)
    for i in range(len(frames)):
        frames[i] = (i % 256, (i * 7) % 256, 128)
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=50)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.options = {"preset": "ultrafast", "qp": "0", "g": "20", "bf": "2"}
        stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            pts += 100 if i < n_slow else 20
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    plan = plan_timeline(path, 4.0, 4.0, 8, 10)
    assert plan.duration_s == pytest.approx(8.0, abs=0.021)
    assert [(w.start_s, w.end_s) for w in plan.windows] == [(0, 4), (4, pytest.approx(8.0, abs=0.021))]
    assert plan.windows[0].indices == [5 * i for i in range(8)]  # 40 frames in the first 4 s
    assert plan.windows[1].indices[0] == 40 and plan.windows[1].times_s[0] == 4.0
    assert all(4.0 <= t < 8.0 for t in plan.windows[1].times_s)
    from text4vis.models.media import open_media

    with open_media(path, "pyav") as media:
        got = media.read(plan.windows[1].indices)
    with av.open(str(path)) as container:
        full = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    np.testing.assert_array_equal(got, full[plan.windows[1].indices])
    segments, _ = _timeline(runtime, path, 4.0, 4.0, 8)
    assert [s.window.indices for s in segments] == [w.indices for w in plan.windows]


_RSS_SCRIPT = """
import re, sys
from pathlib import Path
from text4vis.models.preprocess import PreprocessConfig
from text4vis.models.video_input import sample_frames
from text4vis.models.windows import plan_timeline
path = Path(sys.argv[1])
plan = plan_timeline(path, 2.0, 2.0, 8, 10_000)
pre = PreprocessConfig(256, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
for i in range(0, len(plan.windows), 4):
    sample_frames(path, pre, [w.indices for w in plan.windows[i:i + 4]], "pyav")
peak = re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)  # this program's peak RSS
print(len(plan.windows), peak)
"""


@pytest.mark.slow
def test_memory_stays_bounded_on_a_long_video(tmp_path: Path) -> None:
    """The windows of a 10-minute video, decoded four at a time as the server does, peak at about
    the RSS of a 1-minute one: nothing grows with the length of the video. (VmHWM, not ru_maxrss:
    the latter keeps the peak of the pytest process this one was forked from.)"""

    def peak(seconds: int) -> tuple[int, int]:
        frames = moving_square_frames(seconds * 10, 320, 240, seed=seconds)
        path = write_frames(tmp_path / f"{seconds}.mp4", frames, fps=10, options={"preset": "ultrafast", "g": "20"})
        out = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, str(path)],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[2],
        )
        windows, kib = out.stdout.split()
        return int(windows), int(kib)

    (short_windows, short_kib), (long_windows, long_kib) = peak(60), peak(600)
    assert (short_windows, long_windows) == (30, 300)
    assert long_kib < short_kib * 1.1, (short_kib, long_kib)
