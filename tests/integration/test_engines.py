"""Exported engines against the torch reference: ONNX Runtime on CPU, manifests, refusals.

Tolerances: embeddings within 1e-4 absolute (fp32), probabilities within 1e-4; fp16 graphs keep
the direction of every embedding (cosine >= 0.999). TensorRT runs only where it is installed.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from tests.checkpoints import prefixed_state, trained_like
from tests.conftest import GELU_ARCH, QUICK_TAG
from tests.media import generated_videos
from tests.server_helpers import classify_offline
from text4vis.engine.archive.spec import ArchiveSpec
from text4vis.engine.facade import ClassifyResult
from text4vis.engine.options import ModelOptions
from text4vis.engine.request import ClipSpec, RequestLimits
from text4vis.engine.runtime.backends.tensorrt_backend import tensorrt_available
from text4vis.engine.runtime.build import Runtime, build_runtime
from text4vis.engine.runtime.export import Manifest, export_from_options
from text4vis.models.clip_loader import TINY_ARCH
from text4vis.models.errors import ModelLoadError
from text4vis.models.temporal import TransformerHead
from text4vis.server.cli import app

LABELS = ["yoga", "surfing", "arm wrestling", "ApplyEyeMakeup", "skiing"]


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory: pytest.TempPathFactory, tiny_clip_path: Path) -> Path:
    out = tmp_path_factory.mktemp("engine") / "tiny"
    export_from_options(ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path), out, max_batch=16)
    return out


def _classify(runtime: Runtime, video: Path) -> ClassifyResult:
    (result,) = classify_offline(runtime, LABELS, [video], top_k=0)
    assert isinstance(result, ClassifyResult), result
    return result


def _pixels(n: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))


def test_manifest(tiny_engine: Path, tiny_clip_path: Path) -> None:
    m = Manifest.read(tiny_engine)
    assert (m.architecture, m.embed_dim, m.input_size, m.max_batch) == (TINY_ARCH, 64, 224, 16)
    assert m.input["dtype"] == "uint8" and m.precision == "fp32" and m.temporal == "mean"
    assert m.text_model.startswith(f"{TINY_ARCH}/sha256:") and len(m.weights_sha256) == 64
    assert "torch" in m.tools and "onnxruntime" in m.tools and m.created_at.endswith("Z")
    assert (tiny_engine / "visual.onnx").is_file() and (tiny_engine / "head.pt").is_file()


def test_onnxruntime_matches_torch(tiny_engine: Path, tiny_clip_path: Path) -> None:
    ref = build_runtime(ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, device="cpu"))
    ort = build_runtime(ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, engine_dir=tiny_engine))
    assert ort.info.backend == "onnxruntime" and ort.pipeline.encoder.device == "cpu"
    for n in (1, 5, 16, 37):  # 37 > max_batch 16: the encoder splits it
        diff = (ort.pipeline.encoder.encode(_pixels(n)) - ref.pipeline.encoder.encode(_pixels(n))).abs().max()
        assert diff <= 1e-4, (n, float(diff))
    video = generated_videos()["clip_c.avi"]
    a = {p.label: p.probability for p in _classify(ref, video).predictions}
    b = {p.label: p.probability for p in _classify(ort, video).predictions}
    assert max(abs(a[k] - b[k]) for k in a) <= 1e-4


def test_text4vis_checkpoint_exported_and_served_like_torch(
    tmp_path: Path, tiny_clip_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(5)
    visual = open_clip.create_model(TINY_ARCH).visual
    head = trained_like(TransformerHead(64))
    ckpt = tmp_path / "t4v.pt"
    torch.save({"epoch": 1, "model_state_dict": prefixed_state(visual, head)}, ckpt)
    base = ["--model", TINY_ARCH, "--clip-checkpoint", str(tiny_clip_path)]
    runner = CliRunner()
    exported = runner.invoke(app, ["export", *base, "--text4vis-checkpoint", str(ckpt), "--out", str(tmp_path / "e")])
    assert exported.exit_code == 0, exported.stderr
    assert "loading the model to export" in caplog.text and "exporting the visual encoder to ONNX" in caplog.text
    assert Manifest.read(tmp_path / "e").temporal == "transf"
    assert Manifest.read(tmp_path / "e").preprocess == "text4vis"
    video = str(generated_videos()["clip_a.mp4"])
    args = [video, *base, "--labels", ",".join(LABELS), "--views", "2x3", "--top-k", "0", "--json"]
    torch_out = runner.invoke(app, ["classify", *args, "--text4vis-checkpoint", str(ckpt)])
    engine_out = runner.invoke(app, ["classify", *args, "--engine", str(tmp_path / "e")])
    assert torch_out.exit_code == 0 and engine_out.exit_code == 0, engine_out.stderr
    a = json.loads(torch_out.stdout)["results"][0]["predictions"]
    b = json.loads(engine_out.stdout)["results"][0]["predictions"]
    assert [p["label"] for p in a] == [p["label"] for p in b]
    assert max(abs(x["probability"] - y["probability"]) for x, y in zip(a, b, strict=True)) <= 1e-4


def test_an_engine_directory_stands_alone(tiny_engine: Path, tiny_clip_path: Path) -> None:
    """Naming only the engine (no --model, no checkpoint: without it the hub would be asked for
    ViT-B-16), the server encodes vocabularies with the text tower exported beside the engine and
    answers as the torch reference does."""
    assert Manifest.read(tiny_engine).files["text"] == "text.pt"
    alone = build_runtime(ModelOptions(engine_dir=tiny_engine))
    ref = build_runtime(ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, device="cpu"))
    assert alone.info.model_id == ref.info.model_id and alone.info.backend == "onnxruntime"
    video = generated_videos()["clip_c.avi"]
    a = {p.label: p.probability for p in _classify(ref, video).predictions}
    b = {p.label: p.probability for p in _classify(alone, video).predictions}
    assert max(abs(a[k] - b[k]) for k in a) <= 1e-4
    out = CliRunner().invoke(
        app, ["classify", str(video), "--labels", ",".join(LABELS), "--engine", str(tiny_engine), "--json"]
    )
    assert out.exit_code == 0, out.stderr


def test_engine_exported_from_a_quickgelu_tag(
    tmp_path: Path, quick_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An architecture whose config says GELU, weights under a tag that says QuickGELU: the exported
    graph runs QuickGELU (it equals the same weights read as an OpenAI file, built with QuickGELU)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = ModelOptions(model=GELU_ARCH, pretrained=QUICK_TAG, device="cpu")
    export_from_options(hub, tmp_path / "e", max_batch=8)
    assert Manifest.read(tmp_path / "e").text_model == f"{GELU_ARCH}-quickgelu/{QUICK_TAG}"
    engine = build_runtime(hub.model_copy(update={"engine_dir": tmp_path / "e"}))
    reference = build_runtime(ModelOptions(clip_checkpoint=quick_weights, device="cpu"))
    diff = (engine.pipeline.encoder.encode(_pixels(5)) - reference.pipeline.encoder.encode(_pixels(5))).abs().max()
    assert diff <= 1e-4, float(diff)


def test_engine_without_head_count_is_refused(tmp_path: Path, tiny_clip_path: Path) -> None:
    """An engine exported before head.pt recorded the transf head's attention heads cannot be served
    right (embed // 64 is wrong for RN50): it is refused with a request to export it again."""
    torch.manual_seed(5)
    visual = open_clip.create_model(TINY_ARCH).visual
    ckpt = tmp_path / "t4v.pt"
    torch.save({"epoch": 1, "model_state_dict": prefixed_state(visual, trained_like(TransformerHead(64)))}, ckpt)
    opts = ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, text4vis_checkpoint=ckpt)
    export_from_options(opts, tmp_path / "e", max_batch=4)
    saved = torch.load(tmp_path / "e" / "head.pt", weights_only=True)
    torch.save({k: v for k, v in saved.items() if k != "heads"}, tmp_path / "e" / "head.pt")
    with pytest.raises(ModelLoadError, match="export it again"):
        build_runtime(ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, engine_dir=tmp_path / "e"))


