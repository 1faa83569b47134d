"""Assemble a ready pipeline from model options: the one place that knows every piece."""

from __future__ import annotations

import logging
import shutil
import sysconfig
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from engine.backends.base import BackendUnavailable, FrameEncoder, PixelEncoder, Precision
from engine.backends.onnx_backend import OnnxFrameEncoder
from engine.backends.tensorrt_backend import (
    TensorRTFrameEncoder,
    plan_key,
    require_tensorrt,
    tensorrt_available,
    tensorrt_version,
)
from engine.backends.torch_backend import TorchFrameEncoder
from engine.export import ExportFormat, Manifest, export_engine, load_head
from engine.pipeline import VideoPipeline
from models.checkpoint import apply_text4vis_checkpoint, read_text4vis_checkpoint
from models.clip_loader import ClipSource, LoadedClip, file_digest, load_clip
from models.errors import ModelLoadError
from models.media import Decoder
from models.preprocess import PreprocessConfig, PreprocessMode
from models.temporal import HeadKind, build_temporal_head
from models.text_encoder import TextEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelOptions:
    """What to run. Defaults: ViT-B-16 with OpenAI weights, mean head, CLIP preprocessing."""

    arch: str | None = None
    pretrained: str | None = None
    clip_checkpoint: Path | None = None
    text4vis_checkpoint: Path | None = None
    temporal: HeadKind | None = None  # None: what the checkpoint holds (mean without one)
    preprocess: PreprocessMode | None = None  # None: text4vis with a Text4Vis checkpoint, else clip
    random_init: bool = False
    device: str = "auto"
    precision: Precision | Literal["auto"] = "auto"  # auto: fp16 on CUDA, fp32 on the CPU
    decoder: Decoder = "auto"
    max_batch_size: int = 64
    engine_dir: Path | None = None  # an exported engine directory (t4v export)
    backend: str = "auto"  # auto | torch | onnxruntime | tensorrt
    providers: tuple[str, ...] = ("tensorrt", "cuda", "cpu")  # onnxruntime, in order of preference
    threads: int = 0  # onnxruntime intra-op threads (0: the cores)
    compile: bool = False  # torch.compile the torch backend


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
    selection: str  # why this backend and precision run, in words

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


@dataclass
class Runtime:
    pipeline: VideoPipeline
    text_encoder: TextEncoder
    info: ModelInfo


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_precision(precision: str, device: str) -> tuple[Precision, str]:
    """``auto`` is fp16 on CUDA (the precision OpenAI's CLIP weights were trained in; within the
    tested tolerance of fp32, see bench/gpu_check.sh) and fp32 on the CPU. Returns it and why."""
    if precision != "auto":
        return precision, f"precision {precision} as asked"  # type: ignore[return-value]
    if device.startswith("cuda"):
        return "fp16", "precision fp16 (auto on CUDA)"
    return "fp32", "precision fp32 (auto on the CPU)"


def compile_problem(device: str) -> str | None:
    """Why ``torch.compile`` cannot work here, or None. Its first call builds native code: Triton's
    launcher (a C compiler) on CUDA, C++ kernels on the CPU; both need the Python headers."""
    compilers = ("cc", "gcc", "clang") if device.startswith("cuda") else ("c++", "g++", "clang++")
    if not any(shutil.which(c) for c in compilers):
        return f"no {'C' if device.startswith('cuda') else 'C++'} compiler ({', '.join(compilers)}) on the PATH"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "the Python headers (Python.h) are not installed"
    return None


