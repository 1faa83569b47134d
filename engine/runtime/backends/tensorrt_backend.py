"""TensorRT backend: a serialized engine (built from the ONNX export) run on a CUDA stream.

Written for TensorRT 10 and 11 alike:
- precision comes from the ONNX graph (strongly typed networks): an fp16 engine is built from the
  fp16 graph. ``BuilderFlag.FP16`` is gone in TensorRT 11 and never used here;
- the parser reads the ONNX file by path, so the external weights file beside it
  (``visual.onnx.data``) is found wherever the process runs;
- input and output tensors are found by their I/O mode, never by index, and every shape set is
  checked;
- a plan runs only on the GPU model and TensorRT version that built it: :func:`plan_key` names
  that pair, and an engine directory keeps one plan per key.

Importing this module never needs TensorRT; using it without TensorRT raises
:class:`BackendUnavailable` with the reason. ``tests/unit/test_tensorrt_calls.py`` runs this code
against a recording fake of the module and checks that fake against the real API where it imports.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from text4vis.engine.runtime.backends.base import BackendUnavailable, ChunkedEncoder, Precision

log = logging.getLogger(__name__)


def _trt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailable(
            "TensorRT is not installed (pip install tensorrt-cu13, on a machine with a CUDA 13 driver)"
        ) from None
    return tensorrt


def require_tensorrt() -> None:
    """Raise :class:`BackendUnavailable` unless TensorRT imports."""
    _trt()


def tensorrt_version() -> str | None:
    try:
        return str(_trt().__version__)
    except BackendUnavailable:
        return None


def gpu_name(device: str = "cuda") -> str | None:
    """The model name of the CUDA GPU ``device``, or None where torch sees no GPU."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(torch.device(device))


def tensorrt_available() -> bool:
    return tensorrt_version() is not None and gpu_name() is not None


def gpu_slug(device: str = "cuda") -> str:
    """``NVIDIA H200`` -> ``nvidia-h200``: the GPU model as a file-name part."""
    name = gpu_name(device)
    if name is None:
        raise BackendUnavailable("TensorRT needs a CUDA GPU and torch sees none")
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def plan_key(device: str = "cuda") -> str:
    """The GPU model and TensorRT version a plan built here runs on, e.g. ``nvidia-h200_trt10.16.1.11``."""
    return f"{gpu_slug(device)}_trt{_trt().__version__}"


def _major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def _network_flags(trt: Any) -> int:
    # TensorRT 10 types a network weakly unless asked; 11 always types strongly and deprecates the flag
    if _major(trt) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def build_engine(onnx_path: Path, plan_path: Path, input_size: int, max_batch: int) -> None:
    """Parse the ONNX file (by path: its external weights sit beside it) into a strongly typed
    network and serialize an engine with one profile: batch 1 / max/2 / max."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise RuntimeError(
            f"{onnx_path} must have one input and one output, not {network.num_inputs} and {network.num_outputs}"
        )
    name = network.get_input(0).name
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    shape = (3, input_size, input_size)
    profile.set_shape(name, (1, *shape), (max(1, max_batch // 2), *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    log.info("TensorRT %s: building %s (batch 1..%d); this takes minutes", trt.__version__, plan_path.name, max_batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see its log above)")
    plan_path.write_bytes(bytes(serialized))


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {trt.DataType.UINT8: torch.uint8, trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
    if dtype not in table:
        raise BackendUnavailable(f"the engine uses tensor type {dtype}; this server feeds uint8 and reads float")
    return table[dtype]


class PlanRunner:
    """A deserialized engine, its execution context and its I/O tensors found by mode.

    Device-neutral: the caller selects the CUDA device and stream; tests run it on a fake engine.
    """

    def __init__(self, trt: Any, plan: bytes) -> None:
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BackendUnavailable(
                "the TensorRT plan does not deserialize here: it was built for another GPU or "
                "TensorRT version; rebuild it on this machine with t4v export --format tensorrt"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendUnavailable(f"the engine has inputs {inputs} and outputs {outputs}; expected one of each")
        self.input, self.output = inputs[0], outputs[0]
        if _torch_dtype(trt, self.engine.get_tensor_dtype(self.input)) != torch.uint8:
            raise BackendUnavailable("the engine's input is not uint8 pixels: re-export it with t4v export")
        self.output_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.output))
        self.context = self.engine.create_execution_context()

    def run(self, x: torch.Tensor, stream_handle: int) -> torch.Tensor:
        """Enqueue the engine on ``x`` (contiguous uint8 on the engine's device); returns the output
        tensor on the same device, valid once the stream has run."""
        if not self.context.set_input_shape(self.input, tuple(x.shape)):
            raise ValueError(f"input shape {tuple(x.shape)} is outside the engine's optimization profile")
        y = torch.empty(tuple(self.context.get_tensor_shape(self.output)), dtype=self.output_dtype, device=x.device)
        if not self.context.set_tensor_address(self.input, x.data_ptr()):
            raise RuntimeError(f"TensorRT refused the address of {self.input!r}")
        if not self.context.set_tensor_address(self.output, y.data_ptr()):
            raise RuntimeError(f"TensorRT refused the address of {self.output!r}")
        if not self.context.execute_async_v3(stream_handle):
            raise RuntimeError("TensorRT execution failed")
        return y


class TensorRTFrameEncoder(ChunkedEncoder):
    name = "tensorrt"

    def __init__(
        self,
        plan_path: Path,
        embed_dim: int,
        input_size: int,
        max_batch_size: int,
        precision: Precision = Precision.FP16,
        device: str = "cuda:0",
    ) -> None:
        trt = _trt()
        if not torch.cuda.is_available():
            raise BackendUnavailable("TensorRT needs a CUDA GPU and torch sees none")
        index = torch.device(device).index
        self._device = torch.device("cuda", torch.cuda.current_device() if index is None else index)
        self.device = str(self._device)
        self.precision: Precision = precision
        self.embed_dim = embed_dim
        self.input_size = input_size
        self.max_batch_size = max_batch_size  # the profile's max: larger inputs are split
        with torch.cuda.device(self._device):  # TensorRT works on the current device
            self._runner = PlanRunner(trt, plan_path.read_bytes())
            self._stream = torch.cuda.Stream(device=self._device)

    @torch.inference_mode()
    def _encode_chunk(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.cuda.device(self._device), torch.cuda.stream(self._stream):
            x = pixels.to(self._device, non_blocking=True).contiguous()
            y = self._runner.run(x, self._stream.cuda_stream)
            out = y.float().to("cpu", non_blocking=True)
        self._stream.synchronize()
        return out
