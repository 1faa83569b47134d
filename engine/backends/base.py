"""The backend contract, kept small on purpose (TEI's ``Backend``: health, max batch, embed)."""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import torch

Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "bf16")
DTYPES: dict[Precision, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@runtime_checkable
class FrameEncoder(Protocol):
    """Normalized pixels ``float32 [N, 3, S, S]`` -> frame embeddings ``float32 [N, D]`` on the CPU."""

    name: str  # "torch", "onnxruntime", ...
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
