"""Engine directories: the visual encoder compiled (ONNX, TensorRT), the temporal head, a manifest.

```
DIR/manifest.json         what was exported, from which weights, with which tools
DIR/visual.onnx           uint8 pixels [batch, 3, S, S] -> float32 embeddings [batch, D]; batch is dynamic
DIR/visual.onnx.data      the graph's weights, when the exporter keeps them outside (large models)
DIR/visual.<key>.plan     TensorRT engines (format tensorrt), one profile 1 / max/2 / max, one per
                          GPU model and TensorRT version (<key>, e.g. nvidia-h200_trt10.16.1.11)
DIR/head.pt               the temporal head: {"kind", "layers", "heads", "state_dict"} (runs in torch: tiny)
DIR/text.pt               CLIP's text tower (t4v export writes it): a server of this directory needs
                          neither the hub nor the base checkpoint to encode vocabularies
DIR/ort-trt-cache/<key>/  ONNX Runtime's TensorRT engine cache, written by the server
```
The graph takes uint8 crops and normalizes inside: a quarter of the bytes to move to a GPU,
and the normalization constants travel with the engine instead of living in server config.
An fp16 export is an fp16 graph, so every runtime (ONNX Runtime, TensorRT 10 and 11 with strongly
typed networks) takes the precision from the graph.

Exporting again into the same directory keeps what already matches (the same weights, precision,
batch bound and input size) and only adds what is missing, typically the plan for this GPU: that
is how compose's one-shot ``engine`` service builds a plan once per GPU model and TensorRT version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from text4vis.engine.options import ModelOptions
from text4vis.engine.runtime.backends.base import DTYPES, PixelEncoder, Precision
from text4vis.engine.runtime.backends.tensorrt_backend import build_engine, plan_key, require_tensorrt, tensorrt_version
from text4vis.engine.runtime.loading import LoadedModel, load_model
from text4vis.models.choices import ExportFormat
from text4vis.models.clip_loader import TEXT_FILE, file_digest, save_text_tower
from text4vis.models.errors import ModelLoadError
from text4vis.models.temporal import build_temporal_head

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class Manifest:
    architecture: str
    text_model: str  # the CLIP whose text encoder vocabularies must come from
    embed_dim: int
    input_size: int
    input: dict[str, str]
    mean: list[float]
    std: list[float]
    preprocess: str
    temporal: str
    temporal_layers: int
    precision: str
    max_batch: int
    files: dict[str, str]
    weights_sha256: str
    source: dict[str, str | None]
    tools: dict[str, str]
    created_at: str
    format_version: int = FORMAT_VERSION
    notes: list[str] = field(default_factory=list)
    plans: dict[str, str] = field(default_factory=dict)  # plan_key() -> TensorRT plan file
    activation: str = ""  # quickgelu | gelu (engines exported before it was recorded: "")

    def write(self, directory: Path) -> None:
        tmp = directory / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(directory / MANIFEST)  # a server reading it never sees half a file

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST
        if not path.is_file():
            raise ModelLoadError(f"{directory} is not an engine directory (no {MANIFEST})")
        try:
            data = json.loads(path.read_text())
            manifest = cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ModelLoadError(f"{path} is not a valid manifest: {exc}") from None
        if manifest.format_version != FORMAT_VERSION:
            raise ModelLoadError(f"{path} has format_version {manifest.format_version}; this build reads 1")
        return manifest


def weights_digest(*modules: nn.Module) -> str:
    h = hashlib.sha256()
    for module in modules:
        for key, value in sorted(module.state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("torch", "open-clip-torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    trt = tensorrt_version()  # the module's version: the distribution is tensorrt-cu12, tensorrt-cu13, ...
    if trt is not None:
        out["tensorrt"] = trt
    return out


def export_onnx(encoder: PixelEncoder, path: Path, input_size: int, max_batch: int) -> None:
    example = torch.zeros(2, 3, input_size, input_size, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder,
            (example,),
            str(path),
            input_names=["pixels"],
            output_names=["embeddings"],
            dynamic_shapes={"pixels": {0: batch}},
            dynamo=True,
            optimize=True,
            verbose=False,
        )


def export_engine(
    visual: nn.Module,
    head: nn.Module,
    out: Path,
    *,
    architecture: str,
    text_model: str,
    activation: str,
    input_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    preprocess: str,
    fmt: ExportFormat = ExportFormat.ONNX,
    precision: Precision = Precision.FP32,
    max_batch: int = 64,
    source: dict[str, str | None] | None = None,
    force: bool = False,
) -> Manifest:
    """Write an engine directory for ``visual`` + ``head``; TensorRT builds from the ONNX graph.

    What ``out`` already holds for the same weights, precision, batch bound and input size is kept
    (unless ``force``): only the missing parts are written, e.g. the plan for this GPU."""
    if precision == "bf16":
        raise ValueError("bf16 engines are not supported; export fp32 or fp16")
    if not 1 <= max_batch <= 4096:
        raise ValueError("max_batch must be 1..4096")
    if fmt == "tensorrt":  # before minutes of export work: TensorRT and the GPU the plan will run on
        require_tensorrt()
        plan_key()
    out.mkdir(parents=True, exist_ok=True)
    visual = visual.eval() if precision == "fp32" else _copy_as(visual.eval(), DTYPES[precision])
    digest = weights_digest(visual, head)  # of the weights the graph holds (after the cast): the fingerprint's
    manifest = None if force else _reusable(out, digest, precision, max_batch, input_size, text_model)
    if manifest is None:
        manifest = _export_onnx_and_head(
            visual,
            head,
            out,
            digest,
            architecture=architecture,
            text_model=text_model,
            activation=activation,
            input_size=input_size,
            mean=mean,
            std=std,
            preprocess=preprocess,
            precision=precision,
            max_batch=max_batch,
            source=source or {},
        )
    else:
        log.info(
            "%s already holds these weights (%s, batch 1..%d): keeping its ONNX graph and head",
            out,
            precision,
            max_batch,
        )
    if fmt == "tensorrt":
        key = plan_key()
        plan = manifest.plans.get(key)
        if plan is not None and (out / plan).is_file():
            log.info("%s already has the TensorRT plan for %s: %s", out, key, plan)
        else:
            plan = f"visual.{key}.plan"
            t0 = time.perf_counter()
            build_engine(out / manifest.files["onnx"], out / plan, input_size, max_batch)
            log.info("TensorRT plan %s: %.1f s", plan, time.perf_counter() - t0)
            manifest.plans[key] = plan
        manifest.tools = {**manifest.tools, **_versions()}
    manifest.write(out)
    return manifest


def _reusable(
    out: Path, digest: str, precision: str, max_batch: int, input_size: int, text_model: str
) -> Manifest | None:
    try:
        old = Manifest.read(out)
    except ModelLoadError:
        return None
    same = (old.weights_sha256, old.precision, old.max_batch, old.input_size, old.text_model) == (
        digest,
        precision,
        max_batch,
        input_size,
        text_model,
    )
    files_there = all((out / name).is_file() for name in old.files.values())
    return old if same and files_there else None


def _export_onnx_and_head(
    visual: nn.Module,
    head: nn.Module,
    out: Path,
    digest: str,
    *,
    architecture: str,
    text_model: str,
    activation: str,
    input_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    preprocess: str,
    precision: Precision,
    max_batch: int,
    source: dict[str, str | None],
) -> Manifest:
    """``visual``: already in ``precision`` (its digest is ``digest``)."""
    for stale in [*out.glob("visual.*.plan"), out / "visual.onnx.data"]:
        stale.unlink(missing_ok=True)  # plans and weights of what this directory held before
    shutil.rmtree(out / "ort-trt-cache", ignore_errors=True)
    encoder = PixelEncoder(visual, mean, std).eval()
    files = {"onnx": "visual.onnx", "head": "head.pt"}
    t0 = time.perf_counter()
    log.info("exporting the visual encoder to ONNX (%s); a ViT-B takes a minute or two on a CPU", precision)
    export_onnx(encoder, out / files["onnx"], input_size, max_batch)
    log.info("ONNX export: %.1f s", time.perf_counter() - t0)
    if (out / "visual.onnx.data").is_file():
        files["onnx_data"] = "visual.onnx.data"
    kind = getattr(head, "kind", "mean")
    layers = len(getattr(getattr(head, "transformer", None), "resblocks", [])) or 6
    heads = getattr(head, "heads", None)
    torch.save(
        {"kind": str(kind), "layers": layers, "heads": heads, "state_dict": head.state_dict()}, out / files["head"]
    )
    return Manifest(
        architecture=architecture,
        text_model=text_model,
        embed_dim=int(getattr(visual, "output_dim")),  # noqa: B009
        input_size=input_size,
        input={"name": "pixels", "dtype": "uint8", "layout": "NCHW, RGB"},
        mean=list(mean),
        std=list(std),
        preprocess=preprocess,
        temporal=kind,
        temporal_layers=layers,
        precision=precision,
        max_batch=max_batch,
        files=files,
        weights_sha256=digest,
        source=source,
        tools=_versions(),
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        activation=activation,
    )


def load_head(directory: Path, manifest: Manifest) -> nn.Module:
    saved: dict[str, Any] = torch.load(directory / manifest.files["head"], map_location="cpu", weights_only=True)
    if saved["kind"] == "transf" and saved.get("heads") is None:
        # guessing embed // 64 is wrong for RN50 (d 1024, 8 heads): the count comes from the text width
        raise ModelLoadError(
            f"{directory} was exported before engines recorded the transf head's attention heads; "
            "export it again with t4v export"
        )
    head = build_temporal_head(saved["kind"], manifest.embed_dim, layers=saved["layers"], heads=saved.get("heads"))
    head.load_state_dict(saved["state_dict"])
    return head.eval()


def _copy_as(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    import copy

    return copy.deepcopy(module).to(dtype)


def export_from_options(
    opts: ModelOptions,
    out: Path,
    fmt: ExportFormat = ExportFormat.ONNX,
    precision: Precision = Precision.FP32,
    max_batch: int = 64,
    force: bool = False,
) -> Manifest:
    """Load what ``opts`` names (as ``t4v classify`` would, on the CPU) and write an engine directory."""
    log.info("loading the model to export")
    model = load_model(opts)
    manifest = _export_visual(model, opts, out, fmt, precision, max_batch, force)
    if "text" not in manifest.files or not (out / manifest.files["text"]).is_file():
        log.info("writing the text encoder beside the engine (%s)", model.clip.model_id)
        save_text_tower(model.clip, out / TEXT_FILE)
        manifest.files["text"] = TEXT_FILE
        manifest.write(out)
    return manifest


def _export_visual(
    model: LoadedModel,
    opts: ModelOptions,
    out: Path,
    fmt: ExportFormat,
    precision: Precision,
    max_batch: int,
    force: bool,
) -> Manifest:
    cfg = model.preprocess
    checkpoint = opts.text4vis_checkpoint
    source: dict[str, str | None] = {
        "clip": model.clip.model_id,
        "text4vis_checkpoint": str(checkpoint) if checkpoint else None,
        "text4vis_checkpoint_sha256": file_digest(checkpoint, 64) if checkpoint else None,
    }
    return export_engine(
        model.visual,
        model.head,
        out,
        architecture=model.clip.arch,
        text_model=model.clip.model_id,
        activation=model.clip.activation,
        input_size=cfg.crop,
        mean=cfg.mean,
        std=cfg.std,
        preprocess=model.mode.value,
        fmt=fmt,
        precision=precision,
        max_batch=max_batch,
        source=source,
        force=force,
    )
