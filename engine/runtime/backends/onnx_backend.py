"""ONNX Runtime backend: execution providers TensorRT -> CUDA -> CPU, first available wins.

On a GPU the providers get their options: the device, and for TensorRT an engine and timing cache
under the engine directory (keyed by GPU model and TensorRT version) with the profile's min/opt/max
shapes, so a restart or a new batch size reuses the engine instead of rebuilding it for minutes.
Precision comes from the graph, as in our own TensorRT backend: an fp16 export is an fp16 graph.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from text4vis.engine.runtime.backends.base import BackendUnavailable, ChunkedEncoder, Precision

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


def provider_options(
    provider: str, *, device_id: int, cache_dir: Path | None, input_name: str, input_size: int, max_batch: int
) -> dict[str, str]:
    """ONNX Runtime's options for one of our provider names (values as strings, as ORT takes them)."""
    if provider == "cuda":
        return {"device_id": str(device_id)}
    if provider != "tensorrt":
        return {}
    shape = f"3x{input_size}x{input_size}"
    options = {
        "device_id": str(device_id),
        # off: the network is strongly typed, so an fp16 graph builds fp16 kernels and an fp32 one fp32
        "trt_fp16_enable": "False",
        "trt_profile_min_shapes": f"{input_name}:1x{shape}",
        "trt_profile_opt_shapes": f"{input_name}:{max(1, max_batch // 2)}x{shape}",
        "trt_profile_max_shapes": f"{input_name}:{max_batch}x{shape}",
    }
    if cache_dir is not None:
        options.update(
            {
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(cache_dir),
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": str(cache_dir),
            }
        )
    return options


def _trt_cache_dir(engine_dir: Path, device: str) -> Path | None:
    """``ENGINE_DIR/ort-trt-cache/<gpu>_trt<version>``, or None (no cache) where it cannot be written."""
    from text4vis.engine.runtime.backends.tensorrt_backend import gpu_slug, tensorrt_version

    # importing tensorrt also loads libnvinfer from its pip wheel, which the TensorRT provider links
    path = engine_dir / "ort-trt-cache" / f"{gpu_slug(device)}_trt{tensorrt_version() or 'system'}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("no TensorRT engine cache (%s): ONNX Runtime rebuilds the engine at every start", exc)
        return None
    return path


class OnnxFrameEncoder(ChunkedEncoder):
    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: Path,
        embed_dim: int,
        input_size: int,
        precision: Precision = Precision.FP32,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        threads: int = 0,
        max_batch_size: int = 64,
        device: str = "cuda:0",
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime(-gpu)") from None
        unknown = [p for p in providers if p not in PROVIDERS]
        if unknown:
            raise ValueError(f"unknown providers {unknown}; choose from {', '.join(PROVIDERS)}")
        available = set(ort.get_available_providers())
        names = [p for p in providers if PROVIDERS[p] in available]
        if not torch.cuda.is_available():
            names = [p for p in names if p == "cpu"]  # a GPU build of onnxruntime lists its providers anyway
        if "cpu" not in names:
            names.append("cpu")  # the explicit last resort
        if names[0] != "cpu" and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA and cuDNN from the pip wheels torch brought (a no-op once torch loaded them)
        device_id = int(device.split(":")[1]) if device.startswith("cuda:") else 0
        input_name = "pixels"
        cache = _trt_cache_dir(onnx_path.parent, f"cuda:{device_id}") if names[0] == "tensorrt" else None
        chosen = [
            (
                PROVIDERS[p],
                provider_options(
                    p,
                    device_id=device_id,
                    cache_dir=cache,
                    input_name=input_name,
                    input_size=input_size,
                    max_batch=max_batch_size,
                ),
            )
            for p in names
        ]
        # onnxruntime 1.32 crashes (SIGSEGV) building an fp16 ViT with ORT_ENABLE_ALL for the CPU:
        # its CPU layout optimizations are left out there (tests/integration/test_engines.py)
        full = not (precision == "fp16" and names[0] == "cpu")
        self.session = ort.InferenceSession(str(onnx_path), session_options(threads, full), providers=chosen)
        running = self.session.get_providers()[0]
        skipped = [PROVIDERS[p] for p in providers if p not in names]
        if skipped and tuple(providers) != tuple(DEFAULT_PROVIDERS):  # asked for by name and not here
            log.warning(
                "onnxruntime runs %s: %s asked for but not available here (library or GPU missing)",
                running,
                ", ".join(skipped),
            )
        else:  # the default order takes what the host has: one line says what runs
            log.info("onnxruntime runs %s%s", running, " (no CUDA GPU on this host)" if skipped else "")
        self.device = "cpu" if running == "CPUExecutionProvider" else f"cuda:{device_id}"
        self.precision: Precision = precision
        self.embed_dim = embed_dim
        self.input_size = input_size
        self.max_batch_size = max_batch_size
        self._input = self.session.get_inputs()[0].name
        if self._input != input_name:
            raise BackendUnavailable(f"{onnx_path} takes {self._input!r}, not {input_name!r}: re-export it")

    def _encode_chunk(self, pixels: torch.Tensor) -> torch.Tensor:
        (emb,) = self.session.run(None, {self._input: np.ascontiguousarray(pixels.numpy())})
        return torch.from_numpy(emb.astype(np.float32, copy=False))
