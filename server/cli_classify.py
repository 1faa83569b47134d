"""``t4v classify``: files against class names given as text, offline, through the server's own
engine (``engine/facade.py``): the same request object, decoders, batcher and scoring."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from text4vis.engine.options import ModelOptions
from text4vis.models.choices import Sampling
from text4vis.models.cli_options import with_options
from text4vis.models.errors import InputError, T4VError
from text4vis.models.media import open_media
from text4vis.models.presets import LABEL_PRESETS
from text4vis.models.prompts import DEFAULT_TEMPLATE, TEMPLATE_SETS
from text4vis.server.cli_common import (
    DEFAULT_ARCHIVE,
    Examples_,
    FewShot_,
    error_line,
    fail,
    files_progress,
    label_args,
    one_line,
    template_args,
    validated,
)
from text4vis.server.cli_examples import load_examples

if TYPE_CHECKING:
    from text4vis.engine.facade import ClassifyResult


def register(app: typer.Typer) -> None:
    app.command()(classify)


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
    examples: Examples_ = None,
    few_shot: FewShot_ = "auto",
    archive: Annotated[str, typer.Option(help="Where --examples' archive ids are read.")] = DEFAULT_ARCHIVE,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    options: dict[str, Any] | None = None,
) -> None:
    """Classify videos or images against class names given as text (zero-shot), or, with
    --examples, against those names and a few labelled videos (few-shot, no training)."""
    from text4vis.engine.request import AbstainPolicy, ClassifyRequest, ClipSpec, FewShotAsk, RequestLimits

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
        request.check(limits)  # the request's own errors, before a model loads
        unreadable = _unreadable(videos, model_options)  # files we can tell are bad without a model
        readable = [path for path in videos if path not in unreadable]
        if not readable:
            _report_failures(videos, unreadable, as_json)
        from text4vis.engine.offline import classify_files  # the heavy layers, once the arguments are good
        from text4vis.engine.runtime.build import build_runtime
        from text4vis.engine.vocab.registry import VocabRegistry
        from text4vis.engine.vocab.stores.sqlite import SQLiteStore

        ask = FewShotAsk(few_shot)
        runtime = build_runtime(model_options)
        vocabularies = VocabRegistry(SQLiteStore(Path(":memory:")), runtime.text_encoder)
        vocabularies.ad_hoc(label_list, templates, clean_labels)  # refuses bad labels before any file decodes
        if examples is not None:
            shots = load_examples(examples, runtime, archive, request.check(limits), ask)
            request = replace(request, examples=shots)
            vocabularies.with_examples(vocabularies.ad_hoc(label_list, templates, clean_labels), shots)
    except (T4VError, ValueError) as exc:
        fail(exc)
    with files_progress(readable) as done:
        outcomes = classify_files(runtime, vocabularies, request, readable, limits=limits, on_done=done)
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
