"""``t4v index``, ``t4v relabel``, ``t4v search`` and ``t4v archive``: the archive offline
(``engine/archive/``), through the same engine as the server (``engine/facade.py``).

Each opens the archive's table of the model the options name and the frames and views given
(the same defaults as ``t4v serve``): embeddings made differently are never mixed.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from text4vis.engine.options import ModelOptions
from text4vis.engine.request import (
    AbstainPolicy,
    ClassifyRequest,
    ClipSpec,
    FewShotAsk,
    IndexRequest,
    RequestLimits,
    ResolvedClip,
)
from text4vis.models.choices import Sampling
from text4vis.models.cli_options import with_options
from text4vis.models.errors import InputError, T4VError
from text4vis.models.presets import LABEL_PRESETS
from text4vis.server.cli_common import (
    DEFAULT_ARCHIVE,
    Examples_,
    FewShot_,
    UsageProblem,
    error_line,
    fail,
    files_progress,
    label_args,
    template_args,
    validated,
)
from text4vis.server.cli_examples import load_examples

if TYPE_CHECKING:
    from text4vis.engine.archive.store import Archive, ArchiveTable
    from text4vis.engine.facade import Engine
    from text4vis.engine.runtime.build import Runtime

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".gif", ".jpg", ".jpeg", ".png"}

Archive_ = Annotated[str, typer.Option("--archive", help="LanceDB directory or URI (s3://...).")]
Frames = Annotated[int, typer.Option(help="Frames sampled per clip (T): part of the archive's fingerprint.")]
Views = Annotated[str, typer.Option(help="CLIPSxCROPS: part of the archive's fingerprint.")]
Sampling_ = Annotated[Sampling, typer.Option(help="exact | fast: part of the archive's fingerprint.")]


archive_app = typer.Typer(no_args_is_help=True, help="The archive's tables: check them, drop one.")


def register(app: typer.Typer) -> None:
    app.command("index")(index)
    app.command("relabel")(relabel)
    app.command("search")(search)
    app.add_typer(archive_app, name="archive")


def _clip(frames: int, views: str, sampling: Sampling) -> ResolvedClip:
    return ClipSpec(frames, views, sampling).resolve(RequestLimits())


def _runtime(options: dict[str, Any] | None) -> Runtime:
    from text4vis.engine.runtime.build import build_runtime

    return build_runtime(validated(ModelOptions, options or {}))


def _archive(uri: str) -> Archive:
    from text4vis.engine.archive.store import open_archive

    return open_archive(uri)


def _engine(options: dict[str, Any] | None, uri: str) -> Engine:
    """The engine ``t4v relabel`` and ``t4v search`` read through (vocabularies in memory)."""
    from text4vis.engine.facade import Engine
    from text4vis.engine.vocab.registry import VocabRegistry
    from text4vis.engine.vocab.stores.sqlite import SQLiteStore

    runtime = _runtime(options)
    return Engine(runtime, VocabRegistry(SQLiteStore(Path(":memory:")), runtime.text_encoder), _archive(uri))


def _files(paths: list[Path]) -> list[Path]:
    """Files as given; folders walked for videos and images (sorted); absolute, so a row leads back
    to its file from anywhere."""
    found: list[Path] = []
    for path in paths:
        path = path.resolve()
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
    from text4vis.engine.archive.spec import ArchiveSpec
    from text4vis.engine.offline import index_files

    request = IndexRequest(ClipSpec(frames, views, sampling), windows)
    try:
        clip = _clip(frames, views, sampling)
        files = _files(paths)
        store = _archive(archive)
        runtime = None if ray is not None else _runtime(options)  # Ray's actors build their own
    except (T4VError, ValueError) as exc:
        fail(exc)
    t0 = time.perf_counter()
    try:
        with files_progress(files, "indexed") as done:
            if runtime is not None:
                outcomes = index_files(runtime, store, files, request, on_done=done)
                table = store.table(ArchiveSpec.of(runtime, clip))
            else:
                assert ray is not None
                outcomes, table = _on_ray(ray, options, store, files, clip, request, done)
    except KeyboardInterrupt:
        sys.stderr.write(
            "interrupted: the files indexed before the stop are stored (each with its windows); run the same "
            "command again to go on: stored files are skipped, not decoded again\n"
        )
        raise typer.Exit(130) from None
    table.maintain()  # from INDEX_MIN_ROWS rows on: the vector index (once; later runs bring it up to date)
    failed = [(p, o) for p, o in zip(files, outcomes, strict=True) if isinstance(o, BaseException)]
    for path, problem in failed:
        if not isinstance(problem, InputError | ValueError):
            raise problem
        error_line(problem if path.name in str(problem) else InputError(f"{path}: {problem}"))
    sys.stderr.write(_summary(files, outcomes, table, time.perf_counter() - t0) + "\n")
    if failed:
        raise typer.Exit(1)


def _summary(files: list[Path], outcomes: list[Any], table: ArchiveTable, seconds: float) -> str:
    """What the run did, in one line: files indexed, skipped (already stored) and failed; rows
    added; what was added to stored files (windows, names, metadata) without decoding them."""
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    skipped = [o for o in done if o.skipped]
    windowed = sum(1 for o in done if not o.skipped and o.rows and o.rows == o.windows)  # stored: only windows added
    failed = len(outcomes) - len(done)
    parts = [
        f"{len(done) - len(skipped) - windowed} files indexed, {len(skipped)} already stored, {failed} failed",
        f"{sum(o.rows for o in done)} new rows ({table.count()} in {table.name})",
    ]
    if windowed:
        parts.append(f"windows added to {windowed} stored files")
    names = sum(o.names_added for o in skipped)
    if names:
        parts.append(f"{names} stored files seen under a new name (recorded, not decoded)")
    updated = sum(1 for o in done if o.metadata_updated)
    if updated:
        parts.append(f"metadata of {updated} stored files updated")
    return "; ".join(parts) + f"; {seconds:.1f} s"


def _on_ray(
    address: str,
    options: dict[str, Any] | None,
    archive: Archive,
    files: list[Path],
    clip: ResolvedClip,
    request: IndexRequest,
    done: Any,
) -> tuple[list[Any], ArchiveTable]:
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
        outcomes, table = index_on_ray(address, model_options, archive, files, clip, request, on_done=each)
    except (T4VError, ValueError, ConnectionError) as exc:
        fail(exc)
    if first:  # Ray's start, its workers' imports and the actors' model loads, then the steady rate
        steady = time.perf_counter() - first[0]
        sys.stderr.write(
            f"Ray: the first file done after {first[0] - started:.1f} s, the other {len(files) - 1} in {steady:.1f} s\n"
        )
    return outcomes, table


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
    with_embeddings: Annotated[
        bool,
        typer.Option(
            "--with-embeddings", help="Also write each row's stored embedding (Parquet: a fixed-size list; JSON lines)."
        ),
    ] = False,
    examples: Examples_ = None,
    few_shot: FewShot_ = "auto",
    frames: Frames = 8,
    views: Views = "1x1",
    sampling: Sampling_ = Sampling.EXACT,
    options: dict[str, Any] | None = None,
) -> None:
    """Predictions for every stored video under a vocabulary, without decoding anything: the
    probabilities /classify gives the same files. With --examples, the labels and a few labelled
    videos (few-shot)."""
    from text4vis.engine.archive.relabel import output_format, write, write_jsonl

    try:
        if kind not in ("video", "window", "all"):
            raise UsageProblem(f"--kind must be video, window or all; got {kind!r}")
        if out is not None and output_format(out) == ".csv" and with_embeddings:
            raise UsageProblem("--with-embeddings writes .parquet or .jsonl (a CSV cell holds no vector)")
        ask = FewShotAsk(few_shot)
        request = ClassifyRequest(
            labels=tuple(label_args(labels, labels_file, preset)),
            templates=tuple(template_args(template, templates_file, template_set)),
            clip=ClipSpec(frames, views, sampling),
            top_k=top_k,
            abstain=AbstainPolicy(abstain, None, min_score),
        )
        clip = _clip(frames, views, sampling)  # the options' own errors, before a model loads
        engine = _engine(options, archive)
        if examples is not None:
            request = replace(request, examples=load_examples(examples, engine.runtime, archive, clip, ask))
        batches = engine.relabel_blocking(request, None if kind == "all" else kind, with_embeddings=with_embeddings)
    except (T4VError, ValueError) as exc:
        fail(exc)
    t0 = time.perf_counter()
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
    try:
        templates = template_args(template, None, None)
        clip = _clip(frames, views, sampling)
        engine = _engine(options, archive)
        kind = "window" if windows else "video"
        hits = engine.search_blocking(text, clip, k=k, kind=kind, templates=templates)
        table = engine.table_blocking(clip)
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


@archive_app.command("check")
@with_options(ModelOptions)
def archive_check(
    archive: Archive_ = DEFAULT_ARCHIVE,
    verify: Annotated[
        int,
        typer.Option(
            help="Also embed again, under the model the options name, up to this many stored videos per table of "
            "that model whose file is still where its name says, and compare (0: list the tables only)."
        ),
    ] = 0,
    options: dict[str, Any] | None = None,
) -> None:
    """Every table of the archive: how its rows were made, how many there are, and whether they may
    be mixed (a table written before the fingerprint named the activation, precision and backend).
    With --verify N, stored videos are embedded again and compared. Exit 1 when a table may hold
    rows made differently or a verified row differs."""
    try:
        store = _archive(archive)
        specs = store.specs()
        runtime = _runtime(options) if verify > 0 else None
    except (T4VError, ValueError) as exc:
        fail(exc)
    if not specs:
        typer.echo(f"{store.uri}: no tables yet (t4v index)")
        return
    suspect = 0
    for spec in specs:
        table = store.table(spec)
        counts = table.stats()
        typer.echo(f"{spec.describe()}: {counts.videos} videos, {counts.windows} windows")
        if spec.legacy:
            suspect += 1
            typer.echo(
                "  written before the fingerprint named the activation, precision and backend: it may hold rows "
                "made differently. Index the files again under the model you run (a new table), then "
                f"t4v archive drop {spec.fingerprint}"
            )
        if runtime is not None and spec.text_model == runtime.info.model_id:
            suspect += _verify(runtime, table, verify)
    if suspect:
        raise typer.Exit(1)


def _verify(runtime: Runtime, table: ArchiveTable, n: int) -> int:
    """Embed up to ``n`` of ``table``'s stored videos again (those whose file is still at its
    name) and compare; 1 when one differs by more than 1e-5 (a row made otherwise), else 0."""
    import numpy as np

    from text4vis.engine.facade import DAY_S
    from text4vis.engine.offline import offline_engine, run_files
    from text4vis.engine.request import ResolvedClip

    spec = table.spec
    clips, crops = (int(x) for x in spec.views.split("x"))
    clip = ResolvedClip(spec.frames, clips, crops, Sampling(spec.sampling))
    stored = {r["name"]: r for r in table.page("video", 0, 10 * n) if Path(r["name"]).is_file()}
    names = list(stored)[:n]
    if not names:
        typer.echo("  verify: none of its videos' files is where its name says")
        return 0
    vectors = _stored_vectors(table, {stored[name]["id"] for name in names})
    engine = offline_engine(runtime, clip=clip)

    async def again(engine: Any, path: Path) -> Any:
        return await engine.embed(path, clip, deadline=time.monotonic() + DAY_S, name=str(path))

    made = run_files(engine, [Path(name) for name in names], again)
    differ, worst = 0, 0.0
    for name, video in zip(names, made, strict=True):
        if isinstance(video, BaseException):
            continue
        gap = float(np.abs(vectors[stored[name]["id"]] - video.embedding.numpy()).max())
        worst = max(worst, gap)
        differ += gap > 1e-5
    typer.echo(f"  verify: {differ} of {len(names)} videos differ from what these options make (max {worst:.2g})")
    return int(differ > 0)


def _stored_vectors(table: ArchiveTable, ids: set[str]) -> dict[str, Any]:
    import numpy as np

    out = {}
    for batch in table.scan("video"):
        for row_id, vector in zip(batch.column("id").to_pylist(), batch.column("embedding").to_pylist(), strict=True):
            if row_id in ids:
                out[row_id] = np.asarray(vector, dtype=np.float32)
    return out


@archive_app.command("drop")
def archive_drop(
    fingerprint: Annotated[str, typer.Argument(help="The table's fingerprint (t4v archive check lists them).")],
    archive: Archive_ = DEFAULT_ARCHIVE,
) -> None:
    """Delete one table of the archive and every row in it."""
    try:
        rows = _archive(archive).drop(fingerprint)
    except T4VError as exc:
        fail(exc)
    typer.echo(f"dropped table {fingerprint} ({rows} rows)")
