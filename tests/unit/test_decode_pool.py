"""A decode worker stops at the request's deadline instead of finishing a file nobody waits for."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from tests.media import generated_videos
from tests.processes import children_of, wait_until
from text4vis.engine.errors import DeadlineExceeded, DecodeBudgetExceeded, DecoderLost, DecodeTimedOut, Overloaded
from text4vis.engine.flow import decode_worker
from text4vis.engine.flow.decode_pool import DecodePool
from text4vis.engine.flow.decode_worker import DecodeJob
from text4vis.engine.flow.decode_worker import run as _run
from text4vis.models.errors import MediaError
from text4vis.models.preprocess import PreprocessConfig

PRE = PreprocessConfig(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def job(path: Path, deadline: float | None) -> DecodeJob:
    return DecodeJob(path, PRE, 8, 1, 1, "pyav", path.name, deadline)


def test_a_decode_past_its_deadline_is_interrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(*args: object) -> None:  # a decoder that would take 10 s
        for _ in range(1000):
            time.sleep(0.01)

    monkeypatch.setattr(decode_worker, "sample_clip", slow)
    before = signal.getsignal(signal.SIGALRM)
    t0 = time.monotonic()
    with pytest.raises(DecodeTimedOut, match="while decoding"):
        _run(job(Path("any.mp4"), time.time() + 0.2))
    assert time.monotonic() - t0 < 5  # stopped near 0.2 s, not after 10 s
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) is before


def test_a_job_already_late_is_not_started(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(decode_worker, "sample_clip", lambda *a: calls.append(a))
    with pytest.raises(DecodeTimedOut, match="waited for a worker"):
        _run(job(Path("any.mp4"), time.time() - 1))
    assert calls == []


def test_in_time_the_alarm_is_cleared() -> None:
    clip = _run(job(generated_videos()["clip_a.mp4"], time.time() + 60))
    assert clip.pixels.shape == (8, 3, 32, 32) and len(clip.frame_indices) == 8
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_threads_only_check_at_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Signals reach the main thread only: a thread worker runs to the end, unharmed."""
    monkeypatch.setattr(decode_worker, "sample_clip", lambda *a: time.sleep(0.3) or "decoded")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            assert _run(job(Path("any.mp4"), time.time() + 0.05)) == "decoded"  # ran through, past 0.05 s
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors == []


def test_pool_answers_deadline_exceeded_and_stays_usable() -> None:
    async def go() -> None:
        pool = DecodePool(0)
        try:
            clip = generated_videos()["clip_a.mp4"]
            with pytest.raises(DeadlineExceeded, match="longer than 0.001 s"):
                await pool.decode(job(clip, None), 0.001)
            out = await pool.decode(job(clip, None), 60)
            assert out.pixels.shape == (8, 3, 32, 32)
        finally:
            pool.close()

    asyncio.run(go())


def test_a_full_decode_queue_refuses_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    real = decode_worker.sample_clip

    def slow(*args: object) -> object:
        time.sleep(0.5)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(decode_worker, "sample_clip", slow)
    clip = generated_videos()["clip_a.mp4"]

    async def go() -> None:
        pool = DecodePool(0, max_pending=2)
        try:
            busy = [asyncio.create_task(pool.decode(job(clip, None), 60)) for _ in range(2)]
            await asyncio.sleep(0.05)
            assert pool.pending == 2
            t0 = time.monotonic()
            with pytest.raises(Overloaded, match="2 uploads are waiting"):
                await pool.decode(job(clip, None), 60)
            refused_in = time.monotonic() - t0
            await asyncio.gather(*busy)
            assert pool.pending == 0 and refused_in < 0.25  # refused before either decode ended
            assert (await pool.decode(job(clip, None), 60)).pixels.shape == (8, 3, 32, 32)
        finally:
            pool.close()

    asyncio.run(go())