def test_engine_refuses_another_text_model(tiny_engine: Path, tmp_path: Path) -> None:
    torch.manual_seed(99)
    other = tmp_path / "other.pt"
    torch.save(open_clip.create_model(TINY_ARCH).state_dict(), other)
    with pytest.raises(ModelLoadError, match="refusing to pair them"):
        build_runtime(ModelOptions(model=TINY_ARCH, clip_checkpoint=other, engine_dir=tiny_engine))


def test_fp16_graph_keeps_direction(tmp_path: Path, tiny_clip_path: Path) -> None:
    opts = ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path)
    export_from_options(opts, tmp_path / "fp16", precision="fp16", max_batch=8)
    ref = build_runtime(opts)
    half = build_runtime(ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, engine_dir=tmp_path / "fp16"))
    x = _pixels(6)
    cos = F.cosine_similarity(half.pipeline.encoder.encode(x), ref.pipeline.encoder.encode(x))
    assert cos.min() >= 0.999
    # its rows are not the fp32 ones: a table of their own, named by the weights the graph holds
    clip = ClipSpec().resolve(RequestLimits())
    assert Manifest.read(tmp_path / "fp16").weights_sha256 != ref.info.weights_sha256
    spec, reference = ArchiveSpec.of(half, clip), ArchiveSpec.of(ref, clip)
    assert (spec.precision, spec.backend) == ("fp16", "onnxruntime") and spec.fingerprint != reference.fingerprint


