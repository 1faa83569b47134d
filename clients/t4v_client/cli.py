"""``t4v-client``: the HTTP API from a shell, with readable tables or ``--json``."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from t4v_client.client import Client
from t4v_client.errors import T4VError
from t4v_client.labels import LabelFileWarning, read_labels
from t4v_client.models import (
    AbstainDefault,
    ClassifyResult,
    FewShotSettings,
    Segment,
    TimelineEnd,
    TimelineStart,
    Vocabulary,
)
from t4v_client.output import write_rows

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Client for a text4vis-serve server.")
vocab_app = typer.Typer(no_args_is_help=True, help="Define, read, list and delete vocabularies.")
app.add_typer(vocab_app, name="vocab")
URL = Annotated[
    str | None,
    typer.Option(
        "--url",
        show_default=False,
        help="Server base URL (before or after the command; else T4V_URL, else http://127.0.0.1:8000).",
    ),
]
CLEAN = Annotated[
    bool, typer.Option("--clean-labels", help="Ad-hoc labels: prompt ApplyEyeMakeup as 'apply eye makeup'.")
]
DEFAULT_URL = "http://127.0.0.1:8000"
_globals: dict[str, str | None] = {"url": None, "api_key": None}
JSON = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
KEY = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        show_default=False,
        help="API key, for a server that requires one (before or after the command; else T4V_API_KEY).",
    ),
]


@app.callback()
def _options(url: URL = None, api_key: KEY = None) -> None:
    """Client for a text4vis-serve server. --url and --api-key go before or after the command."""
    _globals.update(url=url, api_key=api_key)


def _url(url: str | None) -> str:
    return url or _globals["url"] or os.environ.get("T4V_URL") or DEFAULT_URL


def _key(api_key: str | None) -> str | None:
    return api_key or _globals["api_key"] or os.environ.get("T4V_API_KEY")


VOCAB = Annotated[str | None, typer.Option(help="A registered vocabulary.")]
LABELS = Annotated[str | None, typer.Option(help='Ad-hoc labels: "a,b,c".')]
out = Console()
RANDOM_MARK = "/random-seed"  # in the model id of a server that runs random weights


def _fail(exc: Exception) -> None:
    if isinstance(exc, BrokenPipeError):  # the reader went away (`--json | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit too
        raise typer.Exit(0)
    sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
    raise typer.Exit(1 if isinstance(exc, T4VError) and (exc.status or 500) >= 500 else 2)


def _labels(labels: str | None, labels_file: Path | None) -> list[str]:
    if labels_file is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LabelFileWarning)
            found = read_labels(labels_file)  # .txt, .csv with a name column, .json: the server's rules
        for warning in caught:
            sys.stderr.write(f"warning: {warning.message}\n")
        return found
    return [x.strip() for x in (labels or "").split(",") if x.strip()]


@app.command()
def classify(
    files: Annotated[list[Path], typer.Argument(help="Videos or images.")],
    vocab: VOCAB = None,
    labels: LABELS = None,
    top_k: Annotated[int, typer.Option(help="Predictions to show; 0 = all.")] = 5,
    frames: Annotated[int | None, typer.Option(help="Frames per clip.")] = None,
    views: Annotated[str | None, typer.Option(help="CLIPSxCROPS, e.g. 4x3.")] = None,
    sampling: Annotated[
        str | None, typer.Option(help="exact (the method's frames) | fast (one cheap frame per segment).")
    ] = None,
    clean_labels: CLEAN = False,
    thumbnails: Annotated[
        bool, typer.Option("--thumbnails", help="Also ask for the frames as JPEG data URLs.")
    ] = False,
    abstain: Annotated[
        bool | None,
        typer.Option(
            "--abstain/--no-abstain",
            show_default=False,
            help='May answer "none of these" (a background vocabulary is '
            "scored alongside); default: the vocabulary's own default.",
        ),
    ] = None,
    abstain_margin: Annotated[float | None, typer.Option(help="Cosine margin the background must win by.")] = None,
    min_score: Annotated[float | None, typer.Option(help="Abstain under this cosine.")] = None,
    background: Annotated[str | None, typer.Option(help="A vocabulary to abstain against.")] = None,
    index: Annotated[
        bool, typer.Option("--index", help="Also store each video's embedding in the server's archive.")
    ] = False,
    index_required: Annotated[
        bool,
        typer.Option("--index-required", help="With --index: fail (503) while the archive cannot be written."),
    ] = False,
    url: URL = None,
    api_key: KEY = None,
    as_json: JSON = False,
) -> None:
    """Classify FILES against --vocab NAME or --labels; a file that fails is reported and the rest go on."""
    failed = False
    try:
        with Client(_url(url), api_key=_key(api_key)) as client:
            for file in files:
                try:
                    result = client.classify(
                        file,
                        vocab=vocab,
                        labels=_labels(labels, None) if labels else None,
                        top_k=top_k,
                        frames=frames,
                        views=views,
                        sampling=sampling,
                        clean_labels=clean_labels,
                        thumbnails=thumbnails,
                        abstain=abstain,
                        abstain_margin=abstain_margin,
                        min_score=min_score,
                        background=background,
                        index=index,
                        index_required=index_required,
                    )
                except BrokenPipeError:
                    raise
                except (T4VError, OSError) as exc:
                    if len(files) == 1:
                        raise
                    sys.stderr.write(f"error: {file}: {' '.join(str(exc).split())}\n")
                    failed = True
                    continue
                _print_result(file, result, as_json)
    except (T4VError, ValueError, OSError) as exc:
        _fail(exc)
    if failed:
        raise typer.Exit(1)


def _print_result(file: Path, result: ClassifyResult, as_json: bool) -> None:
    if as_json:
        typer.echo(result.model_dump_json())
        return
    ref = f"  vocab {result.vocab.name} v{result.vocab.version}" if result.vocab else ""
    table = Table(title=f"{file.name}{ref}")
    table.add_column("label")
    table.add_column("probability", justify="right")
    table.add_column("cosine", justify="right")
    for p in result.predictions:
        table.add_row(p.label, f"{p.probability:.4f}", f"{p.score:.4f}")
    out.print(table)
    out.print(f"model {result.model}", soft_wrap=True)
    if result.abstained:
        out.print(f"none of these: {result.abstain_reason}")
    if RANDOM_MARK in result.model:  # the web page says so too: never let random answers pass for real ones
        sys.stderr.write("warning: the server runs RANDOM weights (--random-init): these predictions mean nothing\n")


@app.command()
def timeline(
    file: Annotated[Path, typer.Argument(help="A video.")],
    vocab: VOCAB = None,
    labels: LABELS = None,
    window: Annotated[float, typer.Option(help="Seconds per window.")] = 8.0,
    stride: Annotated[float | None, typer.Option(help="Seconds between window starts (default: --window).")] = None,
    frames: Annotated[int | None, typer.Option(help="Frames per window.")] = None,
    top_k: Annotated[int, typer.Option(help="Predictions per window.")] = 3,
    clean_labels: CLEAN = False,
    index: Annotated[
        bool, typer.Option("--index", help="Also store each window's embedding in the server's archive.")
    ] = False,
    url: URL = None,
    api_key: KEY = None,
    as_json: JSON = False,
) -> None:
    """Classify FILE window by window, printing each window as the server scores it, then the events."""
    try:
        with Client(_url(url), api_key=_key(api_key)) as client:
            for item in client.stream_timeline(
                file,
                vocab=vocab,
                labels=_labels(labels, None) if labels else None,
                window_s=window,
                stride_s=stride,
                frames=frames,
                top_k=top_k,
                clean_labels=clean_labels,
                index=index,
            ):
                if as_json:  # NDJSON, as the server sends it
                    kind = {TimelineStart: "start", Segment: "segment", TimelineEnd: "end"}[type(item)]
                    typer.echo(json.dumps({"type": kind, **item.model_dump()}))
                elif isinstance(item, TimelineStart):
                    out.print(
                        f"{file.name}: {item.duration_s:.1f} s, {item.windows} windows of {item.window_s:g} s "
                        f"every {item.stride_s:g} s",
                        markup=False,
                    )
                elif isinstance(item, Segment):
                    best = "  ".join(f"{p.label} {p.probability:.2f}" for p in item.predictions)
                    out.print(f"{_clock(item.start_s)}-{_clock(item.end_s)}  {best}", markup=False)
                else:
                    out.print("events:")
                    for e in item.events:
                        out.print(
                            f"  {_clock(e.start_s)}-{_clock(e.end_s)}  {e.label}  ({e.windows} windows, "
                            f"mean {e.probability:.2f})",
                            markup=False,
                        )
    except (T4VError, ValueError, OSError) as exc:
        _fail(exc)


def _clock(seconds: float) -> str:
    minutes, s = divmod(seconds, 60)
    return f"{int(minutes // 60)}:{int(minutes % 60):02d}:{s:04.1f}" if minutes >= 60 else f"{int(minutes)}:{s:04.1f}"


@vocab_app.command("put")
def vocab_put(
    name: str,
    labels: Annotated[str | None, typer.Option(help='"a,b,c".')] = None,
    labels_file: Annotated[Path | None, typer.Option(help=".csv (id,name) or .txt, one per line.")] = None,
    preset: Annotated[str | None, typer.Option(help="A built-in label set, e.g. kinetics400.")] = None,
    template: Annotated[list[str] | None, typer.Option(help="Prompt template; repeat for an ensemble.")] = None,
    if_match: Annotated[str | None, typer.Option(help="Only replace this ETag.")] = None,
    clean_labels: Annotated[
        bool, typer.Option("--clean-labels", help="Prompt cleaned-up labels (ApplyEyeMakeup -> apply eye makeup).")
    ] = False,
    abstain: Annotated[
        bool, typer.Option("--abstain", help='Requests naming it may answer "none of these" by default.')
    ] = False,
    abstain_margin: Annotated[float, typer.Option(help="With --abstain: the margin the background must win by.")] = 0.0,
    min_score: Annotated[float | None, typer.Option(help="With --abstain: abstain under this cosine.")] = None,
    background: Annotated[str | None, typer.Option(help="With --abstain: a vocabulary to abstain against.")] = None,
    examples: Annotated[
        Path | None,
        typer.Option(help="A few stored videos per label: 'label,archive-row-id' lines (a few-shot vocabulary)."),
    ] = None,
    few_shot: Annotated[str, typer.Option(help="With --examples: tip-adapter | prototype | auto.")] = "auto",
    url: URL = None,
    api_key: KEY = None,
    as_json: JSON = False,
) -> None:
    """Define or replace vocabulary NAME."""
    default = AbstainDefault(margin=abstain_margin, min_score=min_score, background=background) if abstain else None
    try:
        shots = _examples(examples) if examples is not None else None
        with Client(_url(url), api_key=_key(api_key)) as client:
            v = client.put_vocab(
                name,
                None if preset else _labels(labels, labels_file),
                template,
                if_match,
                preset,
                clean_labels,
                default,
                examples=shots,
                few_shot=FewShotSettings(method=few_shot) if shots is not None else None,
            )
    except (T4VError, ValueError, OSError) as exc:
        _fail(exc)
    typer.echo(v.model_dump_json() if as_json else _vocab_line(v))
    if not as_json:
        for w in v.warnings:  # informative: the vocabulary is stored
            sys.stderr.write(
                f"warning: {w.kind.replace('_', ' ')}: {w.labels[0]!r} and {w.labels[1]!r} (cosine {w.cosine:.3f})\n"
            )


def _vocab_line(v: Vocabulary) -> str:
    line = f"{v.name} v{v.version}: {len(v.labels)} labels, etag {v.etag}"
    few = v.few_shot
    if few is not None:
        fit = f"; leave-one-out {few.fit.zero_shot:.2f} -> {few.fit.few_shot:.2f}" if few.fit else ""
        line += f"; {sum(few.examples.values())} examples ({few.method}{fit})"
    return line


def _examples(path: Path) -> dict[str, list[str]]:
    """``label,archive-row-id`` lines (blank lines and # comments skipped) as ``{label: [ids]}``."""
    import csv

    out: dict[str, list[str]] = {}
    with path.open(newline="") as f:
        for number, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{number}: an example is a line 'label,archive-row-id'")
            out.setdefault(row[0].strip(), []).append(row[1].strip())
    return out


@vocab_app.command("example")
def vocab_example(
    name: str,
    file: Annotated[Path, typer.Argument(help="A video of the label.")],
    label: Annotated[str, typer.Option(help="Which of the vocabulary's labels it shows.")],
    if_match: Annotated[str | None, typer.Option(help="Only add to this ETag.")] = None,
    url: URL = None,
    api_key: KEY = None,
    as_json: JSON = False,
) -> None:
    """Add an example to vocabulary NAME: the video is stored in the server's archive and a new
    version uses it."""
    try:
        with Client(_url(url), api_key=_key(api_key)) as client:
            v = client.add_example(name, file, label, if_match=if_match)
    except (T4VError, ValueError, OSError) as exc:
        _fail(exc)
    typer.echo(v.model_dump_json() if as_json else _vocab_line(v))


@vocab_app.command("similarity")
def vocab_similarity(
    name: str,
    png: Annotated[Path | None, typer.Option(help="Write the clustered heatmap to this PNG file.")] = None,
    url: URL = None,
    api_key: KEY = None,
) -> None:
    """Print the closest label pairs of vocabulary NAME (or write its heatmap with --png)."""
    try:
        with Client(_url(url), api_key=_key(api_key)) as client:
            if png is not None:
                png.write_bytes(client.similarity_png(name))
                typer.echo(f"wrote {png}")
                return
            sim = client.similarity(name)
    except (T4VError, ValueError, OSError) as exc:
        _fail(exc)
    n = len(sim.labels)
    pairs = sorted(((sim.matrix[i][j], i, j) for i in range(n) for j in range(i + 1, n)), reverse=True)
    for cosine, i, j in pairs[:10]:
        typer.echo(f"{cosine:.3f}  {sim.labels[i]}  ~  {sim.labels[j]}")


@vocab_app.command("get")
def vocab_get(name: str, url: URL = None, api_key: KEY = None, as_json: JSON = False) -> None:
    """Show vocabulary NAME."""
    try:
        with Client(_url(url), api_key=_key(api_key)) as client:
            v = client.get_vocab(name)
    except T4VError as exc:
        _fail(exc)
    if as_json:
        typer.echo(v.model_dump_json())
    else:
        out.print(f"{v.name} v{v.version} ({v.text_model}), etag {v.etag}\ntemplates: {v.templates}")
        out.print(", ".join(v.labels), markup=False)
        if v.few_shot is not None:
            out.print(_vocab_line(v), markup=False)
            for label, count in v.few_shot.examples.items():
                out.print(f"  {label}: {count} examples", markup=False)


@vocab_app.command("list")
def vocab_list(url: URL = None, api_key: KEY = None, as_json: JSON = False) -> None:
    """List the vocabularies."""
    try:
        with Client(_url(url), api_key=_key(api_key)) as client:
            items = client.list_vocabs()
    except T4VError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps([v.model_dump() for v in items]))
        return
    table = Table()
    for column in ("name", "version", "labels", "text model"):
        table.add_column(column)
    for v in items:
        model = v.text_model if v.encoded_for_this_model else f"{v.text_model} (encoded again on first use)"
        table.add_row(v.name, str(v.version), str(v.num_labels), model)
    out.print(table)


