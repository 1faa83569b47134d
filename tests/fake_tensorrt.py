"""A small fake of the ``tensorrt`` Python module that records every call, for CPU-only tests.

It offers only the API the project may use, with the real class names (``REAL``), so that:
- code run against it can call nothing else (an AttributeError is a test failure);
- ``tests/unit/test_tensorrt_calls.py`` checks each name it offers against the installed
  TensorRT, where TensorRT imports.
It behaves as TensorRT 10 or 11 where they differ: ``BuilderFlag.FP16`` exists only in 10.
It is strict where TensorRT is strict or silent: the parser reads external weights relative to the
path it was given (relative to the working directory for ``parse(bytes)``), engines list their
output before their input, ``set_input_shape`` returns False outside the profile, and a plan
deserializes only with the TensorRT version that built it.
Execution is real arithmetic on host memory (``ctypes``), so tests run on CPU tensors:
``embedding[n, d] = mean(pixels[n]) + d``.
"""

from __future__ import annotations

import ctypes
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx

CALLS: list[tuple[str, Any]] = []  # (what, arguments), in order


def _record(what: str, *args: Any) -> None:
    CALLS.append((what, args))


class _Member:
    def __init__(self, name: str, value: int) -> None:
        self.name, self.value = name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"<{self.name}>"


class DataType:
    REAL = "DataType"
    UINT8 = _Member("UINT8", 5)
    FLOAT = _Member("FLOAT", 0)
    HALF = _Member("HALF", 1)


_ONNX_TYPES = {
    onnx.TensorProto.UINT8: DataType.UINT8,
    onnx.TensorProto.FLOAT: DataType.FLOAT,
    onnx.TensorProto.FLOAT16: DataType.HALF,
}
_NUMPY = {"UINT8": np.uint8, "FLOAT": np.float32, "HALF": np.float16}


class TensorIOMode:
    REAL = "TensorIOMode"
    INPUT = _Member("INPUT", 1)
    OUTPUT = _Member("OUTPUT", 2)


class NetworkDefinitionCreationFlag:
    REAL = "NetworkDefinitionCreationFlag"
    STRONGLY_TYPED = _Member("STRONGLY_TYPED", 1)


class Logger:
    REAL = "Logger"
    WARNING = _Member("WARNING", 2)

    def __init__(self, severity: Any) -> None:
        self.severity = severity


class ITensor:
    REAL = "ITensor"

    def __init__(self, name: str, dtype: _Member, shape: tuple[int, ...]) -> None:
        self.name, self.dtype, self.shape = name, dtype, shape


class INetworkDefinition:
    REAL = "INetworkDefinition"

    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.inputs: list[ITensor] = []
        self.outputs: list[ITensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_input(self, index: int) -> ITensor:
        return self.inputs[index]


class OnnxParser:
    REAL = "OnnxParser"

    def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
        self.network = network
        self.errors: list[str] = []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> str:
        return self.errors[index]

    def parse(self, model: bytes, path: str | None = None) -> bool:
        _record("parse", path)
        proto = onnx.load_model_from_string(model)
        return self._read(proto, Path(path).parent if path else Path.cwd())

    def parse_from_file(self, model: str) -> bool:
        _record("parse_from_file", model)
        proto = onnx.load(model, load_external_data=False)
        return self._read(proto, Path(model).parent)

    def _read(self, proto: onnx.ModelProto, base: Path) -> bool:
        for tensor in proto.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location" and not (base / entry.value).is_file():
                    self.errors.append(f"external weights {entry.value} not found in {base}")
                    return False

        def tensor(value: onnx.ValueInfoProto) -> ITensor:
            t = value.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
            return ITensor(value.name, _ONNX_TYPES[t.elem_type], dims)

        self.network.inputs = [tensor(v) for v in proto.graph.input]
        self.network.outputs = [tensor(v) for v in proto.graph.output]
        return True


class IOptimizationProfile:
    REAL = "IOptimizationProfile"

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, input: str, min: tuple[int, ...], opt: tuple[int, ...], max: tuple[int, ...]) -> None:  # noqa: A002
        _record("set_shape", input, min, opt, max)
        self.shapes[input] = (tuple(min), tuple(opt), tuple(max))


class IBuilderConfig:
    REAL = "IBuilderConfig"

    def __init__(self) -> None:
        self.profiles: list[IOptimizationProfile] = []

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_flag(self, flag: Any) -> None:
        _record("set_flag", flag)