def test_an_engine_is_refused_beside_a_text_tower_of_another_activation(
    tmp_path: Path, quick_weights: Path, tiny_engine: Path, tiny_clip_path: Path
) -> None:
    """OpenAI-layout weights (QuickGELU) exported with --activation gelu: the engine's id says
    GELU, and running it beside the file's own (QuickGELU) text tower is refused in one line."""
    export_from_options(ModelOptions(clip_checkpoint=quick_weights, activation="gelu"), tmp_path / "gelu", max_batch=4)
    manifest = Manifest.read(tmp_path / "gelu")
    assert manifest.activation == "gelu" and manifest.text_model.split("/")[0].endswith("-gelu")
    video = str(generated_videos()["clip_a.mp4"])
    r = CliRunner().invoke(
        app,
        [
            "classify",
            video,
            "--labels",
            "a,b",
            "--clip-checkpoint",
            str(quick_weights),
            "--engine",
            str(tmp_path / "gelu"),
        ],
    )
    assert r.exit_code == 2 and "refusing to pair them" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # an engine and the torch backend of the same weights make rows of two tables
    clip = ClipSpec().resolve(RequestLimits())
    engine = build_runtime(ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, engine_dir=tiny_engine))
    torch_ = build_runtime(ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, device="cpu"))
    assert engine.info.weights_sha256 == torch_.info.weights_sha256  # fp32: the same weights
    assert ArchiveSpec.of(engine, clip).fingerprint != ArchiveSpec.of(torch_, clip).fingerprint


def test_tensorrt_unavailable_is_a_clear_refusal(tiny_engine: Path, tiny_clip_path: Path, tmp_path: Path) -> None:
    if tensorrt_available():
        pytest.skip("TensorRT is installed here: the refusal path does not apply")
    base = ["--model", TINY_ARCH, "--clip-checkpoint", str(tiny_clip_path)]
    video = str(generated_videos()["clip_a.mp4"])
    r = CliRunner().invoke(
        app, ["classify", video, *base, "--labels", "a", "--engine", str(tiny_engine), "--backend", "tensorrt"]
    )
    assert r.exit_code == 2 and "holds no TensorRT engine" in r.stderr
    r = CliRunner().invoke(app, ["export", *base, "--format", "tensorrt", "--out", str(tmp_path / "trt")])
    assert r.exit_code == 2 and "TensorRT is not installed" in r.stderr


@pytest.mark.skipif(not tensorrt_available(), reason="TensorRT and a CUDA GPU are needed; neither is on this machine")
def test_tensorrt_matches_torch(tmp_path: Path, tiny_clip_path: Path) -> None:  # pragma: no cover - GPU hosts
    opts = ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path)
    export_from_options(opts, tmp_path / "trt", fmt="tensorrt", precision="fp16", max_batch=16)
    ref = build_runtime(replace(opts, precision="fp32"))
    trt = build_runtime(
        ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, engine_dir=tmp_path / "trt", backend="tensorrt")
    )
    x = _pixels(20)
    assert F.cosine_similarity(trt.pipeline.encoder.encode(x), ref.pipeline.encoder.encode(x)).min() >= 0.999


