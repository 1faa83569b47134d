"""The PyTorch backend: the CLIP visual encoder on CPU or CUDA, fp32/fp16/bf16, optional compile."""

from __future__ import annotations

import logging

import torch
from torch import nn

from engine.backends.base import DTYPES, PRECISIONS, PixelEncoder, Precision

log = logging.getLogger(__name__)


class TorchFrameEncoder:
    """Runs normalize + ``visual`` (an open_clip visual tower) in eval mode under ``inference_mode``."""

    name = "torch"

    def __init__(
        self,
        visual: nn.Module,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        device: str = "cpu",
        precision: Precision = "fp32",
        max_batch_size: int = 64,
        compile: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("CUDA was asked for but torch sees no GPU")
        self.device = device
        self.precision: Precision = precision
        self.embed_dim = int(getattr(visual, "output_dim", 0))
        size = getattr(visual, "image_size", 224)
        self.input_size = int(size[0] if isinstance(size, tuple | list) else size)
        self.max_batch_size = max_batch_size
        module = PixelEncoder(visual.to(dtype=DTYPES[precision]), mean, std).to(device).eval()
        self.module: nn.Module = torch.compile(module, dynamic=True) if compile else module  # type: ignore[assignment]
        self._ok = True

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.dtype != torch.uint8:
            raise ValueError(f"expected uint8 pixels [N, 3, S, S], got {pixels.dtype} {tuple(pixels.shape)}")
        out = []
        try:
            for chunk in pixels.split(self.max_batch_size):
                out.append(self.module(chunk.to(self.device, non_blocking=True)).cpu())
        except RuntimeError:
            self._ok = False
            raise
        return torch.cat(out)

    def warmup(self) -> None:
        self.encode(torch.zeros(1, 3, self.input_size, self.input_size, dtype=torch.uint8))
        log.info("torch backend on %s, %s, embed dim %d: warm", self.device, self.precision, self.embed_dim)

    def healthy(self) -> bool:
        return self._ok
