"""Where a CLIP model comes from (no heavy imports: options and settings build it before any
model loads; ``models/clip_loader.py`` loads it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from text4vis.models.choices import Activation
from text4vis.models.errors import ModelLoadError

DEFAULT_ARCH = "ViT-B-16"
DEFAULT_PRETRAINED = "openai"


@dataclass(frozen=True)
class ClipSource:
    """Where a CLIP model comes from. Exactly one of pretrained, checkpoint, random_init is used.

    ``arch=None`` with a checkpoint infers the architecture from an OpenAI-layout state dict.
    ``activation``: the MLP activation the weights were trained with; ``auto`` takes it from the
    weights where they say (see :func:`load_clip`), ``gelu``/``quickgelu`` name it.
    """

    arch: str | None = None
    pretrained: str | None = None
    checkpoint: Path | None = None
    random_init: bool = False
    seed: int = 0
    activation: Activation = Activation.AUTO

    def resolved(self) -> ClipSource:
        """Fill in defaults: ViT-B-16 with the OpenAI weights when nothing else is named."""
        if self.checkpoint is not None and self.pretrained is not None:
            raise ModelLoadError("give either a pretrained tag or a CLIP checkpoint file, not both")
        if self.random_init and (self.checkpoint is not None or self.pretrained is not None):
            raise ModelLoadError("random init cannot be combined with pretrained weights or a checkpoint")
        arch = self.arch
        pretrained = self.pretrained
        if self.checkpoint is None and not self.random_init:
            arch = arch or DEFAULT_ARCH
            pretrained = pretrained or DEFAULT_PRETRAINED
        if self.random_init:
            arch = arch or DEFAULT_ARCH
        return ClipSource(arch, pretrained, self.checkpoint, self.random_init, self.seed, self.activation)
