"""The PyTorch backend: the CLIP visual encoder on CPU or CUDA, fp32/fp16/bf16, optional compile."""

from __future__ import annotations

import torch
from torch import nn

from text4vis.engine.runtime.backends.base import DTYPES, PRECISIONS, ChunkedEncoder, PixelEncoder, Precision


class TorchFrameEncoder(ChunkedEncoder):
    """Runs normalize + ``visual`` (an open_clip visual tower) in eval mode under ``inference_mode``."""

    name = "torch"

    def __init__(
        self,
        visual: nn.Module,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        device: str = "cpu",
        precision: Precision = Precision.FP32,
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

    @torch.inference_mode()
    def _encode_chunk(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.module(pixels.to(self.device, non_blocking=True)).cpu()
