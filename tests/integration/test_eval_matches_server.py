"""`t4v eval` measures what `t4v serve` answers: the same clip and checkpoint give the same
probabilities (both read frames with models/media/ and resize with models/preprocess.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from tests.checkpoints import prefixed_state, trained_like
from tests.media import moving_square_frames, write_video
from tests.server_helpers import make_app, running
from text4vis.engine.options import ModelOptions
from text4vis.engine.runtime.build import build_runtime
from text4vis.models.clip_loader import TINY_ARCH
from text4vis.models.temporal import TransformerHead
from text4vis.server.cli import app

LABELS = ["yoga", "surfing", "arm wrestling", "cooking", "skiing", "juggling"]


def test_eval_and_the_server_give_the_same_probabilities(tmp_path: Path, tiny_clip_path: Path) -> None:
    torch.manual_seed(3)
    head = trained_like(TransformerHead(64))
    visual = build_runtime(ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path)).pipeline.encoder
    checkpoint = tmp_path / "t4v.pt"
    torch.save({"epoch": 1, "model_state_dict": prefixed_state(visual.module.visual, head)}, checkpoint)  # type: ignore[attr-defined]
    # 320x240 (4:3): the short side is resized to 256, so the resize itself is compared, not only crops
    video = write_video(tmp_path / "clip.mp4", moving_square_frames(60, 320, 240, seed=5))
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (tmp_path / "list.txt").write_text(f"{video} 2\n")
    out = tmp_path / "predictions.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            str(checkpoint),
            "--list",
            str(tmp_path / "list.txt"),
            "--labels",
            str(tmp_path / "labels.txt"),
            "--model",
            TINY_ARCH,
            "--clip-checkpoint",
            str(tiny_clip_path),
            "--frames",
            "8",
            "--views",
            "2x3",
            "--predictions",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    (line,) = out.read_text().splitlines()
    evaluated = {p["label"]: p["probability"] for p in json.loads(line)["predictions"]}
    assert len(evaluated) == 5

    runtime = build_runtime(
        ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, text4vis_checkpoint=checkpoint, device="cpu")
    )
    assert runtime.info.preprocess == "text4vis" and runtime.info.temporal == "transf"

    async def served() -> dict[str, float]:
        async with running(make_app(tmp_path / "data", runtime)) as client:
            files = {"file": ("clip.mp4", video.read_bytes(), "video/mp4")}
            data = {"labels": json.dumps(LABELS), "frames": "8", "views": "2x3", "top_k": "5"}
            r = await client.post("/classify", files=files, data=data)
            assert r.status_code == 200, r.text
            return {p["label"]: p["probability"] for p in r.json()["predictions"]}

    answered = asyncio.run(served())
    assert list(answered) == list(evaluated)  # the same top-5, in the same order
    for label, p in answered.items():
        assert abs(p - evaluated[label]) < 1e-6, (label, p, evaluated[label])
