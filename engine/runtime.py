"""Assemble a ready pipeline from model options: the one place that knows every piece."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from engine.backends.base import Precision
from engine.backends.torch_backend import TorchFrameEncoder
from engine.pipeline import VideoPipeline
from engine.preprocess import PreprocessConfig, PreprocessMode
from engine.video import Decoder
from models.checkpoint import apply_text4vis_checkpoint, read_text4vis_checkpoint
from models.clip_loader import ClipSource, load_clip
from models.errors import ModelLoadError
from models.temporal import HeadKind, build_temporal_head
from models.text_encoder import TextEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelOptions:
    """What to run. Defaults: ViT-B-16 with OpenAI weights, mean head, CLIP preprocessing."""

    arch: str | None = None
    pretrained: str | None = None
    clip_checkpoint: Path | None = None
    text4vis_checkpoint: Path | None = None
    temporal: HeadKind | None = None  # None: what the checkpoint holds (mean without one)
    preprocess: PreprocessMode | None = None  # None: text4vis with a Text4Vis checkpoint, else clip
    random_init: bool = False
    device: str = "auto"
    precision: Precision = "fp32"
    decoder: Decoder = "auto"
    max_batch_size: int = 64


@dataclass(frozen=True)
class ModelInfo:
    arch: str
    model_id: str  # the text model id vocabularies are keyed on
    temporal: str
    preprocess: str
    backend: str
    device: str
    precision: str
    checkpoint: str | None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


@dataclass
class Runtime:
    pipeline: VideoPipeline
    text_encoder: TextEncoder
    info: ModelInfo


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def build_runtime(opts: ModelOptions) -> Runtime:
    """Load CLIP (and a Text4Vis checkpoint on top), build the head and the torch backend."""
    device = resolve_device(opts.device)
    clip = load_clip(
        ClipSource(opts.arch, opts.pretrained, opts.clip_checkpoint, opts.random_init), device="cpu"
    )
    visual: torch.nn.Module = clip.model.visual
    if opts.text4vis_checkpoint is not None:
        ckpt = read_text4vis_checkpoint(opts.text4vis_checkpoint)
        head = apply_text4vis_checkpoint(visual, ckpt, opts.temporal)
        default_mode = PreprocessMode.TEXT4VIS
    else:
        if opts.temporal == "transf":
            raise ModelLoadError(
                "the transf head needs trained weights, which only a Text4Vis checkpoint holds: "
                "pass --text4vis-checkpoint PATH or use --temporal mean"
            )
        head = build_temporal_head("mean", clip.embed_dim)
        default_mode = PreprocessMode.CLIP
    mode = PreprocessMode(opts.preprocess or default_mode)
    encoder = TorchFrameEncoder(visual, clip.mean, clip.std, device=device, precision=opts.precision,
                                max_batch_size=opts.max_batch_size)
    pipeline = VideoPipeline(
        encoder,
        head,
        PreprocessConfig.for_mode(mode, clip.image_size, clip.mean, clip.std),
        decoder=opts.decoder,
    )
    text_encoder = TextEncoder(clip)
    info = ModelInfo(
        arch=clip.arch,
        model_id=clip.model_id,
        temporal=getattr(head, "kind", "mean"),
        preprocess=mode.value,
        backend=encoder.name,
        device=device,
        precision=opts.precision,
        checkpoint=str(opts.text4vis_checkpoint) if opts.text4vis_checkpoint else None,
    )
    log.info("model %s (%s head, %s preprocessing) on %s %s via %s", info.model_id, info.temporal,
             info.preprocess, info.device, info.precision, info.backend)
    return Runtime(pipeline, text_encoder, info)