class Builder:
    REAL = "Builder"

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        _record("create_network", flags)
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
        _record("build_serialized_network")
        (inp,), (out,) = network.inputs, network.outputs
        if not config.profiles or inp.name not in config.profiles[0].shapes:
            return None  # a dynamic input without a profile does not build
        low, _, high = config.profiles[0].shapes[inp.name]
        return json.dumps(
            {
                "version": sys.modules["tensorrt"].__version__,
                "input": inp.name,
                "output": out.name,
                "input_dtype": inp.dtype.name,
                "output_dtype": out.dtype.name,
                "embed_dim": out.shape[-1],
                "min": low,
                "max": high,
            }
        ).encode()


class ICudaEngine:
    REAL = "ICudaEngine"

    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self._names = [plan["output"], plan["input"]]  # the order is TensorRT's: never rely on it

    @property
    def num_io_tensors(self) -> int:
        return 2

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def get_tensor_mode(self, name: str) -> _Member:
        return TensorIOMode.INPUT if name == self.plan["input"] else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> _Member:
        key = "input_dtype" if name == self.plan["input"] else "output_dtype"
        return getattr(DataType, self.plan[key])

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext(self.plan)


class IExecutionContext:
    REAL = "IExecutionContext"

    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.input_shape: tuple[int, ...] | None = None
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        _record("set_input_shape", name, tuple(shape))
        ok = (
            name == self.plan["input"]
            and len(shape) == len(self.plan["min"])
            and all(lo <= s <= hi for lo, s, hi in zip(self.plan["min"], shape, self.plan["max"], strict=True))
        )
        if ok:
            self.input_shape = tuple(shape)
        return ok

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        assert self.input_shape is not None, "shape asked before set_input_shape"
        return self.input_shape if name == self.plan["input"] else (self.input_shape[0], self.plan["embed_dim"])

    def set_tensor_address(self, name: str, memory: int) -> bool:
        _record("set_tensor_address", name)
        if name not in (self.plan["input"], self.plan["output"]):
            return False
        self.addresses[name] = memory
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        _record("execute_async_v3", stream_handle)
        if self.input_shape is None or set(self.addresses) != {self.plan["input"], self.plan["output"]}:
            return False
        n = int(np.prod(self.input_shape))
        pixels = np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(self.addresses[self.plan["input"]]))
        means = pixels.reshape(self.input_shape[0], -1).astype(np.float64).mean(axis=1)
        out = means[:, None] + np.arange(self.plan["embed_dim"])[None, :]
        dtype = _NUMPY[self.plan["output_dtype"]]
        buffer = (ctypes.c_uint8 * (out.size * np.dtype(dtype).itemsize)).from_address(
            self.addresses[self.plan["output"]]
        )
        np.frombuffer(buffer, dtype=dtype)[:] = out.astype(dtype).ravel()
        return True


class Runtime:
    REAL = "Runtime"

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        plan = json.loads(serialized_engine)
        if plan["version"] != sys.modules["tensorrt"].__version__:
            return None  # TensorRT reads only the plans of its own version
        return ICudaEngine(plan)


CLASSES = [
    DataType,
    TensorIOMode,
    NetworkDefinitionCreationFlag,
    Logger,
    ITensor,
    INetworkDefinition,
    OnnxParser,
    IOptimizationProfile,
    IBuilderConfig,
    Builder,
    ICudaEngine,
    IExecutionContext,
    Runtime,
]
# attributes the fake sets on instances; on the real classes they are properties
INSTANCE_ATTRIBUTES = {"ITensor": ["name", "dtype", "shape"]}


def public_api(cls: type) -> list[str]:
    """What the fake offers on ``cls``, the names to find on the real class."""
    names = [n for n in vars(cls) if not n.startswith("_") and n != "REAL"]
    return names + INSTANCE_ATTRIBUTES.get(cls.__name__, [])


def module(version: str) -> types.ModuleType:
    """A fresh fake ``tensorrt`` of ``version``; put it in ``sys.modules['tensorrt']``."""
    CALLS.clear()
    fake = types.ModuleType("tensorrt")
    fake.__version__ = version  # type: ignore[attr-defined]
    for cls in CLASSES:
        setattr(fake, cls.__name__, cls)
    if int(version.split(".")[0]) < 11:  # deprecated in 10.12, removed in 11
        fake.BuilderFlag = type("BuilderFlag", (), {"REAL": "BuilderFlag", "FP16": _Member("FP16", 0)})  # type: ignore[attr-defined]
    return fake
