"""Every TensorRT call the code makes, checked without a GPU.

- Against the installed TensorRT Python API where it imports: each name the fake offers (and so
  each name the code can use, since the code runs against the fake below) exists in TensorRT.
- Against ``tests/fake_tensorrt.py`` as TensorRT 10 and 11: the ONNX file is parsed by path (its
  external weights are found from any working directory), the network is strongly typed and no
  precision flag is set, the profile is set on the input found by name, the engine's tensors are
  bound by I/O mode and name (the fake lists the output first), every shape set is checked, and a
  plan of another TensorRT version is refused with advice.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from tests import fake_tensorrt
from text4vis.engine.runtime.backends import tensorrt_backend
from text4vis.engine.runtime.backends.base import BackendUnavailable
from text4vis.engine.runtime.backends.tensorrt_backend import PlanRunner, build_engine, plan_key
from text4vis.engine.runtime.build import choose_backend
from text4vis.engine.runtime.export import Manifest, export_engine
from text4vis.models.temporal import build_temporal_head

VERSIONS = ["10.16.1.11", "11.4.0.106"]
S, D = 8, 4  # input size and embedding width of the test graphs


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is None,
    reason="TensorRT is not installed here (it needs a CUDA machine); the fake stands in for it",
)
def test_every_call_exists_in_the_installed_tensorrt() -> None:  # pragma: no cover - TensorRT hosts
    import tensorrt as trt

    missing = [
        f"{cls.REAL}.{name}"
        for cls in fake_tensorrt.CLASSES
        for name in fake_tensorrt.public_api(cls)
        if not hasattr(getattr(trt, cls.REAL, None), name)
    ]
    assert not missing, f"TensorRT {trt.__version__} lacks {missing}"


@pytest.fixture(params=VERSIONS)
def trt(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    fake = fake_tensorrt.module(request.param)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return fake


def _graph_with_external_weights(directory: Path) -> Path:
    """uint8 pixels [batch, 3, S, S] -> float32 [batch, D], its weights in visual.onnx.data."""
    weight = numpy_helper.from_array(np.linspace(-1, 1, 3 * S * S * D, dtype=np.float32).reshape(-1, D), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT),
            helper.make_node("Flatten", ["x"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["embeddings"]),
        ],
        "visual",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", 3, S, S])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", D])],
        [weight],
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "visual.onnx"
    onnx.save_model(
        helper.make_model(graph), str(path), save_as_external_data=True, location="visual.onnx.data", size_threshold=0
    )
    assert (directory / "visual.onnx.data").is_file()
    return path


def _built_plan(tmp_path: Path, max_batch: int = 16) -> bytes:
    onnx_path = _graph_with_external_weights(tmp_path / "engine")
    build_engine(onnx_path, tmp_path / "engine" / "visual.plan", S, max_batch)
    return (tmp_path / "engine" / "visual.plan").read_bytes()


def test_build_parses_by_path_strongly_typed_without_precision_flags(
    trt,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    onnx_path = _graph_with_external_weights(tmp_path / "engine")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the server does not run from the engine directory
    build_engine(onnx_path, tmp_path / "engine" / "visual.plan", S, 16)
    calls = fake_tensorrt.CALLS
    assert ("parse_from_file", (str(onnx_path),)) in calls
    assert not [c for c in calls if c[0] in ("parse", "set_flag")], calls
    (flags,) = [args[0] for what, args in calls if what == "create_network"]
    strongly_typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert flags == (strongly_typed if trt.__version__.startswith("10.") else 0)
    assert ("set_shape", ("pixels", (1, 3, S, S), (8, 3, S, S), (16, 3, S, S))) in calls
    assert (tmp_path / "engine" / "visual.plan").stat().st_size > 0


def test_parse_failure_names_the_file_and_the_reason(trt, tmp_path: Path) -> None:  # noqa: ANN001
    onnx_path = _graph_with_external_weights(tmp_path / "engine")
    (tmp_path / "engine" / "visual.onnx.data").unlink()
    with pytest.raises(RuntimeError, match=r"could not parse .*visual.onnx: external weights visual.onnx.data"):
        build_engine(onnx_path, tmp_path / "engine" / "visual.plan", S, 16)


def test_runner_binds_by_name_and_checks_every_shape(trt, tmp_path: Path) -> None:  # noqa: ANN001
    runner = PlanRunner(trt, _built_plan(tmp_path))
    assert (runner.input, runner.output) == ("pixels", "embeddings")  # the fake lists the output first
    x = torch.randint(0, 256, (5, 3, S, S), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = runner.run(x, stream_handle=7)
    expected = x.reshape(5, -1).double().mean(dim=1, keepdim=True) + torch.arange(D)
    torch.testing.assert_close(y, expected.float(), rtol=0, atol=1e-4)
    assert ("execute_async_v3", (7,)) in fake_tensorrt.CALLS
    assert ("set_input_shape", ("pixels", (5, 3, S, S))) in fake_tensorrt.CALLS
    with pytest.raises(ValueError, match="outside the engine's optimization profile"):
        runner.run(torch.zeros(17, 3, S, S, dtype=torch.uint8), stream_handle=7)  # max batch 16


def test_plan_of_another_tensorrt_version_is_refused_with_advice(
    trt,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    plan = _built_plan(tmp_path)
    other = fake_tensorrt.module("10.13.3.9" if trt.__version__.startswith("11") else "11.4.0.106")
    monkeypatch.setitem(sys.modules, "tensorrt", other)
    with pytest.raises(BackendUnavailable, match="another GPU or TensorRT version; rebuild it"):
        PlanRunner(other, plan)


class _TinyVisual(torch.nn.Module):
    output_dim = D

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3)))


def _gpu(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Pretend this machine's GPU (the one seam the code asks) is ``name``."""
    monkeypatch.setattr(tensorrt_backend, "gpu_name", lambda device="cuda": name)


