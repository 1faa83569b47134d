"""``t4v``: the operator CLI. It is the composition root: it may import every layer.

Heavy modules (torch, open_clip, the engine's runtime, the server) are imported inside the
commands that use them: ``t4v --help`` and argument errors answer at once, and decode worker
processes, which import this module as their main one, stay small.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import socket
import sys
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel

from text4vis.engine.options import ModelOptions
from text4vis.engine.vocab.validation import validate_templates
from text4vis.models.choices import ExportFormat, Precision, Sampling
from text4vis.models.cli_options import with_options
from text4vis.models.errors import InputError, ModelLoadError, T4VError
from text4vis.models.media import open_media
from text4vis.models.presets import LABEL_PRESETS
from text4vis.models.prompts import (
    DEFAULT_TEMPLATE,
    TEMPLATE_SETS,
    LabelFileWarning,
)
from text4vis.models.training.config import collect
from text4vis.server import cli_archive as archive_commands
from text4vis.server.cli_common import (
    UsageProblem,
    check_views,
    choice,
    error_line,
    fail,
    files_progress,
    label_args,
    one_line,
    template_args,
    validated,
)
from text4vis.server.settings import Settings

if TYPE_CHECKING:
    from text4vis.engine.flow.service import ClassifyResult

app = typer.Typer(add_completion=False, no_args_is_help=True, help="text4vis-serve operator CLI.")


M = TypeVar("M", bound=BaseModel)
# model options that say where and how a model runs, not which weights: export and eval ignore them
RUNTIME_ONLY = ("device", "precision", "decoder", "scaler", "engine_dir", "backend", "providers", "threads", "compile")


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what loads and runs.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


@app.command()
@with_options(ModelOptions)
def classify(
    videos: Annotated[list[Path], typer.Argument(help="Videos or images to classify.", show_default=False)],
    labels: Annotated[str | None, typer.Option(help='Comma-separated class names: "a,b,c".')] = None,
    labels_file: Annotated[Path | None, typer.Option(help=".csv (id,name) or .txt, one per line.")] = None,
    preset: Annotated[str | None, typer.Option(help=f"Built-in labels: {', '.join(LABEL_PRESETS)}.")] = None,
    template: Annotated[str | None, typer.Option(help=f'Prompt template (default "{DEFAULT_TEMPLATE}").')] = None,
    templates_file: Annotated[
        Path | None, typer.Option(help="Prompt templates, one per line (averaged: prompt ensemble).")
    ] = None,
    template_set: Annotated[str | None, typer.Option(help=f"Built-in templates: {', '.join(TEMPLATE_SETS)}.")] = None,
    frames: Annotated[int, typer.Option(help="Frames sampled per clip (T).")] = 8,
    views: Annotated[str, typer.Option(help="CLIPSxCROPS: 1x1 or 4x3.")] = "1x1",
    sampling: Annotated[
        Sampling, typer.Option(help="exact (the method's test-time frames) | fast (one cheap frame per segment).")
    ] = Sampling.EXACT,
    top_k: Annotated[int, typer.Option(help="Predictions to show; 0 = every label.")] = 5,
    clean_labels: Annotated[
        bool,
        typer.Option(
            "--clean-labels",
            help="Prompt cleaned-up labels (ApplyEyeMakeup -> apply eye makeup); by default labels "
            "are used as written, as the reference and its checkpoints do.",
        ),
    ] = False,
    abstain: Annotated[
        bool | None,
        typer.Option(
            "--abstain/--no-abstain",
            help='"None of these": also score the built-in background (Kinetics-400 names '
            "minus those close to yours) and abstain when it wins.",
        ),
    ] = None,
    abstain_margin: Annotated[
        float | None, typer.Option(help="Cosine margin the background must win by (default 0).")
    ] = None,
    min_score: Annotated[float | None, typer.Option(help="Abstain when the best label's cosine is below this.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    options: dict[str, Any] | None = None,
) -> None:
    """Classify videos or images against class names given as text (zero-shot)."""
    from text4vis.engine.request import AbstainPolicy, ClassifyRequest, ClipSpec, RequestLimits

    try:
        label_list = label_args(labels, labels_file, preset)
        templates = template_args(template, templates_file, template_set)
        model_options = validated(ModelOptions, options or {})
        request = ClassifyRequest(
            labels=tuple(label_list),
            templates=tuple(templates),
            clean_labels=clean_labels,
            clip=ClipSpec(frames, views, sampling),
            top_k=top_k,
            abstain=AbstainPolicy(abstain, abstain_margin, min_score),
        )
        limits = RequestLimits()  # the server's defaults: the same request is valid offline and over HTTP
        request.resolved(limits)  # the request's own errors, before a model loads
        unreadable = _unreadable(videos, model_options)  # files we can tell are bad without a model
        readable = [path for path in videos if path not in unreadable]
        if not readable:
            _report_failures(videos, unreadable, as_json)
        from text4vis.engine.flow.service import classify_files  # the heavy layers, once the arguments are good
        from text4vis.engine.runtime.build import build_runtime
        from text4vis.engine.vocab.registry import VocabRegistry
        from text4vis.engine.vocab.stores import SQLiteStore

        runtime = build_runtime(model_options)
        vocabularies = VocabRegistry(SQLiteStore(Path(":memory:")), runtime.text_encoder)
        vocabularies.ad_hoc(label_list, templates, clean_labels)  # refuses bad labels before any file decodes
    except (UsageProblem, InputError, ModelLoadError, ValueError) as exc:
        fail(exc)
    with files_progress(readable) as done:
        outcomes = classify_files(runtime.pipeline, vocabularies, request, readable, limits=limits, on_done=done)
    failures: dict[Path, BaseException] = dict(unreadable)
    results: dict[Path, ClassifyResult] = {}
    for path, outcome in zip(readable, outcomes, strict=True):
        if isinstance(outcome, InputError | ValueError):
            failures[path] = outcome
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            results[path] = outcome
    for path in videos:
        if path in failures:
            error_line(failures[path])
    if as_json:
        rows = [
            _result_json(results[p]) if p in results else {"file": str(p), "error": one_line(failures[p])}
            for p in videos
        ]
        typer.echo(json.dumps({"model": runtime.info.as_dict(), "results": rows}))
    else:
        _print_tables([results[p] for p in videos if p in results])
    if failures:  # every file that could be classified was; the failures said so above
        raise typer.Exit(1)


def _unreadable(videos: list[Path], options: ModelOptions) -> dict[Path, InputError]:
    """The files that are not a video or image we can open (missing, empty, garbage, past a limit)."""
    found: dict[Path, InputError] = {}
    for path in videos:
        try:
            with open_media(path, options.decoder):
                pass
        except InputError as exc:
            found[path] = exc
    return found


def _report_failures(videos: list[Path], failures: dict[Path, InputError], as_json: bool) -> NoReturn:
    """No file can be classified: each one's error, then exit 1 (without loading a model)."""
    for path in videos:
        error_line(failures[path])
    if as_json:
        typer.echo(json.dumps({"results": [{"file": str(p), "error": one_line(failures[p])} for p in videos]}))
    raise typer.Exit(1)