@pytest.mark.parametrize("seek", [True, False])
def test_the_deadline_stops_pyav_inside_its_own_error_handling(monkeypatch: pytest.MonkeyPatch, seek: bool) -> None:
    """The alarm lands inside the PyAV reader, whose broad ``except Exception`` (a failed seek falls
    back to counting; a decode error becomes "corrupt video") must not swallow it: the job stops at
    the deadline with DecodeTimedOut, not later, and not as a 415."""
    from text4vis.models.media import pyav

    real = pyav.to_rgb

    def slow(frame, short_side=None):  # noqa: ANN001, ANN202 - each frame converted slowly: the decode outlives its deadline
        time.sleep(0.2)
        return real(frame, short_side)

    monkeypatch.setattr(pyav, "to_rgb", slow)
    if not seek:
        monkeypatch.setattr(pyav, "read_seeking", lambda *a, **k: None)  # the counting path
    t0 = time.monotonic()
    with pytest.raises(DecodeTimedOut, match="while decoding"):
        _run(job(generated_videos()["clip_a.mp4"], time.time() + 0.3))
    assert time.monotonic() - t0 < 1.2  # 8 frames x 0.2 s would be 1.6 s, twice that with the fallback


def misbehaving_worker(conn: Connection) -> None:
    """A worker process whose decoder wedges on ``wedge*`` files (a C call that never returns: the
    alarm is blocked, as it is inside one), kills its process on ``crash*`` files (as decord's
    std::bad_alloc does), is SIGKILLed on ``killed*`` files (as by the OOM killer) and decodes
    anything else for real."""
    real = decode_worker.sample_clip

    def sample_clip(path: Path, *args: object) -> object:
        if path.name.startswith("wedge"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(3600)
        if path.name.startswith("crash"):
            os.abort()
        if path.name.startswith("killed"):  # the OOM killer's way
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, *args)  # type: ignore[arg-type]

    decode_worker.sample_clip = sample_clip  # type: ignore[assignment]
    decode_worker.serve(conn)


def _children() -> set[int]:
    """This process's child processes (Linux /proc)."""
    return children_of(os.getpid())


@pytest.mark.slow
def test_a_wedged_or_crashing_decoder_fails_its_own_request_only(tmp_path: Path) -> None:
    """Two worker processes: a wedged file is killed at its budget and a crashing one fails alone;
    innocent uploads decoded at the same time all succeed, the dead workers are replaced, and
    closing the pool leaves no process behind."""
    clip = generated_videos()["clip_a.mp4"]
    for name in ("wedge.mp4", "crash.mp4", "killed.mp4"):
        (tmp_path / name).write_bytes(clip.read_bytes())
    replaced: list[str] = []
    before = _children()

    async def go() -> None:
        pool = DecodePool(2, max_pending=8, budget_s=1.0, on_replaced=replaced.append, worker_main=misbehaving_worker)
        try:
            await asyncio.to_thread(pool.warmup)
            assert pool.capacity() == 2
            results = await asyncio.gather(
                pool.decode(job(tmp_path / "wedge.mp4", None), 30),
                pool.decode(job(tmp_path / "crash.mp4", None), 30),
                pool.decode(job(tmp_path / "killed.mp4", None), 30),
                *[pool.decode(job(clip, None), 30) for _ in range(4)],
                return_exceptions=True,
            )
            assert isinstance(results[0], DecodeBudgetExceeded), results[0]  # its budget, not the 30 s deadline
            assert "per-file budget of 1 s (T4V_DECODE_BUDGET_S)" in str(results[0])
            assert isinstance(results[1], MediaError) and "crash.mp4: the decoder crashed" in str(results[1])
            assert isinstance(results[2], DecoderLost), results[2]  # 503: the server's fault, not the file's
            assert "killed by SIGKILL while it decoded killed.mp4" in str(results[2])
            assert all(getattr(r, "pixels", None) is not None for r in results[3:]), results[3:]
            assert sorted(replaced) == ["crash", "killed", "timeout"] and pool.capacity() == 2
            assert (await pool.decode(job(clip, None), 30)).pixels.shape == (8, 3, 32, 32)
        finally:
            pool.close()

    asyncio.run(go())
    assert wait_until(lambda: _children() - before == set(), 10), "a decode worker outlived its pool"


def test_a_worker_ignores_ctrl_c_the_server_handles_it() -> None:
    """Ctrl-C reaches every process of the terminal's group: a decode worker must not die of it
    (printing its own traceback) but keep serving until the server stops it."""
    pool = DecodePool(1, 2, 10.0)
    try:
        pool.warmup()
        (worker,) = list(pool._all)
        assert worker.process.pid is not None
        os.kill(worker.process.pid, signal.SIGINT)
        time.sleep(0.5)
        assert worker.process.is_alive() and worker.process.exitcode is None
        clip = asyncio.run(pool.decode(job(generated_videos()["clip_a.mp4"], None), 30))
        assert clip.pixels.shape[0] > 0
    finally:
        pool.close()
