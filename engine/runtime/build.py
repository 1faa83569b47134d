"""Assemble a ready pipeline from model options: the one place that knows every piece.

One assembly path: the visual encoder comes from weights (torch) or from an engine directory
(ONNX Runtime, TensorRT), the backend from the :data:`BACKENDS` table, and one log line (and
``/models``) says what runs and why.
"""

from __future__ import annotations

import logging
import shutil
import sysconfig
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from text4vis.engine.options import ModelOptions
from text4vis.engine.runtime.backends.base import BackendUnavailable, FrameEncoder, Precision
from text4vis.engine.runtime.backends.onnx_backend import OnnxFrameEncoder
from text4vis.engine.runtime.backends.tensorrt_backend import (
    TensorRTFrameEncoder,
    plan_key,
    require_tensorrt,
    tensorrt_available,
    tensorrt_version,
)
from text4vis.engine.runtime.backends.torch_backend import TorchFrameEncoder
from text4vis.engine.runtime.export import Manifest, load_head, weights_digest
from text4vis.engine.runtime.loading import load_clip_for, load_model
from text4vis.engine.runtime.pipeline import VideoPipeline
from text4vis.models.clip_loader import LoadedClip, load_text_tower
from text4vis.models.errors import ModelLoadError
from text4vis.models.media import Decoder, nvdec_problem
from text4vis.models.preprocess import PreprocessConfig
from text4vis.models.text_encoder import TextEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    arch: str
    model_id: str  # the text model id vocabularies are keyed on
    temporal: str
    preprocess: str
    backend: str
    device: str
    precision: str
    checkpoint: str | None
    text_device: str  # where prompts are encoded (PUT /vocab): the GPU when there is one
    selection: str  # why this backend, precision and decoder run, in words
    weights_sha256: str = ""  # the visual encoder's and the head's weights as they run (after any cast)
    activation: str = ""  # quickgelu | gelu: the visual encoder's MLP activation

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


@dataclass
class Runtime:
    pipeline: VideoPipeline
    text_encoder: TextEncoder
    info: ModelInfo


@dataclass
class VisualSource:
    """Where the visual encoder comes from: weights in memory, or an engine directory."""

    arch: str
    head: nn.Module
    preprocess: PreprocessConfig
    mode: str  # preprocessing mode, as reported
    checkpoint: str | None
    visual: nn.Module | None = None  # the torch backend's
    engine_dir: Path | None = None
    manifest: Manifest | None = None
    weights_sha256: str = ""  # an engine's (its manifest's); for weights, computed once the backend cast them
    activation: str = ""


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_precision(precision: Precision | str, device: str) -> tuple[Precision, str]:
    """``auto`` is fp16 on CUDA (the precision OpenAI's CLIP weights were released in; within the
    tested tolerance of fp32, see bench/gpu_check.py) and fp32 on the CPU. Returns it and why."""
    if precision != Precision.AUTO:
        return Precision(precision), f"precision {precision} as asked"
    if device.startswith("cuda"):
        return Precision.FP16, "precision fp16 (auto on CUDA)"
    return Precision.FP32, "precision fp32 (auto on the CPU)"


_SCALED_BY = {"pillow": "", "ffmpeg": "; video frames resized by FFmpeg's scaler as asked (not Pillow's pixels)"}


def choose_decoder(asked: Decoder, device: str) -> tuple[Decoder, int, str]:
    """The video decoder, the CUDA device index NVDEC uses, and why. ``auto`` decodes with NVDEC
    when the model runs on a CUDA device and NVDEC decodes a probe clip there to the CPU's very
    pixels (:func:`models.media.nvdec_problem`), else with PyAV on the CPU; ``nvdec`` asked for
    and unusable is an error, not a silent CPU fallback."""
    gpu = (torch.device(device).index or 0) if device.startswith("cuda") else 0
    if asked not in (Decoder.AUTO, Decoder.NVDEC):
        return asked, gpu, f"decoder {asked} as asked"
    if not device.startswith("cuda"):
        if asked == Decoder.NVDEC:
            raise ModelLoadError(f"--decoder nvdec needs a CUDA device (the model runs on {device})")
        return Decoder.PYAV, gpu, "decoder pyav (auto: the model runs on the CPU)"
    problem = nvdec_problem(gpu)
    if problem is None:
        return Decoder.NVDEC, gpu, f"decoder nvdec on cuda:{gpu} (a probe clip decoded there equals the CPU's frames)"
    if asked == Decoder.NVDEC:
        raise ModelLoadError(f"--decoder nvdec cannot be used: {problem}")
    return Decoder.PYAV, gpu, f"decoder pyav on the CPU (auto: {problem})"


