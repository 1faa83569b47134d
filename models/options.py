"""Which CLIP and which head: the weight options serving, export, evaluation and training share,
each declared once (``engine/options.py`` adds how a served model runs; ``models/training/config.py``
adds the training recipe)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from text4vis.models.choices import Activation, TemporalHead
from text4vis.models.clip_source import ClipSource
from text4vis.models.errors import InputError

log = logging.getLogger(__name__)


def existing_file(path: Path | None) -> Path | None:
    if path is not None and not path.is_file():
        raise InputError(f"checkpoint file not found: {path}")
    return path


class DeviceOption(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str = Field("auto", description="auto | cpu | cuda | cuda:N.")


class WeightOptions(BaseModel):
    """The CLIP model and its weights, and the temporal head."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="open_clip architecture (default ViT-B-16).")
    pretrained: str | None = Field(None, description="open_clip pretrained tag (default openai).")
    clip_checkpoint: Path | None = Field(None, description="Local CLIP weights (open_clip or OpenAI format).")
    temporal: TemporalHead | None = Field(
        None,
        description="Temporal head: mean | transf (default: a Text4Vis checkpoint's; without one, mean when "
        "serving and transf when training).",
    )
    activation: Activation = Field(
        Activation.AUTO,
        description="CLIP's MLP activation: auto (what the weights were trained with: QuickGELU for OpenAI's "
        "tags and files, else the architecture's) | gelu | quickgelu (OpenAI-trained weights "
        "in a plain state dict under --model ARCH).",
    )
    random_init: bool = Field(False, description="Run RANDOM weights on purpose (benchmarks, tests). Never implicit.")

    @field_validator("clip_checkpoint")
    @classmethod
    def _clip_file_exists(cls, path: Path | None) -> Path | None:
        return existing_file(path)

    def names_a_clip(self) -> bool:
        return bool(self.model or self.pretrained or self.clip_checkpoint or self.random_init)

    def clip_source(self, seed: int = 0, checkpoint: Path | None = None) -> ClipSource:
        """Where the CLIP these options name comes from. Naming none, a Text4Vis ``checkpoint``
        written by a training run finds its own base: the run's ``config.json`` beside it says
        which CLIP it was trained from (a released checkpoint has none: ViT-B-16, OpenAI's)."""
        if not self.names_a_clip() and checkpoint is not None:
            run = run_base(checkpoint)
            if run is not None:
                return run
        return ClipSource(self.model, self.pretrained, self.clip_checkpoint, self.random_init, seed, self.activation)


def run_base(checkpoint: Path) -> ClipSource | None:
    """The base CLIP of a training run's checkpoint, from the run's ``config.json``; None without one."""
    config = checkpoint.parent / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
        base = WeightOptions(
            **{
                k: data.get(k)
                for k in ("model", "pretrained", "clip_checkpoint", "random_init")
                if data.get(k) is not None
            },
            activation=data.get("activation") or Activation.AUTO,
        )
    except (ValueError, TypeError):  # not a run's config: the defaults apply
        return None
    log.info("%s: the base CLIP from %s", checkpoint, config)
    return ClipSource(
        base.model, base.pretrained, base.clip_checkpoint, base.random_init, int(data.get("seed", 0)), base.activation
    )