@vocab_app.command("delete")
def vocab_delete(name: str, url: URL = None, api_key: KEY = None) -> None:
    """Delete vocabulary NAME."""
    try:
        with Client(_url(url), api_key=_key(api_key)) as client:
            client.delete_vocab(name)
    except T4VError as exc:
        _fail(exc)
    typer.echo(f"deleted {name}")


@app.command()
def search(
    text: Annotated[str, typer.Argument(help='What to look for, e.g. "surfing".')],
    k: Annotated[int, typer.Option("--k", help="How many results.")] = 10,
    windows: Annotated[bool, typer.Option("--windows", help="Search windows (with times), not videos.")] = False,
    url: URL = None,
    api_key: KEY = None,
    as_json: JSON = False,
) -> None:
    """The videos in the server's archive nearest a text."""
    try:
        with Client(_url(url), api_key=_key(api_key)) as client:
            hits = client.search(text, k=k, kind="window" if windows else "video")
    except (T4VError, ValueError, OSError) as exc:
        _fail(exc)
    for hit in hits:
        if as_json:
            typer.echo(hit.model_dump_json())
        else:
            times = f" {hit.start_s:.1f}-{hit.end_s:.1f} s" if hit.kind == "window" else ""
            typer.echo(f"{hit.score:.4f}  {hit.name}{times}  {hit.id[:12]}")
    if not hits:  # an answer, not silence: nothing stored (under this server's model) to search
        sys.stderr.write(f"no {'windows' if windows else 'videos'} in the server's archive to search\n")


