"""Weights to modules: CLIP, a Text4Vis checkpoint on top, the temporal head, the preprocessing
that suits them. Shared by the runtime (torch backend) and the exporter."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from text4vis.engine.options import ModelOptions
from text4vis.models.checkpoint import apply_text4vis_checkpoint, read_text4vis_checkpoint
from text4vis.models.clip_loader import LoadedClip, load_clip
from text4vis.models.errors import ModelLoadError
from text4vis.models.preprocess import PreprocessConfig, PreprocessMode
from text4vis.models.temporal import build_temporal_head, head_count


@dataclass
class LoadedModel:
    clip: LoadedClip  # its text tower encodes vocabularies
    visual: nn.Module  # CLIP's visual tower, with a Text4Vis checkpoint's weights when given
    head: nn.Module  # the temporal head
    mode: PreprocessMode
    preprocess: PreprocessConfig


def load_clip_for(opts: ModelOptions) -> LoadedClip:
    """The CLIP ``opts`` names (or, naming none, the base a training run's checkpoint was trained
    from), on the CPU (the runtime moves what runs)."""
    source = opts.clip_source(checkpoint=opts.text4vis_checkpoint)
    try:
        return load_clip(source, device="cpu")
    except ModelLoadError as exc:
        if opts.text4vis_checkpoint is None or opts.names_a_clip():
            raise
        base = source.resolved()
        named = f"{base.arch}/{base.pretrained}" if base.pretrained else f"{base.arch} ({base.checkpoint})"
        raise ModelLoadError(
            f"{opts.text4vis_checkpoint} is a Text4Vis checkpoint: it holds the visual encoder and the temporal "
            f"head but no text tower, so it runs on its base CLIP, {named}, which could not "
            f"be loaded ({exc}); give the base as a file: --model {base.arch} --clip-checkpoint PATH"
        ) from None


def load_model(opts: ModelOptions, clip: LoadedClip | None = None) -> LoadedModel:
    """CLIP (``clip`` when already loaded), the checkpoint's visual weights and head, and the
    preprocessing: text4vis with a Text4Vis checkpoint, CLIP's own otherwise (``opts.preprocess`` wins)."""
    clip = clip or load_clip_for(opts)
    visual = clip.model.visual
    if opts.text4vis_checkpoint is not None:
        ckpt = read_text4vis_checkpoint(opts.text4vis_checkpoint)
        head = apply_text4vis_checkpoint(visual, ckpt, opts.temporal, heads=head_count(clip.text_width))
        default = PreprocessMode.TEXT4VIS
    else:
        if opts.temporal == "transf":
            raise ModelLoadError(
                "the transf head needs trained weights, which only a Text4Vis checkpoint holds: "
                "pass --text4vis-checkpoint PATH or use --temporal mean"
            )
        head = build_temporal_head("mean", clip.embed_dim)
        default = PreprocessMode.CLIP
    mode = PreprocessMode(opts.preprocess or default)
    return LoadedModel(clip, visual, head, mode, PreprocessConfig.for_mode(mode, clip.image_size, clip.mean, clip.std))
