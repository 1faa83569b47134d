"""Checkpoints released with Text4Vis: ``{'epoch', 'model_state_dict'}`` with keys
``visual.*`` (OpenAI CLIP names), ``fusion_model.*`` (the temporal head) and ``logit_scale``,
often under a ``module.`` prefix. The text encoder is the base CLIP's and is not stored.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from text4vis.models.choices import TemporalHead
from text4vis.models.clip_loader import load_strict, read_checkpoint
from text4vis.models.errors import CheckpointMismatchError, ModelLoadError
from text4vis.models.temporal import HeadKind, build_temporal_head
from text4vis.models.video_classifier import LOGIT_SCALE

log = logging.getLogger(__name__)

_TEXT_KEYS = re.compile(r"^(transformer\.|token_embedding\.|positional_embedding$|ln_final\.|text_projection$)")


@dataclass
class Text4VisCheckpoint:
    """The parts of a released checkpoint, split by owner."""

    visual: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor]
    head_kind: HeadKind
    head_layers: int
    epoch: int | None
    source: str


def read_text4vis_checkpoint(path: Path) -> Text4VisCheckpoint:
    """Read and split a Text4Vis checkpoint; unknown keys fail with their names."""
    state, extras = read_checkpoint(path)
    visual = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    head = {k[len("fusion_model.") :]: v for k, v in state.items() if k.startswith("fusion_model.")}
    text = sorted(k for k in state if _TEXT_KEYS.match(k))
    other = sorted(
        k for k in state if not k.startswith(("visual.", "fusion_model.")) and k != "logit_scale" and k not in text
    )
    if other:
        shown = ", ".join(other[:6]) + (f", ... ({len(other)} in all)" if len(other) > 6 else "")
        raise CheckpointMismatchError(
            f"{path} is not a Text4Vis checkpoint: keys outside visual.*, fusion_model.*, logit_scale: {shown}"
        )
    if not visual:
        raise CheckpointMismatchError(f"{path} holds no visual.* keys: not a Text4Vis checkpoint")
    if text:
        log.warning(
            "%s carries %d text-encoder keys; they are ignored (the text encoder is the base CLIP's)", path, len(text)
        )
    layers = {int(m.group(1)) for k in head if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))}
    kind = TemporalHead.TRANSF if head else TemporalHead.MEAN
    epoch = extras.get("epoch") if isinstance(extras.get("epoch"), int) else None
    return Text4VisCheckpoint(visual, head, kind, max(layers) + 1 if layers else 6, epoch, str(path))


def apply_text4vis_checkpoint(
    clip_visual: nn.Module, ckpt: Text4VisCheckpoint, head_kind: HeadKind | None = None, heads: int | None = None
) -> nn.Module:
    """Load the checkpoint's visual weights into ``clip_visual`` and return its temporal head.

    ``head_kind`` overrides the head the checkpoint holds: ``mean`` may ignore a trained
    ``transf`` head (an ablation); asking ``transf`` of a checkpoint without one fails.
    """
    load_strict(clip_visual, ckpt.visual, f"Text4Vis checkpoint {ckpt.source} (visual.*)")
    kind = head_kind or ckpt.head_kind
    if kind == "transf" and ckpt.head_kind != "transf":
        raise ModelLoadError(f"{ckpt.source} holds no trained transf head (no fusion_model.* keys)")
    if kind == "mean":
        if ckpt.head_kind == "transf":
            log.warning("ignoring the trained transf head of %s: running the mean head", ckpt.source)
        return build_temporal_head("mean", 0)
    dim = int(getattr(clip_visual, "output_dim"))  # noqa: B009 - open_clip towers set it dynamically
    head = build_temporal_head("transf", dim, layers=ckpt.head_layers, heads=heads)
    load_strict(head, ckpt.head, f"Text4Vis checkpoint {ckpt.source} (fusion_model.*)")
    return head


def released_state(
    visual: nn.Module, head: nn.Module, logit_scale: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """``visual`` and ``head`` as a released checkpoint's ``model_state_dict`` (read back by the
    reference code too), on the CPU. The one writer of that layout: training and export use it.
    ``logit_scale``: the learned log-scale training ends with (as the reference saves it); by
    default log(100), the scale the method tests with."""

    def host(v: torch.Tensor) -> torch.Tensor:
        return v.detach() if v.is_meta else v.detach().cpu()  # meta: a shape-only model (layout checks)

    state = {f"visual.{k}": host(v) for k, v in visual.state_dict().items()}
    state.update({f"fusion_model.{k}": host(v) for k, v in head.state_dict().items()})
    state["logit_scale"] = (
        host(logit_scale).reshape(()) if logit_scale is not None else torch.tensor(math.log(LOGIT_SCALE))
    )
    return state


def save_text4vis_checkpoint(path: Path, visual: nn.Module, head: nn.Module, epoch: int = 0) -> None:
    """Write ``visual`` and ``head`` in the released layout: ``{'epoch', 'model_state_dict'}``."""
    torch.save({"epoch": epoch, "model_state_dict": released_state(visual, head)}, path)