def build_runtime(opts: ModelOptions) -> Runtime:
    """Load CLIP (and a Text4Vis checkpoint on top), build the head and the torch backend."""
    device = resolve_device(opts.device)
    clip = load_clip(
        ClipSource(opts.arch, opts.pretrained, opts.clip_checkpoint, opts.random_init), device="cpu"
    )
    if opts.engine_dir is not None:
        return _engine_runtime(opts, clip, device)
    if opts.backend not in ("auto", "torch"):
        raise ModelLoadError(f"the {opts.backend} backend runs an exported engine: pass --engine DIR (t4v export)")
    visual: torch.nn.Module = clip.model.visual
    if opts.text4vis_checkpoint is not None:
        ckpt = read_text4vis_checkpoint(opts.text4vis_checkpoint)
        head = apply_text4vis_checkpoint(visual, ckpt, opts.temporal)
        default_mode = PreprocessMode.TEXT4VIS
    else:
        if opts.temporal == "transf":
            raise ModelLoadError(
                "the transf head needs trained weights, which only a Text4Vis checkpoint holds: "
                "pass --text4vis-checkpoint PATH or use --temporal mean"
            )
        head = build_temporal_head("mean", clip.embed_dim)
        default_mode = PreprocessMode.CLIP
    mode = PreprocessMode(opts.preprocess or default_mode)
    precision, why = resolve_precision(opts.precision, device)
    if opts.compile:
        problem = compile_problem(device)
        if problem is not None:
            raise ModelLoadError(f"--compile (T4V_COMPILE) cannot work here: {problem}; install them "
                                 "(apt-get install gcc python3-dev) or serve without --compile")
    encoder = TorchFrameEncoder(visual, clip.mean, clip.std, device=device, precision=precision,
                                max_batch_size=opts.max_batch_size, compile=opts.compile)
    why = f"torch backend ({'compiled' if opts.compile else 'eager'}; no engine directory given), {why}"
    pipeline = VideoPipeline(
        encoder,
        head,
        PreprocessConfig.for_mode(mode, clip.image_size, clip.mean, clip.std),
        decoder=opts.decoder,
    )
    text_encoder = TextEncoder(clip, device=device)
    info = ModelInfo(
        arch=clip.arch,
        model_id=clip.model_id,
        temporal=getattr(head, "kind", "mean"),
        preprocess=mode.value,
        backend=encoder.name,
        device=device,
        precision=precision,
        checkpoint=str(opts.text4vis_checkpoint) if opts.text4vis_checkpoint else None,
        text_device=str(text_encoder.device),
        selection=why,
    )
    log.info("model %s (%s head, %s preprocessing) on %s %s via %s; text encoder on %s. Why: %s", info.model_id,
             info.temporal, info.preprocess, info.device, info.precision, info.backend, info.text_device, why)
    return Runtime(pipeline, text_encoder, info)


