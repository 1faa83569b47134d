"""The backend contract, kept small on purpose (TEI's ``Backend``: health, max batch, embed).

Input is uint8 crops, not normalized floats: 4x fewer bytes cross to a GPU, and the CLIP
normalization runs where the encoder runs (on the device, or inside an exported graph).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from text4vis.models.choices import Precision
from text4vis.models.errors import ModelLoadError

PRECISIONS: tuple[Precision, ...] = (Precision.FP32, Precision.FP16, Precision.BF16)  # what runs: never auto
DTYPES: dict[Precision, torch.dtype] = {
    Precision.FP32: torch.float32,
    Precision.FP16: torch.float16,
    Precision.BF16: torch.bfloat16,
}


class BackendUnavailable(ModelLoadError):
    """The backend cannot run here (library missing, no GPU, ...); the message says why."""


@runtime_checkable
class FrameEncoder(Protocol):
    """uint8 crops ``[N, 3, S, S]`` (RGB) -> frame embeddings ``float32 [N, D]`` on the CPU."""

    name: str  # "torch", "onnxruntime", "tensorrt"
    device: str  # where it runs: "cpu", "cuda:0", ...
    precision: Precision
    embed_dim: int
    input_size: int  # S
    max_batch_size: int  # larger inputs are split by the encoder itself

    def encode(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def warmup(self) -> None:
        """Run once on dummy input so the first request does not pay for lazy init."""
        ...

    def healthy(self) -> bool: ...


class Normalize(torch.nn.Module):
    """uint8 ``[N, 3, H, W]`` -> float, CLIP-normalized: ``(x / 255 - mean) / std``."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.float() / 255.0 - self.mean) / self.std


class PixelEncoder(torch.nn.Module):
    """Normalize + the visual tower: the module the torch backend runs and the exporter writes."""

    def __init__(self, visual: torch.nn.Module, mean: tuple[float, float, float], std: tuple[float, float, float]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.visual = visual

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.normalize(pixels)
        dtype = next(self.visual.parameters()).dtype
        return self.visual(x.to(dtype)).float()


class ChunkedEncoder:
    """What every backend shares: input checks, splitting into ``max_batch_size`` chunks, health.
    Subclasses set the contract's attributes and implement :meth:`_encode_chunk`."""

    name: str
    device: str
    precision: Precision
    embed_dim: int
    input_size: int
    max_batch_size: int
    _ok: bool = True

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.dtype != torch.uint8:
            raise ValueError(f"expected uint8 pixels [N, 3, S, S], got {pixels.dtype} {tuple(pixels.shape)}")
        try:
            out = torch.cat([self._encode_chunk(chunk) for chunk in pixels.split(self.max_batch_size)])
        except Exception:
            self._ok = False
            raise
        self._ok = True  # healthy() reports the last call
        return out

    def _encode_chunk(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``[n <= max_batch_size, 3, S, S]`` -> float32 ``[n, D]`` on the CPU."""
        raise NotImplementedError

    def warmup(self) -> None:
        self.encode(torch.zeros(1, 3, self.input_size, self.input_size, dtype=torch.uint8))
        self._ok = True

    def healthy(self) -> bool:
        return self._ok
