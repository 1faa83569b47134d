"""ONNX Runtime backend: execution providers TensorRT -> CUDA -> CPU, first available wins."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from engine.backends.base import BackendUnavailable, ChunkedEncoder, Precision

log = logging.getLogger(__name__)

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
DEFAULT_PROVIDERS = ("tensorrt", "cuda", "cpu")


def session_options(threads: int = 0, full_optimization: bool = True):  # noqa: ANN201 - ort.SessionOptions
    """Chosen deliberately (see bench/backends.py): all graph optimizations, one inter-op thread
    (a ViT is one chain of ops), intra-op threads = the cores, sequential execution."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    so.graph_optimization_level = level.ORT_ENABLE_ALL if full_optimization else level.ORT_ENABLE_EXTENDED
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    return so


class OnnxFrameEncoder(ChunkedEncoder):
    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: Path,
        embed_dim: int,
        input_size: int,
        precision: Precision = "fp32",
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        threads: int = 0,
        max_batch_size: int = 64,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime(-gpu)") from None
        unknown = [p for p in providers if p not in PROVIDERS]
        if unknown:
            raise ValueError(f"unknown providers {unknown}; choose from {', '.join(PROVIDERS)}")
        available = set(ort.get_available_providers())
        chosen = [PROVIDERS[p] for p in providers if PROVIDERS[p] in available]
        if "CPUExecutionProvider" not in chosen:
            chosen.append("CPUExecutionProvider")  # the explicit last resort
        # onnxruntime 1.32 crashes (SIGSEGV) building an fp16 ViT with ORT_ENABLE_ALL for the CPU:
        # its CPU layout optimizations are left out there (tests/integration/test_engines.py)
        full = not (precision == "fp16" and chosen[0] == "CPUExecutionProvider")
        self.session = ort.InferenceSession(str(onnx_path), session_options(threads, full), providers=chosen)
        running = self.session.get_providers()[0]
        skipped = [PROVIDERS[p] for p in providers if PROVIDERS[p] not in available]
        log.warning("onnxruntime runs %s (asked %s%s)", running, ", ".join(providers),
                    f"; not available here: {', '.join(skipped)}" if skipped else "")
        self.device = "cpu" if running == "CPUExecutionProvider" else "cuda"
        self.precision: Precision = precision
        self.embed_dim = embed_dim
        self.input_size = input_size
        self.max_batch_size = max_batch_size
        self._input = self.session.get_inputs()[0].name

    def _encode_chunk(self, pixels: torch.Tensor) -> torch.Tensor:
        (emb,) = self.session.run(None, {self._input: np.ascontiguousarray(pixels.numpy())})
        return torch.from_numpy(emb.astype(np.float32, copy=False))