vocab_app = typer.Typer(no_args_is_help=True, help="Vocabularies offline.")
app.add_typer(vocab_app, name="vocab")


@vocab_app.command("lint")
@with_options(ModelOptions, exclude=("text4vis_checkpoint", "temporal", "preprocess", *RUNTIME_ONLY))
def vocab_lint(
    labels_file: Annotated[Path, typer.Argument(help="Labels: .txt, .csv with a name column, or .json.")],
    template: Annotated[list[str] | None, typer.Option(help="Prompt template(s) (default the reference's).")] = None,
    clean_labels: Annotated[bool, typer.Option("--clean-labels", help="Lint the cleaned-up labels' prompts.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    options: dict[str, Any] | None = None,
) -> None:
    """What PUT /vocab would warn about, before sending it: labels the classifier will likely
    confuse (near duplicates, too-similar prompts) and prompts over the text encoder's limit
    (which the server refuses). Exit 0 with no finding, 1 with findings."""
    try:
        with warnings.catch_warnings(record=True) as header:
            warnings.simplefilter("always", LabelFileWarning)
            labels = label_args(None, labels_file, None)
        templates = validate_templates(template)
        base = validated(ModelOptions, {**(options or {}), "device": "cpu"})
        from text4vis.engine.runtime.loading import load_clip_for
        from text4vis.engine.vocab.lint import lint_labels
        from text4vis.models.text_encoder import TextEncoder

        report = lint_labels(TextEncoder(load_clip_for(base)), labels, templates, clean_labels)
    except (UsageProblem, InputError, ModelLoadError, ValueError) as exc:
        fail(exc)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "labels": report.labels,
                    "warnings": [
                        {"kind": w.kind, "labels": list(w.labels), "cosine": round(w.cosine, 4)}
                        for w in report.warnings
                    ],
                    "too_long": [{"label": t.label, "prompt": t.prompt, "tokens": t.tokens} for t in report.too_long],
                }
            )
        )
    else:
        for t in report.too_long:
            typer.echo(f"too long: {t.prompt!r} is {t.tokens} tokens; the text encoder takes {report.limit}")
        for w in report.warnings:
            typer.echo(f"{w.kind.replace('_', ' ')}: {w.labels[0]!r} and {w.labels[1]!r} (cosine {w.cosine:.3f})")
        typer.echo(f"{report.labels} labels: {len(report.warnings)} warnings, {len(report.too_long)} prompts too long")
    if report.warnings or report.too_long or header:
        raise typer.Exit(1)


