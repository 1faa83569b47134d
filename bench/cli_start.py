"""`t4v search` from a cold process: the whole way (the model loaded; what every search did
before the CLI's caches) against a search the same options ran before (no model, no lancedb).

    PYTHONPATH=. .venv/bin/python bench/cli_start.py [--runs 5]

The tiny test model over the three shared clips; each run is a fresh `t4v` process (imports
included), the two kinds interleaved; prints the median wall seconds of each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import open_clip
import torch

from tests.conftest import shared_path
from text4vis.models.clip_loader import TINY_ARCH

T4V = [sys.executable, "-m", "text4vis.server.cli"]


def timed(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([*T4V, *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="t4v-cli-start-"))
    torch.manual_seed(1234)
    weights = directory / "tiny.pt"
    torch.save(open_clip.create_model(TINY_ARCH).state_dict(), weights)
    model = ["--model", TINY_ARCH, "--clip-checkpoint", str(weights)]
    archive = str(directory / "archive")
    env = {**os.environ, "XDG_CACHE_HOME": str(directory / "cache")}
    subprocess.run([*T4V, "index", str(shared_path("videos")), "--archive", archive, *model], env=env, check=True)
    search = ["search", "arm wrestling", "--archive", archive, *model]
    cold, warm = [], []
    for run in range(args.runs):
        for kind in ("cold", "warm") if run % 2 == 0 else ("warm", "cold"):
            if kind == "cold":
                shutil.rmtree(directory / "cache", ignore_errors=True)  # nothing known: the model loads
                cold.append(timed(search, env))
            else:
                timed(search, env) if not (directory / "cache").exists() else None  # the cache filled once
                warm.append(timed(search, env))
    c, w = statistics.median(cold), statistics.median(warm)
    print(
        f"t4v search, a fresh process each run, tiny model: {c:.2f} s the whole way (the model loaded), "
        f"{w:.2f} s run before (cached: no model, no lancedb); x{c / w:.1f} ({args.runs} runs each, interleaved)"
    )


if __name__ == "__main__":
    main()
