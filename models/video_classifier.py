"""VideoClassifier: frame encoder -> temporal head -> normalized video embedding -> scaled cosine.

Serving and evaluation score with the fixed 100 the method tests with (:func:`class_logits`);
training scales by the learned ``logit_scale.exp()`` (initialized from CLIP's, trained at the
backbone's learning rate, saved in checkpoints), as the reference's training loop does."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOGIT_SCALE = 100.0  # Text4Vis scores with a fixed 100, not CLIP's learned scale


def video_embedding(head: nn.Module, frame_emb: torch.Tensor) -> torch.Tensor:
    """Fuse views: ``frame_emb [views, T, D]`` -> one normalized video embedding ``[D]``.

    Each view goes through the head; views are averaged before the normalization.
    """
    return F.normalize(head(frame_emb).float().mean(dim=0), dim=-1)


def class_logits(video_emb: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """``100 * normalize(v) @ W.T`` for ``video_emb [..., D]`` and ``classifier [C, D]``, in float64:
    serving, evaluation and the archive's re-labelling score the same stored float32 tensors
    and agree to 1e-12, whatever the shape of the product (float32 matrix products of another
    shape differ by ~1e-6 in probability)."""
    return LOGIT_SCALE * F.normalize(video_emb.double(), dim=-1) @ classifier.double().T


class VideoClassifier(nn.Module):
    """The whole model in one module: pixels ``[B, views, T, 3, H, W]`` -> logits ``[B, C]``.

    The classifier ``W [C, D]`` is a buffer: frozen, never a parameter (``trainable_classifier``
    makes it one, for the paper's ablation; its rows are normalized in every forward).
    """

    def __init__(
        self,
        visual: nn.Module,
        head: nn.Module,
        classifier: torch.Tensor,
        trainable_classifier: bool = False,
        logit_scale: float = math.log(LOGIT_SCALE),
    ) -> None:
        """``logit_scale``: the initial log-scale of training's logits (CLIP's own, ``log(100)``
        for OpenAI's weights)."""
        super().__init__()
        self.visual = visual
        self.head = head
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        weights = F.normalize(classifier.float(), dim=-1)
        if trainable_classifier:
            self.classifier = nn.Parameter(weights)
        else:
            self.register_buffer("classifier", weights)

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` -> ``[N, D]`` frame embeddings (not normalized)."""
        return self.visual(pixels)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, views, T, 3, H, W]`` -> normalized video embeddings ``[B, D]``."""
        b, v, t = pixels.shape[:3]
        frames = self.encode_frames(pixels.flatten(0, 2)).view(b * v, t, -1)
        pooled = self.head(frames).float().view(b, v, -1).mean(dim=1)
        return F.normalize(pooled, dim=-1)

    def cosines(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` cosine of each video embedding with each class (views fused)."""
        classifier = self.classifier
        assert isinstance(classifier, torch.Tensor)
        return self.embed(pixels) @ F.normalize(classifier, dim=-1).T

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Training's logits: ``logit_scale.exp() * cosine``."""
        return self.logit_scale.exp() * self.cosines(pixels)

    def test_logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Evaluation's logits: ``100 * cosine`` (the scale the method tests with), as serving
        computes them (:func:`class_logits`, float64)."""
        classifier = self.classifier
        assert isinstance(classifier, torch.Tensor)
        return class_logits(self.embed(pixels), F.normalize(classifier, dim=-1))
