"""The stages of a classification: :func:`sample_clip` (decode + sample + resize + crop, run in
decode workers), the encoder, and :meth:`VideoPipeline.score` (head + logits). The flow that joins
them, for the server and ``t4v classify`` alike, is :class:`engine.service.ClassifyService`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.backends.base import FrameEncoder
from engine.classifier import Classifier, Prediction
from engine.sampling import sample_indices
from models.errors import InputError, MediaError
from models.media import Decoder, open_media, renamed
from models.preprocess import PreprocessConfig, resize_and_crop
from models.video_classifier import class_logits, video_embedding

MAX_FRAMES = 64


@dataclass
class SampledClip:
    """Decoded, resized and cropped frames of one file, before normalization and encoding."""

    pixels: torch.Tensor  # uint8 [crops * U, 3, S, S] for the U distinct sampled frames
    gather: torch.Tensor  # [crops * clips, T] rows of ``pixels`` forming each view
    frame_indices: list[int]
    timing_ms: dict[str, float]


def sample_clip(
    path: Path, preprocess: PreprocessConfig, frames: int = 8, clips: int = 1, crops: int = 1,
    decoder: Decoder = "auto", name: str | None = None,
) -> SampledClip:
    """Decode the sampled frames of ``path`` (each distinct frame once), resize and crop them.

    ``name``: how error messages call the file (the server passes the upload's file name).
    """
    if not 1 <= frames <= MAX_FRAMES:
        raise InputError(f"frames must be 1..{MAX_FRAMES}, got {frames}")
    t0 = time.perf_counter()
    try:
        with open_media(path, decoder, name=name) as media:
            indices = sample_indices(media.info.num_frames, frames, clips)
            unique, inverse = np.unique(indices, return_inverse=True)
            raw = media.read(unique.tolist())
    except MediaError as exc:
        raise renamed(exc, path, name) from None
    t1 = time.perf_counter()
    pixels = resize_and_crop(raw, preprocess, crops)  # [crops, U, 3, S, S]
    t2 = time.perf_counter()
    inverse_t = torch.from_numpy(inverse.reshape(clips, frames))
    gather = torch.cat([inverse_t + c * len(unique) for c in range(crops)])
    return SampledClip(
        pixels=pixels.flatten(0, 1),
        gather=gather,
        frame_indices=indices.reshape(-1).tolist(),
        timing_ms={"decode": (t1 - t0) * 1e3, "preprocess": (t2 - t1) * 1e3},
    )


class VideoPipeline:
    """What a runtime serves with: the encoder, the temporal head, the preprocessing, the decoder."""

    def __init__(
        self,
        encoder: FrameEncoder,
        head: nn.Module,
        preprocess: PreprocessConfig,
        decoder: Decoder = "auto",
    ) -> None:
        self.encoder = encoder
        self.head = head.float().eval()
        self.preprocess = preprocess
        self.decoder: Decoder = decoder

    @torch.inference_mode()
    def score(
        self, frame_emb: torch.Tensor, gather: torch.Tensor, classifier: Classifier, top_k: int = 5
    ) -> list[Prediction]:
        """Embeddings of the distinct frames -> video embedding (views fused) -> top-k predictions."""
        logits = class_logits(video_embedding(self.head, frame_emb[gather]), classifier.matrix)
        return classifier.predictions(logits, top_k)
