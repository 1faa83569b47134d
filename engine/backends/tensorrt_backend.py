"""TensorRT backend: a serialized engine (built from the ONNX export) run on CUDA streams.

Importing this module never needs TensorRT; using it without TensorRT raises
:class:`BackendUnavailable` with the reason.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from engine.backends.base import BackendUnavailable, ChunkedEncoder, Precision

log = logging.getLogger(__name__)


def _trt() -> Any:
    try:
        import tensorrt

        return tensorrt
    except ImportError:
        raise BackendUnavailable("TensorRT is not installed (pip install tensorrt, on a machine with CUDA)") from None


def require_tensorrt() -> None:
    """Raise :class:`BackendUnavailable` unless TensorRT imports."""
    _trt()


def tensorrt_available() -> bool:
    try:
        _trt()
    except BackendUnavailable:
        return False
    return torch.cuda.is_available()


def build_engine(onnx_path: Path, plan_path: Path, input_size: int, max_batch: int, fp16: bool) -> None:
    """Parse the ONNX graph and serialize an engine with one profile: batch 1 / max/2 / max."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    shape = (3, input_size, input_size)
    profile.set_shape(name, (1, *shape), (max(1, max_batch // 2), *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see its log above)")
    plan_path.write_bytes(bytes(serialized))


class TensorRTFrameEncoder(ChunkedEncoder):
    name = "tensorrt"

    def __init__(
        self, plan_path: Path, embed_dim: int, input_size: int, max_batch_size: int,
        precision: Precision = "fp16", device: str = "cuda:0",
    ) -> None:
        trt = _trt()
        if not torch.cuda.is_available():
            raise BackendUnavailable("TensorRT needs a CUDA GPU and torch sees none")
        self.device = device
        self.precision: Precision = precision
        self.embed_dim = embed_dim
        self.input_size = input_size
        self.max_batch_size = max_batch_size  # the profile's max: larger inputs are split
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(plan_path.read_bytes())
        if self._engine is None:
            raise BackendUnavailable(f"{plan_path} does not deserialize with this TensorRT/GPU")
        self._context = self._engine.create_execution_context()
        self._input = self._engine.get_tensor_name(0)
        self._output = self._engine.get_tensor_name(1)
        self._stream = torch.cuda.Stream(device=device)

    @torch.inference_mode()
    def _encode_chunk(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.cuda.stream(self._stream):
            x = pixels.to(self.device, non_blocking=True).contiguous()
            y = torch.empty((x.shape[0], self.embed_dim), dtype=torch.float32, device=self.device)
            self._context.set_input_shape(self._input, tuple(x.shape))
            self._context.set_tensor_address(self._input, x.data_ptr())
            self._context.set_tensor_address(self._output, y.data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            out = y.to("cpu", non_blocking=True)
        self._stream.synchronize()
        return out