def compile_problem(device: str) -> str | None:
    """Why ``torch.compile`` cannot work here, or None. Its first call builds native code: Triton's
    launcher (a C compiler) on CUDA, C++ kernels on the CPU; both need the Python headers."""
    compilers = ("cc", "gcc", "clang") if device.startswith("cuda") else ("c++", "g++", "clang++")
    if not any(shutil.which(c) for c in compilers):
        return f"no {'C' if device.startswith('cuda') else 'C++'} compiler ({', '.join(compilers)}) on the PATH"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "the Python headers (Python.h) are not installed"
    return None


def _torch(opts: ModelOptions, source: VisualSource, device: str, max_batch: int) -> tuple[FrameEncoder, str]:
    if source.visual is None:
        raise ModelLoadError("the torch backend runs weights, not an engine directory; use onnxruntime or tensorrt")
    precision, why = resolve_precision(opts.precision, device)
    if opts.compile:
        problem = compile_problem(device)
        if problem is not None:
            raise ModelLoadError(
                f"--compile (T4V_COMPILE) cannot work here: {problem}; install them "
                "(apt-get install gcc python3-dev) or serve without --compile"
            )
    clip_mean, clip_std = source.preprocess.mean, source.preprocess.std
    encoder = TorchFrameEncoder(
        source.visual,
        clip_mean,
        clip_std,
        device=device,
        precision=precision,
        max_batch_size=max_batch,
        compile=opts.compile,
    )
    return encoder, f"{'compiled' if opts.compile else 'eager'}, {why}"


def _engine(source: VisualSource, backend: str) -> tuple[Path, Manifest]:
    if source.engine_dir is None or source.manifest is None:
        raise ModelLoadError(f"the {backend} backend runs an exported engine: pass --engine DIR (t4v export)")
    return source.engine_dir, source.manifest


def _onnxruntime(opts: ModelOptions, source: VisualSource, device: str, max_batch: int) -> tuple[FrameEncoder, str]:
    directory, m = _engine(source, "onnxruntime")
    encoder = OnnxFrameEncoder(
        directory / m.files["onnx"],
        m.embed_dim,
        m.input_size,
        m.precision,  # type: ignore[arg-type]
        opts.providers,
        opts.threads,
        m.max_batch,
        device=device if device.startswith("cuda") else "cuda:0",
    )
    return encoder, f"precision {m.precision} (the engine's graph)"


def _tensorrt(opts: ModelOptions, source: VisualSource, device: str, max_batch: int) -> tuple[FrameEncoder, str]:
    directory, m = _engine(source, "tensorrt")
    if not m.plans:
        raise ModelLoadError(f"{directory} holds no TensorRT engine: export with --format tensorrt")
    require_tensorrt()
    gpu = device if device.startswith("cuda") else "cuda:0"
    key = plan_key(gpu)
    if key not in m.plans:
        raise ModelLoadError(
            f"{directory} holds no TensorRT plan for {key} (it has {', '.join(m.plans)}): "
            "build one here with t4v export --format tensorrt and the same options"
        )
    encoder = TensorRTFrameEncoder(
        directory / m.plans[key], m.embed_dim, m.input_size, m.max_batch, Precision(m.precision), device=gpu
    )
    return encoder, f"precision {m.precision} (the engine's graph)"


# backend name -> factory(options, source, device, max batch) -> (encoder, why its precision); an engine's
# backends split batches at the engine's own bound
BACKENDS: dict[str, Callable[[ModelOptions, VisualSource, str, int], tuple[FrameEncoder, str]]] = {
    "torch": _torch,
    "onnxruntime": _onnxruntime,
    "tensorrt": _tensorrt,
}


def choose_backend(asked: str, manifest: Manifest | None, device: str) -> tuple[str, str]:
    """The backend and why. Without an engine directory: torch. With one, ``auto`` takes TensorRT
    when the directory has a plan for this GPU model and TensorRT version, else ONNX Runtime."""
    if manifest is None:
        return ("torch", "torch: no engine directory given") if asked == "auto" else (asked, f"{asked} as asked")
    if asked != "auto":
        return asked, f"backend {asked} as asked"
    if not manifest.plans:
        return "onnxruntime", "ONNX Runtime: the engine directory holds no TensorRT plan"
    if tensorrt_version() is None:
        return "onnxruntime", "ONNX Runtime: the engine has TensorRT plans but TensorRT is not installed"
    if not device.startswith("cuda") or not tensorrt_available():
        return "onnxruntime", f"ONNX Runtime: TensorRT plans need a CUDA GPU (device {device})"
    key = plan_key(device)
    if key not in manifest.plans:
        return "onnxruntime", (
            f"ONNX Runtime: no TensorRT plan for {key} (the directory has "
            f"{', '.join(manifest.plans)}; t4v export --format tensorrt builds one)"
        )
    return "tensorrt", f"TensorRT plan {manifest.plans[key]} matches this GPU and TensorRT {tensorrt_version()}"