def _engine_runtime(opts: ModelOptions, clip: LoadedClip, device: str) -> Runtime:
    """An exported visual encoder + head; the text encoder is the CLIP named by the options, and it
    must be the one the engine was exported with (vocabularies are keyed on it)."""
    assert opts.engine_dir is not None
    directory = opts.engine_dir
    manifest = Manifest.read(directory)
    if manifest.text_model != clip.model_id:
        raise ModelLoadError(
            f"engine {directory} was exported with text model {manifest.text_model}, but the CLIP loaded for "
            f"text is {clip.model_id}: refusing to pair them; load the CLIP the engine came from"
        )
    head = load_head(directory, manifest)
    backend, why = choose_engine_backend(opts.backend, manifest, device)
    gpu = device if device.startswith("cuda") else "cuda:0"
    encoder: FrameEncoder
    try:
        if backend == "tensorrt":
            if not manifest.plans:
                raise ModelLoadError(f"{directory} holds no TensorRT engine: export with --format tensorrt")
            require_tensorrt()
            key = plan_key(gpu)
            if key not in manifest.plans:
                raise ModelLoadError(f"{directory} holds no TensorRT plan for {key} (it has {', '.join(manifest.plans)}"
                                     "): build one here with t4v export --format tensorrt and the same options")
            encoder = TensorRTFrameEncoder(
                directory / manifest.plans[key], manifest.embed_dim, manifest.input_size,
                manifest.max_batch, manifest.precision, device=gpu,  # type: ignore[arg-type]
            )
        elif backend == "onnxruntime":
            encoder = OnnxFrameEncoder(
                directory / manifest.files["onnx"], manifest.embed_dim, manifest.input_size,
                manifest.precision, opts.providers, opts.threads, manifest.max_batch,  # type: ignore[arg-type]
                device=gpu,
            )
        else:
            raise ModelLoadError(f"backend {backend!r} cannot run an engine directory; use onnxruntime or tensorrt")
    except BackendUnavailable as exc:
        raise ModelLoadError(str(exc)) from None
    mean = tuple(manifest.mean)
    std = tuple(manifest.std)
    preprocess = PreprocessConfig(
        resize=manifest.input_size * 256 // 224 if manifest.preprocess == "text4vis" else manifest.input_size,
        crop=manifest.input_size, mean=mean, std=std,  # type: ignore[arg-type]
    )
    if opts.preprocess is not None and opts.preprocess != manifest.preprocess:
        preprocess = PreprocessConfig.for_mode(opts.preprocess, manifest.input_size, mean, std)  # type: ignore[arg-type]
    text_encoder = TextEncoder(clip, device=device)
    info = ModelInfo(
        arch=manifest.architecture, model_id=clip.model_id, temporal=manifest.temporal,
        preprocess=opts.preprocess or manifest.preprocess, backend=encoder.name, device=encoder.device,
        precision=manifest.precision, checkpoint=str(directory), text_device=str(text_encoder.device),
        selection=f"{why}; precision {manifest.precision} (the engine's graph)",
    )
    log.warning("engine %s: %s on %s (%s), %s head; text encoder on %s. Why: %s", directory, info.backend,
                info.device, info.precision, info.temporal, info.text_device, info.selection)
    return Runtime(VideoPipeline(encoder, head, preprocess, decoder=opts.decoder), text_encoder, info)


def choose_engine_backend(asked: str, manifest: Manifest, device: str) -> tuple[str, str]:
    """The backend for an engine directory and why: ``auto`` takes TensorRT when the directory has a
    plan for this GPU model and TensorRT version, else ONNX Runtime (its own TensorRT/CUDA providers)."""
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
        return "onnxruntime", (f"ONNX Runtime: no TensorRT plan for {key} (the directory has "
                               f"{', '.join(manifest.plans)}; t4v export --format tensorrt builds one)")
    return "tensorrt", f"TensorRT plan {manifest.plans[key]} matches this GPU and TensorRT {tensorrt_version()}"


def export_from_options(
    opts: ModelOptions, out: Path, fmt: ExportFormat = "onnx", precision: Precision = "fp32", max_batch: int = 64,
    force: bool = False,
) -> Manifest:
    """Load what ``opts`` names (as ``t4v classify`` would, on the CPU) and write an engine directory."""
    runtime = build_runtime(replace(opts, device="cpu", precision="fp32", backend="torch", engine_dir=None))
    encoder = runtime.pipeline.encoder
    assert isinstance(encoder, TorchFrameEncoder)
    pixel_encoder = encoder.module
    assert isinstance(pixel_encoder, PixelEncoder)
    cfg = runtime.pipeline.preprocess
    source: dict[str, str | None] = {
        "clip": runtime.info.model_id,
        "text4vis_checkpoint": str(opts.text4vis_checkpoint) if opts.text4vis_checkpoint else None,
        "text4vis_checkpoint_sha256": file_digest(opts.text4vis_checkpoint, 64) if opts.text4vis_checkpoint else None,
    }
    return export_engine(
        pixel_encoder.visual, runtime.pipeline.head, out, architecture=runtime.info.arch,
        text_model=runtime.info.model_id, input_size=cfg.crop, mean=cfg.mean, std=cfg.std,
        preprocess=runtime.info.preprocess, fmt=fmt, precision=precision, max_batch=max_batch, source=source,
        force=force,
    )