@app.command("train", help=collect.__doc__)
@functools.wraps(collect)
def train(**kwargs: Any) -> None:
    """Fine-tune the visual encoder against a frozen text classifier: t4v train --config FILE [--field value ...].

    Every config field is a flag; torchrun runs the same on several GPUs or nodes:
    torchrun --nproc_per_node 8 -m text4vis.models.training.train --config FILE. With --export-engine the
    final checkpoint is exported to OUTPUT/engine (ONNX)."""
    from text4vis.models.training.train import train as run

    logging.getLogger("text4vis.models.training").setLevel(logging.INFO)  # each epoch's loss, without -v
    try:
        cfg = collect(**kwargs)
        metrics = run(cfg)
    except (ModelLoadError, InputError, ValueError, FileNotFoundError) as exc:
        fail(exc)
    typer.echo(json.dumps({k: v for k, v in metrics.items() if k != "step_losses"}))
    if cfg.export_engine:
        from text4vis.engine.runtime.export import export_from_options

        options = ModelOptions(
            model=cfg.model,
            pretrained=cfg.pretrained,
            clip_checkpoint=cfg.clip_checkpoint,
            activation=cfg.activation,
            random_init=cfg.random_init,
            text4vis_checkpoint=cfg.output / "last.pt",
        )
        manifest = export_from_options(options, cfg.output / "engine")
        typer.echo(f"engine: {cfg.output / 'engine'} ({manifest.temporal} head)")


