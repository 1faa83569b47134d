"""What a runtime embeds with: the frame encoder (a backend), the temporal head, the preprocessing
and the decoder; :meth:`VideoPipeline.fuse` is the step after the encoder (head, views fused,
normalized), the same for a served request, a timeline's windows, the archive and the Ray actors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from text4vis.engine.runtime.backends.base import FrameEncoder
from text4vis.models.media import Decoder
from text4vis.models.preprocess import PreprocessConfig
from text4vis.models.video_classifier import video_embedding


class VideoPipeline:
    """The encoder, the temporal head, the preprocessing, the decoder (and its GPU)."""

    def __init__(
        self,
        encoder: FrameEncoder,
        head: nn.Module,
        preprocess: PreprocessConfig,
        decoder: Decoder = Decoder.AUTO,
        gpu: int = 0,
    ) -> None:
        self.encoder = encoder
        self.head = head.float().eval()
        self.preprocess = preprocess
        self.decoder: Decoder = decoder
        self.gpu = gpu  # the CUDA device index of the nvdec decoder

    @property
    def temporal(self) -> str:
        """The head's kind: mean or transf."""
        return str(getattr(self.head, "kind", "mean"))

    @torch.inference_mode()
    def fuse(self, frame_emb: torch.Tensor, gathers: Sequence[torch.Tensor]) -> torch.Tensor:
        """Frame embeddings of the distinct frames ``[U, D]`` -> one normalized embedding per
        video: ``gathers[i] [views, T]`` indexes the frames of video ``i``'s views, which the head
        pools and the mean over views fuses. ``[len(gathers), D]``."""
        return torch.stack([video_embedding(self.head, frame_emb[gather]) for gather in gathers])
