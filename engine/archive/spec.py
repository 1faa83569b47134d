"""What makes two stored embeddings comparable: everything that changes the numbers, nothing else.

A video's embedding depends on the visual encoder's weights as they really run (after any cast
to fp16 or an export), its activation (QuickGELU or GELU), the precision and the backend that
run it, the temporal head, the preprocessing, and which frames and views were taken; the text
model must be the one paired with that visual encoder. :class:`ArchiveSpec` holds exactly these,
and its :attr:`~ArchiveSpec.fingerprint` names the archive's table, so embeddings made differently
never mix. What does not change the numbers is left out: the decoder (PyAV, decord and NVDEC give
the same frames, ``tests/integration/test_video.py``), the device, an explicit activation equal
to the one ``auto`` picks.

Tables written before the spec named the activation, the precision and the backend (their spec
lacks them: :attr:`ArchiveSpec.legacy`) may hold rows made differently: ``t4v archive check``
lists them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from text4vis.engine.request import ResolvedClip
from text4vis.models.preprocess import PreprocessConfig

if TYPE_CHECKING:
    from text4vis.engine.runtime.build import Runtime

UNKNOWN = ""  # a field an older table's spec does not have
LEGACY_FIELDS = ("activation", "precision", "backend")


@dataclass(frozen=True)
class ArchiveSpec:
    text_model: str  # the CLIP whose text tower scores the embeddings (vocabularies, search)
    weights_sha256: str  # the visual encoder's and the temporal head's weights, as they run
    temporal: str  # mean or transf
    preprocess: str  # resize, crop, mean, std, scaler
    frames: int
    views: str  # CLIPSxCROPS
    sampling: str
    embed_dim: int
    activation: str = UNKNOWN  # quickgelu | gelu
    precision: str = UNKNOWN  # fp32 | fp16 | bf16, as run
    backend: str = UNKNOWN  # torch | onnxruntime | tensorrt

    @classmethod
    def of(cls, runtime: Runtime, clip: ResolvedClip) -> ArchiveSpec:
        """The spec of what ``runtime`` embeds with ``clip``'s frames and views."""
        info = runtime.info
        return cls(
            text_model=info.model_id,
            weights_sha256=info.weights_sha256,
            temporal=info.temporal,
            preprocess=describe_pixels(runtime.pipeline.preprocess),
            frames=clip.frames,
            views=f"{clip.clips}x{clip.crops}",
            sampling=str(clip.sampling),
            embed_dim=runtime.pipeline.encoder.embed_dim,
            activation=info.activation,
            precision=info.precision,
            backend=info.backend,
        )

    @property
    def fingerprint(self) -> str:
        """16 hex digits of the SHA-256 of every field."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @property
    def legacy(self) -> bool:
        """Written before the spec named the activation, precision and backend: rows made under
        any of them may share this table."""
        return any(getattr(self, name) == UNKNOWN for name in LEGACY_FIELDS)

    def describe(self) -> str:
        made = (
            "activation, precision and backend not recorded"
            if self.legacy
            else (f"{self.activation}, {self.precision}, {self.backend}")
        )
        return (
            f"{self.fingerprint} ({self.text_model}, {made}, {self.temporal} head, weights "
            f"{self.weights_sha256[:12]}, {self.frames} frames, views {self.views}, {self.sampling} sampling)"
        )

    def to_json(self) -> str:
        value = asdict(self)
        for name in LEGACY_FIELDS:  # an older table's spec hashes as it did when it was written
            if value[name] == UNKNOWN:
                del value[name]
        return json.dumps(value, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ArchiveSpec:
        value: dict[str, Any] = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in known})


def describe_pixels(p: PreprocessConfig) -> str:
    return f"resize {p.resize}, crop {p.crop}, mean {list(p.mean)}, std {list(p.std)}, scaler {p.scaler}"