@app.command("eval")
@with_options(ModelOptions, exclude=("text4vis_checkpoint", "temporal", "preprocess", *RUNTIME_ONLY))
def evaluate_command(
    checkpoint: Annotated[Path, typer.Argument(help="A Text4Vis-layout checkpoint (e.g. OUTPUT/last.pt).")],
    list_files: Annotated[
        list[Path],
        typer.Option(
            "--list", help="'path label' lines or a folder per class; repeat it with --labels for several splits."
        ),
    ],
    labels_files: Annotated[
        list[Path],
        typer.Option("--labels", help="Class names (.csv id,name or .txt), one per --list, in the same order."),
    ],
    root: Annotated[Path | None, typer.Option(help="Prefix of relative paths in the list.")] = None,
    frames: Annotated[int, typer.Option(help="Frames per clip.")] = 8,
    views: Annotated[str, typer.Option(help="CLIPSxCROPS: 1x1 or 4x3.")] = "1x1",
    template: Annotated[list[str] | None, typer.Option(help="Prompt template(s).")] = None,
    predictions: Annotated[
        Path | None, typer.Option(help="Also write one JSON line per video: file, label, top-5 probabilities.")
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(
            help="standard, or zeroshot-halves: also the mean +- std top-1 over 10 random half-class splits "
            "(UCF-101/HMDB-51, as the reference)."
        ),
    ] = "standard",
    options: dict[str, Any] | None = None,
) -> None:
    """Top-1, top-5 and mean class accuracy of a checkpoint (single view or multi-view). It sees the
    pixels the server sees: its probabilities are the server's for the same clip and checkpoint.
    Several --list/--labels pairs (the three 160-class Kinetics-600 zero-shot splits) print each
    split and the mean +- std over them, as the paper reports them."""
    from text4vis.models.training.evaluate import evaluate_checkpoint

    try:
        clips, crops = check_views(views)
        if protocol not in ("standard", "zeroshot-halves"):
            raise UsageProblem(f"--protocol must be standard or zeroshot-halves; got {protocol!r}")
        if len(list_files) != len(labels_files):
            raise UsageProblem(
                f"give one --labels per --list: {len(list_files)} lists, {len(labels_files)} label files"
            )
        base = validated(ModelOptions, options or {})
        source = base.clip_source(checkpoint=checkpoint)  # a run's checkpoint finds its own base
        result = evaluate_checkpoint(
            checkpoint,
            list(zip(list_files, labels_files, strict=True)),
            clip_source=source,
            templates=template,
            frames=frames,
            clips=clips,
            crops=crops,
            root=root,
            predictions=predictions,
            half_splits=10 if protocol == "zeroshot-halves" else 0,
        )
    except (UsageProblem, ModelLoadError, ValueError, FileNotFoundError) as exc:
        fail(exc)
    if "splits" in result:
        for number, split in enumerate(result["splits"], 1):
            sys.stderr.write(
                f"split {number}: top-1 {100 * split['top1']:.2f}%, top-5 {100 * split['top5']:.2f}% "
                f"({split['videos']} videos)\n"
            )
        sys.stderr.write(
            f"{len(result['splits'])} splits: top-1 {100 * result['top1_mean']:.2f} +- "
            f"{100 * result['top1_std']:.2f}%, top-5 {100 * result['top5_mean']:.2f} +- "
            f"{100 * result['top5_std']:.2f}%\n"
        )
    elif protocol == "zeroshot-halves":
        sys.stderr.write(
            f"zero-shot: full-class top-1 {100 * result['top1']:.2f}%; 10 half-class splits "
            f"{100 * result['half_splits_mean']:.2f} +- {100 * result['half_splits_std']:.2f}%\n"
        )
    typer.echo(json.dumps(result))


@app.command()
@with_options(ModelOptions, exclude=RUNTIME_ONLY)
def export(
    out: Annotated[Path, typer.Option(help="Engine directory to write.")],
    format: Annotated[
        ExportFormat, typer.Option("--format", help="onnx | tensorrt (TensorRT also writes the ONNX).")
    ] = ExportFormat.ONNX,
    graph_precision: Annotated[str, typer.Option("--precision", help="fp32 | fp16 (the graph's precision).")] = "fp32",
    max_batch: Annotated[int, typer.Option(help="Largest batch of frames (the dynamic axis' bound).")] = 64,
    force: Annotated[
        bool, typer.Option(help="Rewrite everything, even what OUT already holds for these weights.")
    ] = False,
    options: dict[str, Any] | None = None,
) -> None:
    """Export the visual encoder (+ temporal head) to an engine directory that serve/classify run.

    Run again with --format tensorrt on each GPU model: what OUT holds for the same weights is
    kept, and a plan for this GPU and TensorRT version is added beside the others."""
    from text4vis.engine.runtime.export import export_from_options

    # its stages (minutes on a CPU), without -v
    logging.getLogger("text4vis.engine.runtime.export").setLevel(logging.INFO)
    try:
        model_options = validated(ModelOptions, {**(options or {}), "device": "cpu"})
        choice("--precision", graph_precision, ("fp32", "fp16"))  # an exported graph is never bf16 or auto
        manifest = export_from_options(model_options, out, format, Precision(graph_precision), max_batch, force=force)
    except (UsageProblem, ModelLoadError, InputError, ValueError, RuntimeError) as exc:
        fail(exc)
    files = [*manifest.files.values(), *manifest.plans.values()]
    typer.echo(
        f"wrote {out}: {', '.join(files)} ({manifest.architecture}, {manifest.temporal} "
        f"head, {manifest.precision}, batch 1..{manifest.max_batch})"
    )


