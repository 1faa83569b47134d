"""How far a model built with the wrong activation is from the right one (issue 24's figure).

    python bench/quickgelu_gap.py

Weights drawn with QuickGELU (the tiny test ViT) are served three ways on a real clip with five
labels: through the hub path of an architecture whose config says GELU under a tag that says
QuickGELU (a local file stands for the download), as an OpenAI-layout file (built with QuickGELU),
and forced to GELU (what open_clip built on the hub path before the fix). Prints the largest
probability difference of each against the OpenAI-file path.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import open_clip
import torch

from text4vis.engine.offline import classify_files
from text4vis.engine.options import ModelOptions
from text4vis.engine.request import ClassifyRequest
from text4vis.engine.runtime.build import build_runtime
from text4vis.engine.vocab.registry import VocabRegistry
from text4vis.engine.vocab.stores.sqlite import SQLiteStore
from text4vis.models.clip_loader import CONFIG_DIR, TINY_ARCH

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "arm_wrestling.mp4"
LABELS = ["arm wrestling", "surfing", "yoga", "skiing", "cooking"]


def probabilities(opts: ModelOptions) -> tuple[dict[str, float], str]:
    runtime = build_runtime(opts)
    registry = VocabRegistry(SQLiteStore(Path(":memory:")), runtime.text_encoder)
    (result,) = classify_files(runtime, registry, ClassifyRequest(labels=tuple(LABELS), top_k=0), [CLIP])
    assert not isinstance(result, BaseException), result
    return {p.label: p.probability for p in result.predictions}, runtime.info.model_id


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        config = json.loads((CONFIG_DIR / f"{TINY_ARCH}.json").read_text())
        config.pop("quick_gelu")
        (Path(tmp) / "gelu-tiny.json").write_text(json.dumps(config))
        open_clip.add_model_config(Path(tmp) / "gelu-tiny.json")
        torch.manual_seed(21)
        weights = Path(tmp) / "weights.pt"
        torch.save(open_clip.create_model(TINY_ARCH).state_dict(), weights)
        open_clip.pretrained._PRETRAINED["gelu-tiny"] = {
            "openai": {
                "file": str(weights),
                "quick_gelu": True,
                "mean": open_clip.OPENAI_DATASET_MEAN,
                "std": open_clip.OPENAI_DATASET_STD,
            }
        }
        reference, ref_id = probabilities(ModelOptions(clip_checkpoint=weights, device="cpu"))
        for name, opts in (
            ("hub tag (the fix)", ModelOptions(model="gelu-tiny", pretrained="openai", device="cpu")),
            (
                "GELU (before the fix)",
                ModelOptions(model="gelu-tiny", clip_checkpoint=weights, activation="gelu", device="cpu"),
            ),
        ):
            probs, model_id = probabilities(opts)
            gap = max(abs(probs[k] - reference[k]) for k in LABELS)
            print(f"{name:22s} {model_id:40s} vs the OpenAI file ({ref_id}): max |dp| = {gap:.2e}")


if __name__ == "__main__":
    main()