def test_export_keeps_one_plan_per_gpu_and_version_and_reuses_the_rest(
    trt,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    torch.manual_seed(0)
    visual, head = _TinyVisual(), build_temporal_head("mean", D)
    args = dict(
        architecture="tiny",
        text_model="tiny/sha256:0",
        activation="quickgelu",
        input_size=S,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        preprocess="clip",
        fmt="tensorrt",
        precision="fp16",
        max_batch=16,
    )
    out = tmp_path / "engine"
    _gpu(monkeypatch, "NVIDIA H200")
    first = export_engine(visual, head, out, **args)  # type: ignore[arg-type]
    h200 = f"nvidia-h200_trt{trt.__version__}"
    assert plan_key() == h200 and first.plans == {h200: f"visual.{h200}.plan"}
    assert first.tools["tensorrt"] == trt.__version__
    onnx_written = (out / "visual.onnx").stat().st_mtime_ns

    _gpu(monkeypatch, "NVIDIA L4")  # the same directory on another GPU model: only a plan is added
    fake_tensorrt.CALLS.clear()
    second = export_engine(visual, head, out, **args)  # type: ignore[arg-type]
    l4 = f"nvidia-l4_trt{trt.__version__}"
    assert set(second.plans) == {h200, l4} and (out / second.plans[l4]).is_file()
    assert (out / "visual.onnx").stat().st_mtime_ns == onnx_written
    assert Manifest.read(out).plans == second.plans
    fake_tensorrt.CALLS.clear()
    export_engine(visual, head, out, **args)  # type: ignore[arg-type]
    assert not [c for c in fake_tensorrt.CALLS if c[0] == "build_serialized_network"]  # nothing to do

    assert choose_backend("auto", second, "cuda:0")[0] == "tensorrt"
    _gpu(monkeypatch, "NVIDIA A100-SXM4-80GB")
    backend, why = choose_backend("auto", second, "cuda:0")
    assert backend == "onnxruntime" and f"no TensorRT plan for nvidia-a100-sxm4-80gb_trt{trt.__version__}" in why
    assert choose_backend("auto", second, "cpu")[0] == "onnxruntime"

    with torch.no_grad():
        visual.proj.weight.add_(1.0)  # other weights: everything is rewritten, old plans go
    third = export_engine(visual, head, out, **args)  # type: ignore[arg-type]
    assert set(third.plans) == {"nvidia-a100-sxm4-80gb_trt" + trt.__version__}
    assert sorted(p.name for p in out.glob("*.plan")) == [third.plans["nvidia-a100-sxm4-80gb_trt" + trt.__version__]]
