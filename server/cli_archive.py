"""``t4v index``, ``t4v relabel``, ``t4v search`` and ``t4v archive``: the archive offline
(``engine/archive/``), through the same engine as the server (``engine/facade.py``).

Each opens the archive's table of the model the options name and the frames and views given
(the same defaults as ``t4v serve``): embeddings made differently are never mixed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

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
from text4vis.server.cli_cache import SpecCache, spec_key
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
Url_ = Annotated[
    str | None,
    typer.Option(
        "--url", help="Ask a running server (its model and its archive) instead: http://host:8000 (T4V_API_KEY: a key)."
    ),
]


archive_app = typer.Typer(
    no_args_is_help=True, help="The archive's tables: check them, maintain them, embed them again, drop one."
)


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
            "(pip install 'text4vis-serve\\[distributed]')."
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
    _maintain(table)
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


def _unchanged(
    archive: Archive, files: list[Path], key: str, request: IndexRequest
) -> tuple[list[Any], ArchiveTable] | None:
    """A Ray rerun's answer without Ray, when every file is known: each one's path recorded after
    its last change, its content stored in the table these options made on the cluster last time
    (and its windows, when asked). None when anything may be new."""
    import datetime as dt

    from text4vis.engine.archive.indexer import Indexed
    from text4vis.engine.archive.spec import ArchiveSpec
    from text4vis.engine.errors import ArchiveMismatch

    known = SpecCache().get(key)
    if known is None:
        return None
    try:
        table = archive.table(ArchiveSpec.from_json(known["spec"]))
    except ArchiveMismatch:
        return None
    seen = archive.by_names(str(p) for p in files)
    outcomes: list[Any] = []
    for path in files:
        if str(path) not in seen:
            return None
        content, when = seen[str(path)]
        changed = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat()
        if changed >= when:
            return None
        outcomes.append(Indexed(str(path), content, 0, 0, skipped=True))
    stored = table.stored(o.id for o in outcomes)
    if len(stored) != len({o.id for o in outcomes}):
        return None
    if request.window_s is not None and any(not table.windows_of(o.id) for o in outcomes):
        return None  # windows asked where there are none (windows of a 1x1 exact table only; else Ray decides)
    return outcomes, table


@contextlib.contextmanager
def _ray_quiet() -> Iterator[IO[str] | None]:
    """What Ray and Ray Data print (their token notice, execution lines, the core worker's C++ log
    lines, the forked helpers' lancedb warning) kept off the terminal unless -v asked for it:
    standard error goes to a file meanwhile, and this command's own lines (progress) are written
    to the stream it yields (the terminal). When the run fails, the end of what Ray said is
    shown: it may say why."""
    if logging.getLogger().getEffectiveLevel() <= logging.INFO:  # t4v -v: everything
        yield None
        return
    with tempfile.TemporaryFile("w+") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sys.stderr.flush()
        saved = os.dup(2)
        ours = os.fdopen(os.dup(saved), "w", buffering=1)
        os.dup2(sink.fileno(), 2)  # the C++ side and Ray's handlers (made now) write to the descriptor
        try:
            yield ours
        except BaseException:
            sink.seek(0)
            ours.write(sink.read()[-4000:])
            raise
        finally:
            sys.stderr.flush()
            ours.close()
            os.dup2(saved, 2)
            os.close(saved)


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

    terminal: list[IO[str] | None] = [None]

    def each() -> None:
        if not first:
            first.append(time.perf_counter())
        with contextlib.redirect_stderr(terminal[0] or sys.stderr):  # past Ray's muffle
            done()

    key = spec_key({**(options or {}), "ray": address}, _clip_key(clip))
    unchanged = _unchanged(archive, files, key, request)
    if unchanged is not None:  # a rerun with nothing new: Ray is not even started
        for _ in files:
            done()
        sys.stderr.write("Ray: nothing new (every file stored since its last change): Ray was not started\n")
        return unchanged
    try:
        with _ray_quiet() as terminal[0]:
            outcomes, table = index_on_ray(address, model_options, archive, files, clip, request, on_done=each)
    except (T4VError, ValueError, ConnectionError) as exc:
        fail(exc)
    SpecCache().put(key, table.spec.to_json(), table.spec.text_model)
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
    scoring: Annotated[
        str,
        typer.Option(
            help="float64 (equals /classify) or float32 (about half the CPU; probabilities within ~1e-5, "
            "near-tied labels may swap)."
        ),
    ] = "float64",
    url: Url_ = None,
    frames: Frames = 8,
    views: Views = "1x1",
    sampling: Sampling_ = Sampling.EXACT,
    options: dict[str, Any] | None = None,
) -> None:
    """Predictions for every stored video under a vocabulary, without decoding anything: the
    probabilities /classify gives the same files. With --examples, the labels and a few labelled
    videos (few-shot); --url asks a running server instead."""
    from text4vis.engine.archive.relabel import output_format, write, write_jsonl

    try:
        if kind not in ("video", "window", "all"):
            raise UsageProblem(f"--kind must be video, window or all; got {kind!r}")
        if scoring not in ("float64", "float32"):
            raise UsageProblem(f"--scoring must be float64 or float32; got {scoring!r}")
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
        if url is not None:
            if examples is not None or with_embeddings:
                raise UsageProblem("--url re-labels with the server's vocabularies: no --examples or --with-embeddings")
            batches = _relabel_remote(url, request, kind, scoring)
        else:
            engine = _engine(options, archive)
            if examples is not None:
                request = replace(request, examples=load_examples(examples, engine.runtime, archive, clip, ask))
            which = None if kind == "all" else kind
            batches = engine.relabel_blocking(request, which, with_embeddings, scoring)  # type: ignore[arg-type]
            _note_elsewhere(engine.elsewhere(clip))
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
    url: Url_ = None,
    frames: Frames = 8,
    views: Views = "1x1",
    sampling: Sampling_ = Sampling.EXACT,
    options: dict[str, Any] | None = None,
) -> None:
    """The stored videos (or windows) nearest a text, by the cosine of their embeddings. A search
    the same options ran before (their table known, the query's embedding cached) loads no model;
    --url asks a running server instead."""
    try:
        templates = template_args(template, None, None)
        clip = _clip(frames, views, sampling)
        kind = "window" if windows else "video"
        found: tuple[list[Any], str, dict[str, int]] | None = None
        if url is not None:
            found = _search_remote(url, text, k, kind, frames, views, sampling)
        else:
            found = _search_cached(text, archive, templates, clip, k, kind, options or {})
        if found is None:
            found = _search_loaded(text, archive, templates, clip, k, kind, options or {})
        hits, table_name, elsewhere = found
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
        sys.stderr.write(f"the archive's table {table_name} is empty\n")
    _note_elsewhere(elsewhere)


def _search_remote(
    url: str, text: str, k: int, kind: str, frames: int, views: str, sampling: Sampling
) -> tuple[list[Any], str, dict[str, int]]:
    """``GET /archive/search`` of a running server (its model, its archive)."""
    from text4vis.engine.archive.store import Hit

    params = {"q": text, "k": k, "kind": kind, "thumbnails": "false", "frames": frames, "views": views}
    answer = _remote(url).get("/archive/search", params={**params, "sampling": str(sampling)}).json()
    hits = [Hit({k: v for k, v in r.items() if k != "score"}, float(r["score"])) for r in answer["results"]]
    return hits, url, answer.get("elsewhere") or {}


def _relabel_remote(url: str, request: ClassifyRequest, kind: str, scoring: str) -> Iterator[Any]:
    """``POST /archive/labels`` of a running server, as record batches of 1,000 rows."""
    import pyarrow as pa

    body = {
        "labels": list(request.labels or ()),
        "templates": list(request.templates) if request.templates else None,
        "top_k": request.top_k,
        "kind": kind,
        "abstain": request.abstain.abstain,
        "min_score": request.abstain.min_score,
        "frames": request.clip.frames,
        "views": request.clip.views,
        "sampling": str(request.clip.sampling) if request.clip.sampling else None,
        "scoring": scoring,
    }
    rows: list[dict[str, Any]] = []
    with _remote(url) as client, client.stream("POST", "/archive/labels", json=body) as answer:
        for line in answer.iter_lines():
            item = json.loads(line) if line.strip() else {}
            if "error" in item:
                raise UsageProblem(f"{url}: {item['error']}")
            if "id" in item:
                rows.append(item)
            if len(rows) >= 1_000 or (item.get("done") and rows):
                yield pa.RecordBatch.from_pylist(rows)
                rows = []


def _remote(url: str) -> Any:
    """An HTTP client for ``url`` (the API key from T4V_API_KEY), raising one line on an error answer."""
    import httpx

    key = os.environ.get("T4V_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    def check(response: httpx.Response) -> None:
        if response.status_code >= 400:
            response.read()
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise UsageProblem(f"{url} answered {response.status_code}: {detail}")

    try:
        return httpx.Client(base_url=url, headers=headers, timeout=600, event_hooks={"response": [check]})
    except httpx.HTTPError as exc:
        raise UsageProblem(f"cannot reach {url}: {exc}") from None


def _clip_key(clip: ResolvedClip) -> str:
    return f"{clip.frames}/{clip.clips}x{clip.crops}/{clip.sampling}"


def _search_cached(
    text: str, archive: str, templates: list[str], clip: ResolvedClip, k: int, kind: str, options: dict[str, Any]
) -> tuple[list[Any], str, dict[str, int]] | None:
    """The search with no model loaded, when these options' table and this query's embedding are
    cached (``server/cli_cache.py``) and the archive is a local directory; else None."""
    from text4vis.engine.archive.search import check_search
    from text4vis.engine.archive.spec import ArchiveSpec
    from text4vis.server.cli_cache import QueryCache, SpecCache, spec_key

    check_search(k, kind)
    known = SpecCache().get(spec_key(options, _clip_key(clip)))
    vector = QueryCache().get(known["text_model"], templates, text) if known else None
    if known is None or vector is None:
        return None
    from text4vis.engine.archive.lance import LanceReader

    spec = ArchiveSpec.from_json(known["spec"])
    reader = LanceReader.open(archive, spec)
    if reader is None:
        return None
    hits = reader.search(vector, k, kind)
    names = reader.names({h.row["content_id"] for h in hits})
    for hit in hits:
        hit.row["names"] = [s.name for s in names.get(hit.row["content_id"], [])] or [hit.row["name"]]
    return hits, f"videos_{spec.fingerprint}", reader.elsewhere(spec)


def _search_loaded(
    text: str, archive: str, templates: list[str], clip: ResolvedClip, k: int, kind: str, options: dict[str, Any]
) -> tuple[list[Any], str, dict[str, int]]:
    """The search with the model loaded; what it learns is cached for the next one."""
    from text4vis.server.cli_cache import QueryCache, SpecCache, spec_key

    engine = _engine(options, archive)
    vector = engine.query_vector(text, templates)
    hits = engine.search_blocking(text, clip, k=k, kind=kind, templates=templates, vector=vector)
    table = engine.table_blocking(clip)
    text_model = engine.runtime.info.model_id
    SpecCache().put(spec_key(options, _clip_key(clip)), table.spec.to_json(), text_model)
    QueryCache().put(text_model, templates, text, vector)
    return hits, table.name, engine.elsewhere(clip)


def _note_elsewhere(elsewhere: dict[str, int]) -> None:
    """What a model change left behind, said once after the answer."""
    if elsewhere:
        total = sum(elsewhere.values())
        tables = ", ".join(f"{n} in {fp}" for fp, n in elsewhere.items())
        sys.stderr.write(
            f"note: {total} more videos of this archive are stored under other models ({tables}), not under "
            "this one: t4v archive reindex embeds them again under it\n"
        )


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


@archive_app.command("reindex")
@with_options(ModelOptions)
def archive_reindex(
    archive: Archive_ = DEFAULT_ARCHIVE,
    source: Annotated[
        str | None, typer.Option("--from", help="Only the videos of this table (a fingerprint); default: every other.")
    ] = None,
    windows: Annotated[float | None, typer.Option(help="Also store their windows of this many seconds.")] = None,
    frames: Frames = 8,
    views: Views = "1x1",
    sampling: Sampling_ = Sampling.EXACT,
    options: dict[str, Any] | None = None,
) -> None:
    """Embed again, under the model the options name, the videos stored under other models (a
    model change leaves them behind), from the names they were seen under: files moved or deleted
    since are counted, not guessed. Stored ones are skipped: a reindex that stopped goes on where
    it was; the old tables stay until t4v archive drop."""
    import asyncio

    try:
        clip = _clip(frames, views, sampling)
        store = _archive(archive)
        runtime = _runtime(options)
    except (T4VError, ValueError) as exc:
        fail(exc)
    from text4vis.engine.offline import offline_engine

    engine = offline_engine(runtime, None, store, clip=clip)
    counts: dict[str, int] = {}

    async def run() -> None:
        await engine.start()
        try:
            async for done in engine.reindex(clip, source, windows):
                counts[done.status] = counts.get(done.status, 0) + 1
                if done.status == "failed":
                    sys.stderr.write(f"error: {done.path}: {done.detail}\n")
                elif done.status == "indexed":
                    sys.stderr.write(f"indexed {done.path}\n")
        finally:
            await engine.stop()

    try:
        asyncio.run(run())
    except T4VError as exc:
        fail(exc)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: what was embedded again is stored; run it again to go on\n")
        raise typer.Exit(130) from None
    sys.stderr.write(
        f"{counts.get('indexed', 0)} videos embedded again under {engine.spec(clip).fingerprint}, "
        f"{counts.get('stored', 0)} already there, {counts.get('missing', 0)} skipped: no file at any of their "
        f"names has their bytes any more, {counts.get('failed', 0)} failed\n"
    )
    if counts.get("failed"):
        raise typer.Exit(1)


def _maintain(table: ArchiveTable) -> None:
    """The table's indices brought up to date and its commits compacted, saying what it does (an
    index build takes minutes on a CPU from a few hundred thousand rows)."""
    from rich.console import Console

    console = Console(stderr=True)
    with console.status(f"bringing the indices of {table.name} up to date (ids, vectors, compaction)…"):
        done = table.maintain()
    if done:
        sys.stderr.write(f"archive table {table.name}: {'; '.join(done)}\n")


@archive_app.command("maintain")
def archive_maintain(
    archive: Archive_ = DEFAULT_ARCHIVE,
    every: Annotated[
        float,
        typer.Option(
            min=0,
            help="Keep at it until interrupted: a full round every this many seconds, the light round every 2 s "
            "(upkeep on a machine of its own; the server's off with T4V_ARCHIVE_MAINTAIN_S=0). 0: once.",
        ),
    ] = 0.0,
) -> None:
    """Bring every table's indices up to date and compact it now (a server does it every
    --archive-maintain-s seconds on a thread of its own; run this after a bulk import, or when
    the server's upkeep is off, with --every to keep at it)."""
    stop = _stop_on_signals() if every > 0 else None
    try:
        store = _archive(archive)
        tables = [store.table(spec) for spec in store.specs()]
    except T4VError as exc:
        fail(exc)
    if stop is not None:
        _keep_maintaining(store, every, stop)
        return
    for table in tables:
        _maintain(table)
    names = store.maintain()
    if names:
        sys.stderr.write(f"archive names: {'; '.join(names)}\n")
    typer.echo(f"{len(tables)} tables up to date")


def _stop_on_signals() -> threading.Event:
    """An event that Ctrl-C (SIGINT) or SIGTERM sets, handled from here on (a signal that came as
    a KeyboardInterrupt could land anywhere, in the middle of starting the rounds' threads); and
    ``kill -USR1`` writes every thread's stack to stderr (where a round is, if one seems stuck)."""
    import faulthandler
    import signal

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    return stop


def _keep_maintaining(store: Archive, every_s: float, stop: threading.Event) -> None:
    """The server's upkeep (``engine/archive/maintenance.py``) in the foreground, each round's
    work logged, until ``stop`` is set."""
    from text4vis.engine.archive.maintenance import Maintainer

    logging.getLogger("text4vis.engine.archive").setLevel(logging.INFO)  # what each round did
    maintainer = Maintainer(store, every_s=every_s, first_s=0.0)
    sys.stderr.write(f"maintaining {store.uri}: a full round every {every_s:g} s; Ctrl-C stops (pid {os.getpid()})\n")
    maintainer.start()
    while not stop.wait(1.0):
        pass
    sys.stderr.write("stopping after the step in progress\n")
    maintainer.stop(timeout_s=600)
    typer.echo(f"{maintainer.rounds} full rounds")


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
