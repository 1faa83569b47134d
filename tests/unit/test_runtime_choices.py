"""What runs where, and why: GPU defaults, torch.compile's toolchain, ONNX Runtime provider options."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest

from text4vis.engine.options import ModelOptions
from text4vis.engine.runtime.backends.onnx_backend import provider_options
from text4vis.engine.runtime.build import build_runtime, compile_problem, resolve_precision
from text4vis.models.clip_loader import TINY_ARCH
from text4vis.models.errors import ModelLoadError


def test_precision_auto_is_fp16_on_cuda_and_fp32_on_the_cpu() -> None:
    assert resolve_precision("auto", "cuda") == ("fp16", "precision fp16 (auto on CUDA)")
    assert resolve_precision("auto", "cuda:1")[0] == "fp16"
    assert resolve_precision("auto", "cpu") == ("fp32", "precision fp32 (auto on the CPU)")
    assert resolve_precision("bf16", "cuda") == ("bf16", "precision bf16 as asked")


def test_the_runtime_says_what_runs_and_why(tiny_clip_path: Path) -> None:
    info = build_runtime(ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, device="cpu")).info
    assert (info.backend, info.precision) == ("torch", "fp32")
    assert info.selection == (
        "torch: no engine directory given; eager, precision fp32 (auto on the CPU); "
        "decoder pyav (auto: the model runs on the CPU)"
    )
    runtime = build_runtime(
        ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, device="cpu", scaler="ffmpeg")
    )
    assert runtime.info.selection.endswith("; video frames resized by FFmpeg's scaler as asked (not Pillow's pixels)")
    assert runtime.pipeline.preprocess.scaler == "ffmpeg"


def test_compile_is_refused_at_start_up_without_a_compiler(
    tiny_clip_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert compile_problem("cuda") == "no C compiler (cc, gcc, clang) on the PATH"
    with pytest.raises(ModelLoadError, match=r"--compile \(T4V_COMPILE\) cannot work here: no C\+\+ compiler"):
        build_runtime(ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, device="cpu", compile=True))


def test_compile_is_refused_without_the_python_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = sysconfig.get_paths()
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {**paths, "include": str(tmp_path)})
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
    assert compile_problem("cuda") == "the Python headers (Python.h) are not installed"
    (tmp_path / "Python.h").touch()
    assert compile_problem("cuda") is None


def test_onnxruntime_provider_options_on_a_gpu(tmp_path: Path) -> None:
    """Names as onnxruntime-gpu 1.31.1's TensorRT provider reads them (checked in its library's strings)."""
    trt = provider_options(
        "tensorrt", device_id=1, cache_dir=tmp_path, input_name="pixels", input_size=224, max_batch=64
    )
    assert trt == {
        "device_id": "1",
        "trt_fp16_enable": "False",
        "trt_profile_min_shapes": "pixels:1x3x224x224",
        "trt_profile_opt_shapes": "pixels:32x3x224x224",
        "trt_profile_max_shapes": "pixels:64x3x224x224",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(tmp_path),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(tmp_path),
    }
    no_cache = provider_options(
        "tensorrt", device_id=0, cache_dir=None, input_name="pixels", input_size=336, max_batch=1
    )
    assert "trt_engine_cache_enable" not in no_cache and no_cache["trt_profile_opt_shapes"] == "pixels:1x3x336x336"
    assert provider_options("cuda", device_id=2, cache_dir=None, input_name="pixels", input_size=224, max_batch=8) == {
        "device_id": "2"
    }
    assert provider_options("cpu", device_id=0, cache_dir=None, input_name="pixels", input_size=224, max_batch=8) == {}


def test_the_decoder_is_chosen_at_start_up_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import text4vis.engine.runtime.build as runtime

    problem: dict[str, str | None] = {"value": None}
    probed: list[int] = []

    def nvdec_problem(gpu: int) -> str | None:
        probed.append(gpu)
        return problem["value"]

    monkeypatch.setattr(runtime, "nvdec_problem", nvdec_problem)
    assert runtime.choose_decoder("auto", "cpu") == ("pyav", 0, "decoder pyav (auto: the model runs on the CPU)")
    assert runtime.choose_decoder("auto", "cuda:1") == (
        "nvdec",
        1,
        "decoder nvdec on cuda:1 (a probe clip decoded there equals the CPU's frames)",
    )
    assert runtime.choose_decoder("nvdec", "cuda")[:2] == ("nvdec", 0)
    assert probed == [1, 0]
    problem["value"] = "no NVDEC here"
    assert runtime.choose_decoder("auto", "cuda") == ("pyav", 0, "decoder pyav on the CPU (auto: no NVDEC here)")
    with pytest.raises(ModelLoadError, match="--decoder nvdec cannot be used: no NVDEC here"):
        runtime.choose_decoder("nvdec", "cuda:0")
    with pytest.raises(ModelLoadError, match="--decoder nvdec needs a CUDA device"):
        runtime.choose_decoder("nvdec", "cpu")
    assert runtime.choose_decoder("decord", "cuda")[0] == "decord"
    assert runtime.choose_decoder("pyav", "cuda")[0] == "pyav"
    assert len(probed) == 4  # pyav and decord asked for: no probe


def test_a_misspelled_t4v_variable_is_named_with_the_setting_it_meant() -> None:
    from text4vis.server.settings import Settings

    env = {"T4V_MAX_FRAME": "16", "T4V_MAX_FRAMES": "16", "T4V_URL": "http://x", "T4V_ZZZ": "1", "HOME": "/"}
    assert Settings.unknown_variables(env) == ["T4V_MAX_FRAME (did you mean T4V_MAX_FRAMES?)", "T4V_ZZZ"]


def test_t4v_keys_new_prints_a_key_and_its_digest() -> None:
    import hashlib

    from typer.testing import CliRunner

    from text4vis.server.cli import app

    out = CliRunner().invoke(app, ["keys", "new"])
    assert out.exit_code == 0, out.output
    key = out.stdout.split("key:")[1].split()[0]
    digest = out.stdout.split("digest:")[1].split()[0]
    assert len(key) > 30 and digest == hashlib.sha256(key.encode()).hexdigest()
