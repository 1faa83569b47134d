"""``t4v``: the operator CLI. It is the composition root: it may import every layer."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from engine.classifier import Classifier
from engine.runtime import ModelOptions, build_runtime
from engine.sampling import parse_views
from engine.service import ClassifyResult, classify_files
from models.errors import InputError, ModelLoadError
from models.media import open_media
from models.preprocess import PreprocessMode
from models.presets import LABEL_PRESETS, preset_labels
from models.prompts import DEFAULT_TEMPLATE, TEMPLATE_SETS, read_labels, read_templates, validate_template

app = typer.Typer(add_completion=False, no_args_is_help=True, help="text4vis-serve operator CLI.")


class UsageProblem(Exception):
    """Bad command-line input found after parsing (missing file, empty label list, ...)."""


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what loads and runs.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


@app.command()
def classify(
    videos: Annotated[list[Path], typer.Argument(help="Videos or images to classify.", show_default=False)],
    model: Annotated[str | None, typer.Option(help="open_clip architecture (default ViT-B-16).")] = None,
    pretrained: Annotated[str | None, typer.Option(help="open_clip pretrained tag (default openai).")] = None,
    clip_checkpoint: Annotated[
        Path | None, typer.Option(help="Local CLIP weights (open_clip or OpenAI format).")
    ] = None,
    text4vis_checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint released with Text4Vis (visual + temporal head).")
    ] = None,
    temporal: Annotated[
        str | None, typer.Option(help="Temporal head: mean | transf (default: what the checkpoint holds).")
    ] = None,
    labels: Annotated[str | None, typer.Option(help='Comma-separated class names: "a,b,c".')] = None,
    labels_file: Annotated[Path | None, typer.Option(help=".csv (id,name) or .txt, one per line.")] = None,
    preset: Annotated[str | None, typer.Option(help=f"Built-in labels: {', '.join(LABEL_PRESETS)}.")] = None,
    template: Annotated[str | None, typer.Option(help=f'Prompt template (default "{DEFAULT_TEMPLATE}").')] = None,
    templates_file: Annotated[
        Path | None, typer.Option(help="Prompt templates, one per line (averaged: prompt ensemble).")
    ] = None,
    template_set: Annotated[
        str | None, typer.Option(help=f"Built-in templates: {', '.join(TEMPLATE_SETS)}.")
    ] = None,
    frames: Annotated[int, typer.Option(help="Frames sampled per clip (T).")] = 8,
    views: Annotated[str, typer.Option(help="CLIPSxCROPS: 1x1 or 4x3.")] = "1x1",
    preprocess: Annotated[
        str | None, typer.Option(help="clip | text4vis (default text4vis with a Text4Vis checkpoint).")
    ] = None,
    top_k: Annotated[int, typer.Option(help="Predictions to show; 0 = every label.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (fp16 on CUDA, fp32 on the CPU) | fp32 | fp16 | bf16.")] = "auto",
    decoder: Annotated[str, typer.Option(help="auto (decord, then PyAV) | decord | pyav.")] = "auto",
    random_init: Annotated[
        bool, typer.Option(help="Run RANDOM weights on purpose (benchmarks, tests). Never the default.")
    ] = False,
    engine: Annotated[Path | None, typer.Option(help="An engine directory written by t4v export.")] = None,
    backend: Annotated[str, typer.Option(help="auto | torch | onnxruntime | tensorrt.")] = "auto",
    providers: Annotated[
        str, typer.Option(help="onnxruntime providers in order of preference.")
    ] = "tensorrt,cuda,cpu",
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads (0: the cores).")] = 0,
) -> None:
    """Classify videos or images against class names given as text (zero-shot)."""
    try:
        clips, crops = _check_views(views)
        label_list = _labels(labels, labels_file, preset)
        templates = _templates(template, templates_file, template_set)
        options = _with_engine(
            _model_options(
                model, pretrained, clip_checkpoint, text4vis_checkpoint, temporal, preprocess, device,
                precision, decoder, random_init,
            ),
            engine, backend, providers, threads,
        )
        if top_k < 0:
            raise UsageProblem("--top-k must be 0 (all) or positive")
        for path in videos:  # fail before loading a model on inputs we can already tell are bad
            with open_media(path, options.decoder):
                pass
        runtime = build_runtime(options)
        classifier = Classifier.from_labels(runtime.text_encoder, label_list, templates)
    except (UsageProblem, InputError, ModelLoadError, ValueError) as exc:
        _fail(exc)
    results: list[ClassifyResult] = []
    failed = False
    for outcome in classify_files(runtime.pipeline, classifier, videos, frames=frames, clips=clips, crops=crops,
                                  top_k=top_k):
        if isinstance(outcome, InputError | ValueError):
            _error_line(outcome)
            failed = True
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            results.append(outcome)
    if as_json:
        typer.echo(json.dumps({"model": runtime.info.as_dict(), "results": [_result_json(r) for r in results]}))
    else:
        _print_tables(results)
    if failed:
        raise typer.Exit(2)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def train(ctx: typer.Context) -> None:
    """Fine-tune the visual encoder against a frozen text classifier: t4v train --config FILE [--field value ...].

    Every config field is a flag (t4v train --help lists them); torchrun runs it on several GPUs/nodes:
    torchrun --nproc_per_node 8 -m models.training.train --config FILE. With --export-engine the
    final checkpoint is exported to OUTPUT/engine (ONNX).
    """
    from models.training.config import flag_parser, parse_args
    from models.training.train import train as run

    if "--help" in ctx.args or "-h" in ctx.args:
        typer.echo(flag_parser().format_help())
        return
    try:
        cfg = parse_args(list(ctx.args))
        metrics = run(cfg)
    except (ModelLoadError, InputError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    typer.echo(json.dumps({k: v for k, v in metrics.items() if k != "step_losses"}))
    if cfg.export_engine:
        from engine.runtime import export_from_options

        options = ModelOptions(arch=cfg.arch, pretrained=None if cfg.clip_checkpoint or cfg.random_init else
                               cfg.pretrained, clip_checkpoint=cfg.clip_checkpoint, random_init=cfg.random_init,
                               text4vis_checkpoint=cfg.output / "last.pt")
        manifest = export_from_options(options, cfg.output / "engine")
        typer.echo(f"engine: {cfg.output / 'engine'} ({manifest.temporal} head)")


@app.command("eval")
def evaluate_command(
    checkpoint: Annotated[Path, typer.Argument(help="A Text4Vis-layout checkpoint (e.g. OUTPUT/last.pt).")],
    list_file: Annotated[Path, typer.Option("--list", help="'path label' lines or a folder per class.")],
    labels_file: Annotated[Path, typer.Option("--labels", help="Class names (.csv id,name or .txt).")],
    model: Annotated[str, typer.Option(help="open_clip architecture of the base CLIP.")] = "ViT-B-16",
    pretrained: Annotated[str | None, typer.Option(help="Pretrained tag of the base CLIP.")] = "openai",
    clip_checkpoint: Annotated[Path | None, typer.Option(help="Local base CLIP weights.")] = None,
    random_init: Annotated[bool, typer.Option(help="Random base CLIP (tests).")] = False,
    root: Annotated[Path | None, typer.Option(help="Prefix of relative paths in the list.")] = None,
    frames: Annotated[int, typer.Option(help="Frames per clip.")] = 8,
    views: Annotated[str, typer.Option(help="CLIPSxCROPS: 1x1 or 4x3.")] = "1x1",
    template: Annotated[list[str] | None, typer.Option(help="Prompt template(s).")] = None,
    predictions: Annotated[
        Path | None, typer.Option(help="Also write one JSON line per video: file, label, top-5 probabilities.")
    ] = None,
) -> None:
    """Top-1, top-5 and mean class accuracy of a checkpoint (single view or multi-view). It sees the
    pixels the server sees: its probabilities are the server's for the same clip and checkpoint."""
    from models.training.evaluate import evaluate_checkpoint

    try:
        clips, crops = _check_views(views)
        result = evaluate_checkpoint(
            checkpoint, list_file, labels_file, arch=model,
            pretrained=None if clip_checkpoint or random_init else pretrained, clip_checkpoint=clip_checkpoint,
            random_init=random_init, templates=template, frames=frames, clips=clips, crops=crops, root=root,
            predictions=predictions,
        )
    except (UsageProblem, ModelLoadError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    typer.echo(json.dumps(result))


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="Engine directory to write.")],
    model: Annotated[str | None, typer.Option(help="open_clip architecture (default ViT-B-16).")] = None,
    pretrained: Annotated[str | None, typer.Option(help="open_clip pretrained tag (default openai).")] = None,
    clip_checkpoint: Annotated[Path | None, typer.Option(help="Local CLIP weights.")] = None,
    text4vis_checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint released with Text4Vis.")] = None,
    temporal: Annotated[str | None, typer.Option(help="mean | transf (default: the checkpoint's).")] = None,
    preprocess: Annotated[str | None, typer.Option(help="clip | text4vis (recorded in the manifest).")] = None,
    random_init: Annotated[bool, typer.Option(help="Export RANDOM weights on purpose (benchmarks).")] = False,
    format: Annotated[str, typer.Option("--format", help="onnx | tensorrt (TensorRT also writes the ONNX).")] = "onnx",
    precision: Annotated[str, typer.Option(help="fp32 | fp16.")] = "fp32",
    max_batch: Annotated[int, typer.Option(help="Largest batch of frames (the dynamic axis' bound).")] = 64,
    force: Annotated[
        bool, typer.Option(help="Rewrite everything, even what OUT already holds for these weights.")
    ] = False,
) -> None:
    """Export the visual encoder (+ temporal head) to an engine directory that serve/classify run.

    Run again with --format tensorrt on each GPU model: what OUT holds for the same weights is
    kept, and a plan for this GPU and TensorRT version is added beside the others."""
    from engine.runtime import export_from_options

    try:
        options = _model_options(model, pretrained, clip_checkpoint, text4vis_checkpoint, temporal, preprocess,
                                 "cpu", "fp32", "auto", random_init)
        _choice("--format", format, ("onnx", "tensorrt"))
        _choice("--precision", precision, ("fp32", "fp16"))
        manifest = export_from_options(
            options, out, format, precision, max_batch, force=force  # type: ignore[arg-type]
        )
    except (UsageProblem, ModelLoadError, InputError, ValueError, RuntimeError) as exc:
        _fail(exc)
    files = [*manifest.files.values(), *manifest.plans.values()]
    typer.echo(f"wrote {out}: {', '.join(files)} ({manifest.architecture}, {manifest.temporal} "
               f"head, {manifest.precision}, batch 1..{manifest.max_batch})")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (T4V_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (T4V_PORT).")] = None,
    model: Annotated[str | None, typer.Option(help="open_clip architecture (T4V_MODEL).")] = None,
    pretrained: Annotated[str | None, typer.Option(help="open_clip pretrained tag (T4V_PRETRAINED).")] = None,
    clip_checkpoint: Annotated[Path | None, typer.Option(help="Local CLIP weights (T4V_CLIP_CHECKPOINT).")] = None,
    text4vis_checkpoint: Annotated[
        Path | None, typer.Option(help="Text4Vis checkpoint (T4V_TEXT4VIS_CHECKPOINT).")
    ] = None,
    temporal: Annotated[str | None, typer.Option(help="mean | transf (T4V_TEMPORAL).")] = None,
    preprocess: Annotated[str | None, typer.Option(help="clip | text4vis (T4V_PREPROCESS).")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda (T4V_DEVICE).")] = None,
    precision: Annotated[
        str | None, typer.Option(help="auto (fp16 on CUDA, fp32 on the CPU) | fp32 | fp16 | bf16 (T4V_PRECISION).")
    ] = None,
    random_init: Annotated[
        bool | None, typer.Option("--random-init", help="Serve RANDOM weights on purpose (T4V_RANDOM_INIT).")
    ] = None,
    redis_url: Annotated[str | None, typer.Option(help="Share vocabularies via Redis (T4V_REDIS_URL).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="SQLite store and uploads (T4V_DATA_DIR).")] = None,
    preset: Annotated[
        list[str] | None, typer.Option(help="Register a built-in vocabulary at start-up (T4V_PRESETS).")
    ] = None,
    vocab_file: Annotated[Path | None, typer.Option(help="Vocabularies to register (T4V_VOCAB_FILE).")] = None,
    max_upload_bytes: Annotated[int | None, typer.Option(help="T4V_MAX_UPLOAD_BYTES.")] = None,
    max_batch_frames: Annotated[int | None, typer.Option(help="T4V_MAX_BATCH_FRAMES.")] = None,
    max_delay_ms: Annotated[float | None, typer.Option(help="T4V_MAX_DELAY_MS.")] = None,
    max_queue_frames: Annotated[int | None, typer.Option(help="T4V_MAX_QUEUE_FRAMES.")] = None,
    decode_workers: Annotated[int | None, typer.Option(help="T4V_DECODE_WORKERS (0: threads).")] = None,
    max_decode_queue: Annotated[int | None, typer.Option(help="T4V_MAX_DECODE_QUEUE.")] = None,
    decoder: Annotated[str | None, typer.Option(help="auto | decord | pyav (T4V_DECODER).")] = None,
    max_labels: Annotated[int | None, typer.Option(help="T4V_MAX_LABELS.")] = None,
    default_frames: Annotated[int | None, typer.Option(help="T4V_DEFAULT_FRAMES.")] = None,
    max_frames: Annotated[int | None, typer.Option(help="T4V_MAX_FRAMES.")] = None,
    max_views: Annotated[str | None, typer.Option(help="T4V_MAX_VIEWS, e.g. 4x3.")] = None,
    request_timeout_s: Annotated[float | None, typer.Option(help="T4V_REQUEST_TIMEOUT_S.")] = None,
    shutdown_timeout_s: Annotated[int | None, typer.Option(help="T4V_SHUTDOWN_TIMEOUT_S.")] = None,
    engine_dir: Annotated[Path | None, typer.Option("--engine", help="Engine directory (T4V_ENGINE_DIR).")] = None,
    backend: Annotated[str | None, typer.Option(help="auto | torch | onnxruntime | tensorrt (T4V_BACKEND).")] = None,
    providers: Annotated[
        list[str] | None, typer.Option("--provider", help="onnxruntime provider, repeat in order (T4V_PROVIDERS).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="onnxruntime intra-op threads (T4V_THREADS).")] = None,
    compile: Annotated[
        bool | None, typer.Option("--compile", help="torch.compile the torch backend (T4V_COMPILE).")
    ] = None,
) -> None:
    """Start the HTTP server. Options override the T4V_* environment; see the README's table."""
    given = {k: v for k, v in locals().items() if v is not None}  # only what was passed
    import uvicorn
    from pydantic import ValidationError

    from server.app import create_app
    from server.settings import Settings

    if "preset" in given:
        given["presets"] = given.pop("preset")
    if "providers" in given:
        given["providers"] = tuple(given["providers"])
    try:
        settings = Settings(**given)
        runtime = build_runtime(settings.model_options())  # fail here, before binding the port
    except ValidationError as exc:
        _fail(ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())))
    except (ModelLoadError, ValueError) as exc:
        _fail(exc)
    uvicorn.run(
        create_app(settings, runtime), host=settings.host, port=settings.port,
        timeout_graceful_shutdown=settings.shutdown_timeout_s, log_level="info",
    )


def _error_line(exc: BaseException) -> None:
    """One line on stderr, never wrapped: scripts grep it."""
    message = " ".join(str(exc).split())
    sys.stderr.write(f"error: {message}\n")


def _fail(exc: BaseException) -> None:
    _error_line(exc)
    raise typer.Exit(2)


def _check_views(views: str) -> tuple[int, int]:
    try:
        return parse_views(views)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None


def _labels(labels: str | None, labels_file: Path | None, preset: str | None) -> list[str]:
    if sum(x is not None for x in (labels, labels_file, preset)) != 1:
        raise UsageProblem("give exactly one of --labels, --labels-file or --preset")
    if preset is not None:
        try:
            return preset_labels(preset)
        except KeyError as exc:
            raise UsageProblem(str(exc.args[0])) from None
    if labels_file is not None:
        if not labels_file.is_file():
            raise UsageProblem(f"labels file not found: {labels_file}")
        found = read_labels(labels_file)
    else:
        assert labels is not None
        found = [label.strip() for label in labels.split(",") if label.strip()]
    if not found:
        raise UsageProblem("the label list is empty")
    return found


def _templates(template: str | None, templates_file: Path | None, template_set: str | None) -> list[str]:
    given = [x for x in (template, templates_file, template_set) if x is not None]
    if len(given) > 1:
        raise UsageProblem("give at most one of --template, --templates-file, --template-set")
    if templates_file is not None:
        if not templates_file.is_file():
            raise UsageProblem(f"templates file not found: {templates_file}")
        found = read_templates(templates_file)
        if not found:
            raise UsageProblem(f"{templates_file} holds no templates")
        return found
    if template_set is not None:
        if template_set not in TEMPLATE_SETS:
            raise UsageProblem(f"unknown template set {template_set!r}; choose from {', '.join(TEMPLATE_SETS)}")
        return list(TEMPLATE_SETS[template_set])
    return [validate_template(template or DEFAULT_TEMPLATE)]


def _model_options(
    model: str | None, pretrained: str | None, clip_checkpoint: Path | None, text4vis_checkpoint: Path | None,
    temporal: str | None, preprocess: str | None, device: str, precision: str, decoder: str, random_init: bool,
) -> ModelOptions:
    for path in (clip_checkpoint, text4vis_checkpoint):
        if path is not None and not path.is_file():
            raise UsageProblem(f"checkpoint file not found: {path}")
    _choice("--temporal", temporal, ("mean", "transf"))
    _choice("--preprocess", preprocess, tuple(m.value for m in PreprocessMode))
    _choice("--precision", precision, ("auto", "fp32", "fp16", "bf16"))
    _choice("--decoder", decoder, ("auto", "decord", "pyav"))
    return ModelOptions(
        arch=model,
        pretrained=pretrained,
        clip_checkpoint=clip_checkpoint,
        text4vis_checkpoint=text4vis_checkpoint,
        temporal=temporal,  # type: ignore[arg-type]
        preprocess=PreprocessMode(preprocess) if preprocess else None,
        random_init=random_init,
        device=device,
        precision=precision,  # type: ignore[arg-type]
        decoder=decoder,  # type: ignore[arg-type]
    )


def _with_engine(
    options: ModelOptions, engine: Path | None, backend: str, providers: str, threads: int
) -> ModelOptions:
    if engine is not None and not (engine / "manifest.json").is_file():
        raise UsageProblem(f"{engine} is not an engine directory (no manifest.json): see t4v export")
    _choice("--backend", backend, ("auto", "torch", "onnxruntime", "tensorrt"))
    names = tuple(p.strip() for p in providers.split(",") if p.strip())
    for name in names:
        _choice("--providers", name, ("tensorrt", "cuda", "cpu"))
    return replace(options, engine_dir=engine, backend=backend, providers=names, threads=threads)


def _choice(flag: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise UsageProblem(f"{flag} must be one of {', '.join(allowed)}; got {value!r}")


def _result_json(result: ClassifyResult) -> dict[str, object]:
    return {
        "file": result.file,
        "frame_indices": result.frame_indices,
        "predictions": [
            {"label": p.label, "probability": p.probability, "score": p.score} for p in result.predictions
        ],
        "timing_ms": result.timing_ms,
    }


def _print_tables(results: list[ClassifyResult]) -> None:
    out = Console()
    for result in results:
        out.print(result.file, markup=False, highlight=False)
        table = Table()
        table.add_column("label")
        table.add_column("probability", justify="right")
        table.add_column("cosine", justify="right")
        for p in result.predictions:
            table.add_row(p.label, f"{p.probability:.4f}", f"{p.score:.4f}")
        out.print(table)


if __name__ == "__main__":  # pragma: no cover - python -m server.cli
    app()