def test_export_of_unloadable_weights_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    r = CliRunner().invoke(app, ["export", "--model", TINY_ARCH, "--clip-checkpoint", str(bad), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr


def test_server_runs_an_engine(tiny_engine: Path, tiny_clip_path: Path, tmp_path: Path) -> None:
    import asyncio

    from tests.server_helpers import running, settings
    from text4vis.server.app import create_app

    async def go() -> None:
        app_ = create_app(settings(tmp_path, model=TINY_ARCH, clip_checkpoint=tiny_clip_path, engine_dir=tiny_engine))
        async with running(app_) as c:
            model = (await c.get("/models")).json()[0]
            assert model["backend"] == "onnxruntime" and model["text_device"] == "cpu"
            files = {"file": ("a.avi", generated_videos()["clip_c.avi"].read_bytes())}
            r = await c.post("/classify", files=files, data={"labels": json.dumps(LABELS)})
            assert r.status_code == 200 and len(r.json()["predictions"]) == 5

    asyncio.run(go())


def test_an_engine_of_an_openai_layout_file_of_any_shape_stands_alone(tmp_path: Path, quick_weights: Path) -> None:
    """An OpenAI-layout file read without --model has an architecture read from its shapes, which
    open_clip has no config for (``ViT-w...``): ``t4v classify --engine DIR`` alone failed ("open_clip
    has no architecture ... to rebuild the text encoder"). The text tower now carries its
    architecture's config; a fresh process answers as the file itself does."""
    import subprocess
    import sys

    out = tmp_path / "engine"
    export_from_options(ModelOptions(clip_checkpoint=quick_weights), out, max_batch=4)
    saved = torch.load(out / "text.pt", weights_only=True)
    name = str(saved["arch"]).removeprefix("openai-")
    assert name not in open_clip.list_models() and "text_cfg" in saved["model_cfg"]
    video = str(generated_videos()["clip_a.mp4"])
    alone = subprocess.run(
        [sys.executable, "-m", "text4vis.server.cli", "classify", video, "--labels", "a,b,c", "--engine", str(out)]
        + ["--json", "--top-k", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert alone.returncode == 0, alone.stderr
    (answer,) = json.loads(alone.stdout)["results"]
    got = {p["label"]: p["probability"] for p in answer["predictions"]}
    runtime = build_runtime(ModelOptions(clip_checkpoint=quick_weights, device="cpu"))
    (own,) = classify_offline(runtime, ["a", "b", "c"], [Path(video)], top_k=3)
    assert isinstance(own, ClassifyResult)
    assert max(abs(got[p.label] - p.probability) for p in own.predictions) < 1e-4


def test_onnx_on_a_cpu_host_says_what_runs_without_a_warning(
    tiny_engine: Path, tiny_clip_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every ONNX run on a CPU-only host printed a WARNING for the GPU providers of the default
    order; the default order takes what the host has and one INFO line says what runs. A
    provider asked for by name and missing is still a warning."""
    import logging

    from text4vis.engine.runtime.backends.onnx_backend import OnnxFrameEncoder

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the GPU providers run")
    caplog.set_level(logging.INFO, logger="text4vis.engine.runtime.backends.onnx_backend")
    build_runtime(ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, engine_dir=tiny_engine))
    lines = [r for r in caplog.records if r.name.endswith("onnx_backend")]
    assert [r.levelname for r in lines] == ["INFO"], [r.getMessage() for r in lines]
    assert "CPUExecutionProvider" in lines[0].getMessage()
    caplog.clear()
    manifest = Manifest.read(tiny_engine)
    OnnxFrameEncoder(
        tiny_engine / manifest.files["onnx"], manifest.embed_dim, manifest.input_size, providers=("cuda", "cpu")
    )
    assert [r.levelname for r in caplog.records if r.name.endswith("onnx_backend")] == ["WARNING"]