@app.command()
def relabel(
    vocab: VOCAB = None,
    labels: LABELS = None,
    top_k: Annotated[int, typer.Option(help="Predictions per video; 0 = all.")] = 5,
    kind: Annotated[str, typer.Option(help="video | window | all: which rows.")] = "video",
    out: Annotated[
        Path | None,
        typer.Option(help=".jsonl, .csv or .parquet (pyarrow needed), by the extension; default JSON lines on stdout."),
    ] = None,
    url: URL = None,
    api_key: KEY = None,
) -> None:
    """Every video in the server's archive under --vocab NAME or --labels: one JSON line each (or a
    file, as ``t4v relabel --out`` writes them)."""
    try:
        if out is not None and out.suffix.lower() not in (".jsonl", ".csv", ".parquet"):
            raise ValueError(f"--out {out}: the extension picks the format, one of .jsonl, .csv, .parquet")
        with Client(_url(url), api_key=_key(api_key)) as client:
            label_list = _labels(labels, None) if labels else None
            rows = client.relabel_archive(vocab=vocab, labels=label_list, top_k=top_k, kind=kind)
            written = write_rows(rows, out)
    except (T4VError, ValueError, OSError) as exc:
        _fail(exc)
    if out is not None:
        sys.stderr.write(f"relabelled {written} rows to {out}\n")


@app.command()
def health(url: URL = None, api_key: KEY = None, as_json: JSON = False) -> None:
    """Liveness and readiness; exit 0 only when ready."""
    with Client(_url(url), api_key=_key(api_key)) as client:
        h = client.health()
    typer.echo(
        h.model_dump_json() if as_json else f"live: {h.live}, ready: {h.ready}" + (f" ({h.detail})" if h.detail else "")
    )
    if not h.ready:
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()
