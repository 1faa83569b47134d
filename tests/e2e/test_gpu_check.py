"""bench/gpu_check.sh runs end to end in its CPU dry-run mode and keeps to its time budget."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(budget_s: int) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "GPU_CHECK_BUDGET_S": str(budget_s)}
    t0 = time.monotonic()
    done = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=budget_s + 60,
    )
    return done, time.monotonic() - t0


@pytest.mark.slow
def test_dry_run_runs_every_stage() -> None:
    done, _ = _run(400)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for heading in (
        "1. visual tower parity",
        "2. text tower",
        "3. torch backend throughput",
        "4. ONNX Runtime",
        "5. NVDEC vs CPU decoding",
        "6. the HTTP server under load",
    ):
        assert f"== {heading}" in out
    assert "PASS visual fp32" in out and "PASS text tower" in out and "PASS torch.compile" in out
    assert "videos/s; latency p50" in out and '"selection":' in out
    assert "NVDEC on cuda:0: not used (" in out and "exact 8 frames: cpu " in out
    assert "gpu_check: 0 failure(s)" in out and "FAIL" not in out


def test_a_short_budget_skips_stages_and_stops_in_time() -> None:
    done, seconds = _run(40)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped:" in done.stdout and "== 6. the HTTP server under load" in done.stdout
    assert seconds < 40 + 10
