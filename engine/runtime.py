"""Assemble a ready pipeline from model options: the one place that knows every piece."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from engine.backends.base import BackendUnavailable, FrameEncoder, PixelEncoder, Precision
from engine.backends.onnx_backend import OnnxFrameEncoder
from engine.backends.tensorrt_backend import TensorRTFrameEncoder, tensorrt_available
from engine.backends.torch_backend import TorchFrameEncoder
from engine.export import ExportFormat, Manifest, export_engine, load_head
from engine.pipeline import VideoPipeline
from engine.preprocess import PreprocessConfig, PreprocessMode
from engine.video import Decoder
from models.checkpoint import apply_text4vis_checkpoint, read_text4vis_checkpoint
from models.clip_loader import ClipSource, LoadedClip, file_digest, load_clip
from models.errors import ModelLoadError
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
    precision: Precision = "fp32"
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
    encoder = TorchFrameEncoder(visual, clip.mean, clip.std, device=device, precision=opts.precision,
                                max_batch_size=opts.max_batch_size, compile=opts.compile)
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
        precision=opts.precision,
        checkpoint=str(opts.text4vis_checkpoint) if opts.text4vis_checkpoint else None,
        text_device=str(text_encoder.device),
    )
    log.info("model %s (%s head, %s preprocessing) on %s %s via %s; text encoder on %s", info.model_id,
             info.temporal, info.preprocess, info.device, info.precision, info.backend, info.text_device)
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
    backend = opts.backend
    if backend == "auto":
        backend = "tensorrt" if "tensorrt" in manifest.files and tensorrt_available() else "onnxruntime"
    mean = tuple(manifest.mean)
    std = tuple(manifest.std)
    encoder: FrameEncoder
    try:
        if backend == "tensorrt":
            if "tensorrt" not in manifest.files:
                raise ModelLoadError(f"{directory} holds no TensorRT engine: export with --format tensorrt")
            encoder = TensorRTFrameEncoder(
                directory / manifest.files["tensorrt"], manifest.embed_dim, manifest.input_size,
                manifest.max_batch, manifest.precision,  # type: ignore[arg-type]
                device=device if device.startswith("cuda") else "cuda:0",
            )
        elif backend == "onnxruntime":
            encoder = OnnxFrameEncoder(
                directory / manifest.files["onnx"], manifest.embed_dim, manifest.input_size,
                manifest.precision, opts.providers, opts.threads, manifest.max_batch,  # type: ignore[arg-type]
            )
        else:
            raise ModelLoadError(f"backend {backend!r} cannot run an engine directory; use onnxruntime or tensorrt")
    except BackendUnavailable as exc:
        raise ModelLoadError(str(exc)) from None
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
    )
    log.warning("engine %s: %s on %s (%s), %s head", directory, info.backend, info.device, info.precision,
                info.temporal)
    return Runtime(VideoPipeline(encoder, head, preprocess, decoder=opts.decoder), text_encoder, info)


def export_from_options(
    opts: ModelOptions, out: Path, fmt: ExportFormat = "onnx", precision: Precision = "fp32", max_batch: int = 64
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
    )