keys_app = typer.Typer(no_args_is_help=True, help="API keys.")
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new() -> None:
    """A new random API key and its SHA-256 digest: give the key to the client, put the digest
    in the file T4V_API_KEY_FILE names (one per line; the server never stores the key)."""
    import secrets

    from text4vis.server.auth import key_digest

    key = "t4v_" + secrets.token_urlsafe(32)
    typer.echo(f"key:    {key}")
    typer.echo(f"digest: {key_digest(key)}")


@app.command()
@with_options(Settings, env=True)
def serve(options: dict[str, Any] | None = None) -> None:
    """Start the HTTP server. Options override the T4V_* environment; see the README's table."""
    import uvicorn

    from text4vis.engine.runtime.build import build_runtime
    from text4vis.server.app import create_app

    logging.getLogger().setLevel(logging.INFO)  # a server's log says what it loads and runs
    for name in Settings.unknown_variables():
        logging.getLogger(__name__).warning("%s is set but is no setting of t4v serve: ignored", name)
    try:
        settings = validated(Settings, options or {})
        _check_port(settings.host, settings.port)  # a busy port fails in a second, not after the model loads
        from text4vis.engine.archive.store import Archive

        if settings.redis_url:
            _check_redis(settings.redis_url)
        _check_data_dir(settings)
        Archive(settings.archive_location())  # an archive that cannot be opened: one line, before the model loads
        runtime = build_runtime(settings.model_options(), settings.max_batch_frames)
    except (T4VError, ValueError, OSError) as exc:
        fail(exc)
    app = create_app(settings, runtime)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:  # SIGTERM, SIGINT
            app.state.server.begin_shutdown()  # streamed answers end with an error line
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    from text4vis.server.connections import head_deadline_protocol

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=head_deadline_protocol(settings.header_timeout_s),  # h11, with a deadline for each request's head
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        log_level="info",
    )
    if hasattr(signal, "SIGHUP"):  # read the API key file again (a revoked key), as nginx reloads
        signal.signal(signal.SIGHUP, lambda _sig, _frame: app.state.server.reload_keys())
    Server(config).run()


def _check_port(host: str, port: int) -> None:
    """Bind ``host:port`` once and let go: taken now, it fails before the model loads (uvicorn
    binds it again once the model is loaded)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (--port, T4V_PORT)") from None


def _check_data_dir(settings: Settings) -> None:
    """The upload spool and the SQLite store can be written (a read-only data dir, a corrupt
    vocab.db): one line now, not a server that answers 503 to everything after the model loads."""
    spool = settings.data_dir / "uploads"
    try:
        spool.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=spool, prefix=".probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or exc
        raise OSError(f"the data directory {settings.data_dir} is not writable: {reason} (--data-dir)") from None
    if not settings.redis_url:
        from text4vis.engine.vocab.stores import SQLiteStore

        SQLiteStore(settings.data_dir / "vocab.db").close()


def _check_redis(url: str) -> None:
    """Reach Redis before loading a model: an unreachable --redis-url fails in seconds, in one line."""
    from text4vis.engine.vocab.stores import RedisStore

    RedisStore(url).close()


def _result_json(result: ClassifyResult) -> dict[str, object]:
    def predictions(items: list[Any]) -> list[dict[str, object]]:
        return [{"label": p.label, "probability": p.probability, "score": p.score} for p in items]

    out: dict[str, object] = {
        "file": result.file,
        "frame_indices": result.frame_indices,
        "predictions": predictions(result.predictions),
        "timing_ms": result.timing_ms,
    }
    if result.abstention is not None:
        out.update(
            abstained=result.abstention.abstained,
            abstain_reason=result.abstention.reason,
            background=predictions(result.abstention.background),
        )
    return out


def _print_tables(results: list[ClassifyResult]) -> None:
    from rich.console import Console
    from rich.table import Table

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
        if result.abstention is not None and result.abstention.abstained:
            out.print(f"none of these: {result.abstention.reason}", markup=False, highlight=False)


archive_commands.register(app)  # t4v index, t4v relabel, t4v search


if __name__ == "__main__":  # pragma: no cover - python -m text4vis.server.cli
    app()
