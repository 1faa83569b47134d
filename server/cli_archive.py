"""``t4v index``, ``t4v relabel`` and ``t4v search``: the archive offline (``engine/archive/``).

Each opens the archive's table of the model the options name and the frames and views given
(the same defaults as ``t4v serve``): embeddings of another model or sampling are never mixed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from text4vis.engine.options import ModelOptions
from text4vis.engine.request import ClassifyRequest, ClipSpec, RequestLimits, ResolvedClip
from text4vis.models.choices import Sampling
from text4vis.models.cli_options import with_options
from text4vis.models.errors import InputError, T4VError
from text4vis.models.presets import LABEL_PRESETS
from text4vis.server.cli_common import (
    UsageProblem,
    error_line,
    fail,
    files_progress,
    label_args,
    template_args,
    validated,
)

if TYPE_CHECKING:
    from text4vis.engine.runtime.build import Runtime

DEFAULT_ARCHIVE = "data/archive"  # where `t4v serve` keeps it with the default data_dir
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".gif", ".jpg", ".jpeg", ".png"}

Archive_ = Annotated[str, typer.Option("--archive", help="LanceDB directory or URI (s3://...).")]
Frames = Annotated[int, typer.Option(help="Frames sampled per clip (T): part of the archive's fingerprint.")]
Views = Annotated[str, typer.Option(help="CLIPSxCROPS: part of the archive's fingerprint.")]
Sampling_ = Annotated[Sampling, typer.Option(help="exact | fast: part of the archive's fingerprint.")]


def register(app: typer.Typer) -> None:
    app.command("index")(index)
    app.command("relabel")(relabel)
    app.command("search")(search)


def _clip(frames: int, views: str, sampling: Sampling) -> ResolvedClip:
    return ClassifyRequest(labels=("-",), clip=ClipSpec(frames, views, sampling)).resolved(RequestLimits())


def _runtime(options: dict[str, Any] | None) -> Runtime:
    from text4vis.engine.runtime.build import build_runtime

    return build_runtime(validated(ModelOptions, options or {}))


def _files(paths: list[Path]) -> list[Path]:
    """Files as given; folders walked for videos and images (sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise UsageProblem(f"no such file or folder: {path}")
    if not found:
        raise UsageProblem("no video or image files found in " + ", ".join(map(str, paths)))
    return found


@with_options(ModelOptions)
def index(
    paths: Annotated[list[Path], typer.Argument(help="Videos, images or folders of them.", show_default=False)],
    archive: Archive_ = DEFAULT_ARCHIVE,
    windows: Annotated[
        float | None, typer.Option(help="Also store one row per window of this many seconds (search inside videos).")
    ] = None,
    frames: Frames = 8,
    views: Views = "1x1",
    sampling: Sampling_ = Sampling.EXACT,
    ray: Annotated[
        str | None,
        typer.Option(
            help='Index on Ray Data: a Ray cluster\'s address, or "local" to start Ray on this machine '
            "(pip install 'text4vis-serve[distributed]')."
        ),
    ] = None,
    options: dict[str, Any] | None = None,
) -> None:
    """Store the video embedding of each file (and of its windows) in the archive, once: a file
    already stored (same bytes) is skipped, so a stopped run resumes. Files that cannot be decoded
    are reported and skipped; exit 1 at the end if any failed."""
    from text4vis.engine.archive.indexer import index_files
    from text4vis.engine.archive.search import open_table
    from text4vis.engine.archive.store import Archive

    try:
        clip = _clip(frames, views, sampling)
        files = _files(paths)
        runtime = _runtime(options)
        table = open_table(Archive(archive), runtime, clip, create=True)
    except (T4VError, ValueError) as exc:
        fail(exc)
    t0 = time.perf_counter()
    with files_progress(files, "indexed") as done:
        if ray is None:
            outcomes = index_files(
                runtime.pipeline, table, files, ClipSpec(frames, views, sampling), windows_s=windows, on_done=done
            )
        else:
            outcomes = _on_ray(ray, options, table, files, clip, runtime, windows, done)
    if table.ensure_index():  # from INDEX_MIN_ROWS rows on: IVF-PQ (once; later runs bring it up to date)
        table.optimize()
    failed = [(p, o) for p, o in zip(files, outcomes, strict=True) if isinstance(o, BaseException)]
    for path, problem in failed:
        if not isinstance(problem, InputError | ValueError):
            raise problem
        error_line(problem if path.name in str(problem) else InputError(f"{path}: {problem}"))
    new = sum(o.rows for o in outcomes if not isinstance(o, BaseException))
    skipped = sum(1 for o in outcomes if not isinstance(o, BaseException) and o.skipped)
    seconds = time.perf_counter() - t0
    sys.stderr.write(
        f"{len(files) - len(failed) - skipped} files indexed, {skipped} already stored, {len(failed)} failed; "
        f"{new} new rows in {table.name} ({table.count()} in all) in {seconds:.1f} s\n"
    )
    if failed:
        raise typer.Exit(1)


def _on_ray(
    address: str,
    options: dict[str, Any] | None,
    table: Any,
    files: list[Path],
    clip: ResolvedClip,
    runtime: Runtime,
    windows: float | None,
    done: Any,
) -> list[Any]:
    try:
        from text4vis.engine.archive.distributed import index_on_ray
    except ImportError as exc:
        fail(UsageProblem(f"--ray needs Ray Data: pip install 'text4vis-serve[distributed]' ({exc})"))
    model_options = validated(ModelOptions, options or {})
    started, first = time.perf_counter(), list[float]()

    def each() -> None:
        if not first:
            first.append(time.perf_counter())
        done()

    try:
        outcomes = index_on_ray(
            address, model_options, table, files, clip, runtime.pipeline.preprocess, windows_s=windows, on_done=each
        )
    except (T4VError, ValueError, ConnectionError) as exc:
        fail(exc)
    if first:  # Ray's start, its workers' imports and the actors' model loads, then the steady rate
        steady = time.perf_counter() - first[0]
        sys.stderr.write(
            f"Ray: the first file done after {first[0] - started:.1f} s, the other {len(files) - 1} in {steady:.1f} s\n"
        )
    return outcomes
    raise AssertionError("unreachable")


@with_options(ModelOptions)
def relabel(
    archive: Archive_ = DEFAULT_ARCHIVE,
    labels: Annotated[str | None, typer.Option(help='Comma-separated class names: "a,b,c".')] = None,
    labels_file: Annotated[Path | None, typer.Option(help=".csv (id,name) or .txt, one per line.")] = None,
    preset: Annotated[str | None, typer.Option(help=f"Built-in labels: {', '.join(LABEL_PRESETS)}.")] = None,
    template: Annotated[str | None, typer.Option(help="Prompt template (default the reference's).")] = None,
    templates_file: Annotated[Path | None, typer.Option(help="Prompt templates, one per line.")] = None,
    template_set: Annotated[str | None, typer.Option(help="Built-in templates.")] = None,
    top_k: Annotated[int, typer.Option(help="Predictions per row; 0 = every label.")] = 5,
    kind: Annotated[str, typer.Option(help="video | window | all: which rows.")] = "video",
    abstain: Annotated[
        bool | None, typer.Option("--abstain/--no-abstain", help='"None of these" against the built-in background.')
    ] = None,
    min_score: Annotated[float | None, typer.Option(help="Abstain when the best cosine is below this.")] = None,
    out: Annotated[
        Path | None, typer.Option(help=".parquet, .csv or .jsonl, by the extension (default: JSON lines on stdout).")
    ] = None,
    frames: Frames = 8,
    views: Views = "1x1",
    sampling: Sampling_ = Sampling.EXACT,
    options: dict[str, Any] | None = None,
) -> None:
    """Predictions for every stored video under a vocabulary, without decoding anything: the
    probabilities /classify gives the same files."""
    from text4vis.engine.archive.relabel import output_format, relabel_batches, write, write_jsonl
    from text4vis.engine.archive.search import open_table
    from text4vis.engine.archive.store import Archive
    from text4vis.engine.request import AbstainPolicy
    from text4vis.engine.vocab.registry import VocabRegistry
    from text4vis.engine.vocab.stores import SQLiteStore

    try:
        if kind not in ("video", "window", "all"):
            raise UsageProblem(f"--kind must be video, window or all; got {kind!r}")
        if out is not None:
            output_format(out)
        label_list = label_args(labels, labels_file, preset)
        templates = template_args(template, templates_file, template_set)
        clip = _clip(frames, views, sampling)
        runtime = _runtime(options)
        table = open_table(Archive(archive), runtime, clip)
        registry = VocabRegistry(SQLiteStore(Path(":memory:")), runtime.text_encoder)
        classifier = registry.ad_hoc(label_list, templates)
        policy = AbstainPolicy(abstain, None, min_score).resolved(None)
        background = registry.background(classifier) if policy.score_background else None
    except (T4VError, ValueError) as exc:
        fail(exc)
    t0 = time.perf_counter()
    batches = relabel_batches(table.embeddings(None if kind == "all" else kind), classifier, top_k, policy, background)
    if out is None:
        rows = 0
        for batch in batches:
            write_jsonl(batch, sys.stdout)
            rows += batch.num_rows
    else:
        rows = write(batches, out)
    seconds = time.perf_counter() - t0
    where = f" to {out}" if out else ""
    sys.stderr.write(f"relabelled {rows} rows{where} in {seconds:.2f} s ({rows / max(seconds, 1e-9):,.0f} rows/s)\n")


@with_options(ModelOptions)
def search(
    text: Annotated[str, typer.Argument(help='What to look for, e.g. "surfing".', show_default=False)],
    archive: Archive_ = DEFAULT_ARCHIVE,
    k: Annotated[int, typer.Option("--k", help="How many results.")] = 10,
    windows: Annotated[bool, typer.Option("--windows", help="Search windows (with times), not videos.")] = False,
    template: Annotated[str | None, typer.Option(help="Prompt template for the text.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    frames: Frames = 8,
    views: Views = "1x1",
    sampling: Sampling_ = Sampling.EXACT,
    options: dict[str, Any] | None = None,
) -> None:
    """The stored videos (or windows) nearest a text, by the cosine of their embeddings."""
    from text4vis.engine.archive.search import open_table, search_text
    from text4vis.engine.archive.store import Archive

    try:
        templates = template_args(template, None, None)
        clip = _clip(frames, views, sampling)
        runtime = _runtime(options)
        table = open_table(Archive(archive), runtime, clip)
        hits = search_text(table, runtime.text_encoder, text, k, "window" if windows else "video", templates)
    except (T4VError, ValueError) as exc:
        fail(exc)
    for hit in hits:
        row = hit.row
        if as_json:
            typer.echo(json.dumps({**row, "score": hit.score}))
        else:
            times = f" {row['start_s']:.1f}-{row['end_s']:.1f} s" if row["kind"] == "window" else ""
            typer.echo(f"{hit.score:.4f}  {row['name']}{times}  {row['id'][:12]}")
    if not hits:
        sys.stderr.write(f"the archive's table {table.name} is empty\n")
