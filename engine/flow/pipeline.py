"""What a runtime serves with: the encoder, the temporal head, the preprocessing and the decoder;
:meth:`VideoPipeline.score` is the last stage (head + logits). The decode stage is
:func:`models.video_input.sample_clip`; the flow that joins them, for the server and
``t4v classify`` alike, is :class:`engine.service.ClassifyService`.
"""

from __future__ import annotations

import torch
from torch import nn

from text4vis.engine.runtime.backends.base import FrameEncoder
from text4vis.engine.vocab.classifier import Classifier, Prediction
from text4vis.models.media import Decoder
from text4vis.models.preprocess import PreprocessConfig
from text4vis.models.video_classifier import class_logits, video_embedding


class VideoPipeline:
    """What a runtime serves with: the encoder, the temporal head, the preprocessing, the decoder."""

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

    @torch.inference_mode()
    def embed(self, frame_emb: torch.Tensor, gather: torch.Tensor) -> torch.Tensor:
        """Embeddings of the distinct frames -> the normalized video embedding ``[D]`` (views fused):
        what every vocabulary scores against, and what the archive stores."""
        return video_embedding(self.head, frame_emb[gather])

    @torch.inference_mode()
    def score(
        self,
        video: torch.Tensor,
        classifier: Classifier,
        top_k: int = 5,
        background: Classifier | None = None,
    ) -> tuple[list[Prediction], list[Prediction]]:
        """A video embedding ``[D]`` -> top-k predictions, and the 3 nearest labels of
        ``background`` (none without one) from the same embedding."""
        predictions = classifier.predictions(class_logits(video, classifier.matrix), top_k)
        if background is None or not background.labels:
            return predictions, []
        return predictions, background.predictions(class_logits(video, background.matrix), 3)

    @torch.inference_mode()
    def score_rows(
        self,
        frame_emb: torch.Tensor,
        gather: torch.Tensor,
        classifier: Classifier | None,
        top_k: int = 5,
    ) -> list[tuple[list[Prediction], torch.Tensor]]:
        """Each row of ``gather [W, T]`` on its own (a timeline's windows): its top-k predictions
        (none without a classifier: the archive's windows) and its video embedding ``[D]``, the
        same numbers :meth:`embed` and :meth:`score` give that row as a video."""
        out: list[tuple[list[Prediction], torch.Tensor]] = []
        for row in gather:
            video = video_embedding(self.head, frame_emb[row][None])
            if classifier is None:
                out.append(([], video))
            else:
                out.append((classifier.predictions(class_logits(video, classifier.matrix), top_k), video))
        return out