def _engine_text(opts: ModelOptions) -> LoadedClip | None:
    """An engine directory's own text encoder, when the options name no other CLIP."""
    if opts.engine_dir is None or opts.names_a_clip():
        return None
    manifest = Manifest.read(opts.engine_dir)
    text = manifest.files.get("text")
    if text is None:
        return None  # exported before engines carried it: the options' (default) CLIP, checked below
    log.info("text encoder: %s from %s", manifest.text_model, opts.engine_dir / text)
    return load_text_tower(opts.engine_dir / text)


def build_runtime(opts: ModelOptions, max_batch_size: int = 64) -> Runtime:
    """Load CLIP (its text tower encodes vocabularies), the visual encoder from weights or an
    engine directory, the backend that runs it (in calls of at most ``max_batch_size`` frames),
    and the head."""
    device = resolve_device(opts.device)
    clip = _engine_text(opts) or load_clip_for(opts)
    source = _engine_source(opts, clip) if opts.engine_dir is not None else _weights_source(opts, clip)
    backend, why = choose_backend(opts.backend, source.manifest, device)
    if backend not in BACKENDS:
        raise ModelLoadError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    try:
        encoder, precision_why = BACKENDS[backend](opts, source, device, max_batch_size)
    except BackendUnavailable as exc:
        raise ModelLoadError(str(exc)) from None
    if source.visual is not None:  # the weights as the backend runs them (cast to its precision): the fingerprint's
        source.weights_sha256 = weights_digest(source.visual, source.head)
    text_encoder = TextEncoder(clip, device=device)
    decoder, gpu, decoder_why = choose_decoder(opts.decoder, device)
    info = ModelInfo(
        arch=source.arch,
        model_id=clip.model_id,
        temporal=getattr(source.head, "kind", "mean"),
        preprocess=source.mode,
        backend=encoder.name,
        device=encoder.device,
        precision=encoder.precision,
        checkpoint=source.checkpoint,
        text_device=str(text_encoder.device),
        selection=f"{why}; {precision_why}; {decoder_why}" + _SCALED_BY[opts.scaler],
        weights_sha256=source.weights_sha256,
        activation=source.activation,
    )
    log.info(
        "model %s (%s head, %s preprocessing): %s on %s, %s; text encoder on %s. Why: %s",
        info.model_id,
        info.temporal,
        info.preprocess,
        info.backend,
        info.device,
        info.precision,
        info.text_device,
        info.selection,
    )
    pipeline = VideoPipeline(
        encoder, source.head, replace(source.preprocess, scaler=opts.scaler), decoder=decoder, gpu=gpu
    )
    return Runtime(pipeline, text_encoder, info)


def _weights_source(opts: ModelOptions, clip: LoadedClip) -> VisualSource:
    model = load_model(opts, clip)
    return VisualSource(
        arch=model.clip.arch,
        head=model.head,
        preprocess=model.preprocess,
        mode=model.mode.value,
        checkpoint=str(opts.text4vis_checkpoint) if opts.text4vis_checkpoint else None,
        visual=model.visual,
        activation=model.clip.activation,
    )


def _engine_source(opts: ModelOptions, text: LoadedClip) -> VisualSource:
    """An exported visual encoder + head; the text encoder is the CLIP named by the options, and it
    must be the one the engine was exported with (vocabularies are keyed on it), with the same
    activation."""
    directory = opts.engine_dir
    assert directory is not None
    manifest = Manifest.read(directory)
    if manifest.text_model != text.model_id:
        raise ModelLoadError(
            f"engine {directory} was exported with text model {manifest.text_model}, but the CLIP loaded for "
            f"text is {text.model_id}: refusing to pair them; load the CLIP the engine came from"
        )
    if manifest.activation and manifest.activation != text.activation:
        raise ModelLoadError(
            f"engine {directory} runs {manifest.activation}, but the text encoder loaded beside it runs "
            f"{text.activation}: refusing to pair them; load the CLIP the engine came from"
        )
    mode = opts.preprocess or manifest.preprocess
    mean, std = tuple(manifest.mean), tuple(manifest.std)
    preprocess = PreprocessConfig.for_mode(mode, manifest.input_size, mean, std)  # type: ignore[arg-type]
    return VisualSource(
        arch=manifest.architecture,
        head=load_head(directory, manifest),
        preprocess=preprocess,
        mode=mode,
        checkpoint=str(directory),
        engine_dir=directory,
        manifest=manifest,
        weights_sha256=manifest.weights_sha256,
        activation=manifest.activation or text.activation,
    )
