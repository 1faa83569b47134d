"""What makes two stored embeddings comparable: the model and the sampling that made them.

A video's embedding depends on the visual encoder's weights and the temporal head, the
preprocessing, and which frames and views were taken; the text model must be the one paired with
that visual encoder. :class:`ArchiveSpec` holds exactly these; its :attr:`~ArchiveSpec.fingerprint`
names the archive's table, so embeddings of different models or samplings never mix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from text4vis.engine.request import ResolvedClip
from text4vis.models.preprocess import PreprocessConfig


@dataclass(frozen=True)
class ArchiveSpec:
    text_model: str  # the CLIP whose text tower scores the embeddings (vocabularies, search)
    weights_sha256: str  # the visual encoder's and the temporal head's weights
    temporal: str  # mean or transf
    preprocess: str  # resize, crop, mean, std, scaler
    frames: int
    views: str  # CLIPSxCROPS
    sampling: str
    embed_dim: int

    @classmethod
    def of(
        cls,
        *,
        text_model: str,
        weights_sha256: str,
        temporal: str,
        preprocess: PreprocessConfig,
        clip: ResolvedClip,
        embed_dim: int,
    ) -> ArchiveSpec:
        p = preprocess
        pixels = f"resize {p.resize}, crop {p.crop}, mean {list(p.mean)}, std {list(p.std)}, scaler {p.scaler}"
        return cls(
            text_model=text_model,
            weights_sha256=weights_sha256,
            temporal=temporal,
            preprocess=pixels,
            frames=clip.frames,
            views=f"{clip.clips}x{clip.crops}",
            sampling=str(clip.sampling),
            embed_dim=embed_dim,
        )

    @property
    def fingerprint(self) -> str:
        """16 hex digits of the SHA-256 of every field."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def describe(self) -> str:
        return (
            f"{self.fingerprint} ({self.text_model}, {self.temporal} head, weights {self.weights_sha256[:12]}, "
            f"{self.frames} frames, views {self.views}, {self.sampling} sampling)"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ArchiveSpec:
        value: dict[str, Any] = json.loads(text)
        return cls(**value)
