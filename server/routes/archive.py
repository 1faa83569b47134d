"""``/archive``: videos indexed once (their embeddings in the archive, ``engine/archive/``),
re-labelled under any vocabulary without decoding, and searched by text.

Which table a route reads is chosen by ``frames``, ``views`` and ``sampling`` (the server's
defaults when unset), with the running model: the archive's fingerprint. Writes (index, delete)
need an API key where keys are configured, as vocabulary writes do; reads need one where
``auth_classify`` is set, as classify requests do.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict
from typing import Annotated, Any, ClassVar, Literal

import pyarrow as pa
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from text4vis.engine.archive.relabel import write_jsonl
from text4vis.engine.facade import Engine, Reindexed
from text4vis.engine.request import (
    AbstainPolicy,
    ClassifyRequest,
    ClipSpec,
    IndexRequest,
    ResolvedClip,
    parse_metadata,
)
from text4vis.engine.vocab.scoring import Scoring
from text4vis.models.choices import Sampling
from text4vis.models.errors import InputError, T4VError
from text4vis.models.windows import MAX_WINDOW_S
from text4vis.server.deps import EngineDep, StateDep, require_key, require_key_to_classify
from text4vis.server.errors import status_of
from text4vis.server.forms import Form, display_name, parse_form
from text4vis.server.streaming import NDJSON, GuardedStream
from text4vis.server.wire import errors, upload_body

router = APIRouter(prefix="/archive", tags=["archive"])
RowId = Annotated[str, Path(description="A row's id (a video's is its file's SHA-256).", max_length=200)]
Frames = Annotated[int | None, Query(ge=1, description="Which table: frames per clip (unset: the server's).")]
Views = Annotated[str, Query(max_length=8, description="Which table: CLIPSxCROPS.")]
SamplingQ = Annotated[Sampling | None, Query(description="Which table: exact or fast (unset: the server's).")]
READ = [Depends(require_key_to_classify)]  # reads follow auth_classify; writes always need a key


class ArchiveForm(Form):
    """The form fields of ``POST /archive/videos`` (beside the ``file`` part)."""

    route: ClassVar[str] = "POST /archive/videos"

    frames: int | None = Field(None, ge=1, description="Frames per clip (T); unset: the server's default_frames.")
    views: str = Field("1x1", description="CLIPSxCROPS.")
    sampling: Sampling | None = Field(None, description="exact or fast; unset: the server's default_sampling.")
    window_s: float | None = Field(
        None, gt=0, le=MAX_WINDOW_S, description="Also store one row per window of this many seconds."
    )
    metadata: str = Field(
        "",
        description='User metadata stored with the row: a JSON object, e.g. {"camera": 3}; a file stored already '
        "gets it merged into its own (nothing decoded).",
    )
    replace_metadata: bool = Field(False, description="A file stored already: replace its metadata instead of merging.")

    @field_validator("sampling", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @classmethod
    def openapi_body(cls) -> dict[str, object]:
        return upload_body(cls)

    def to_request(self) -> IndexRequest:
        clip = ClipSpec(self.frames, self.views, self.sampling)
        return IndexRequest(clip, self.window_s, parse_metadata(self.metadata), self.replace_metadata)


MetaFilter = Annotated[
    Sequence[str],
    Query(
        max_length=8,
        description="key=value: rows whose metadata has that value (compared as text); key: rows with that key.",
    ),
]


def _meta_filter(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if not key.strip() or len(pair) > 300:
            raise InputError(f"meta must be key=value or key (e.g. meta=camera=3), not {pair[:60]!r}")
        out[key.strip()] = value.strip()
    return out


class ArchiveRowOut(BaseModel):
    id: str = Field(description="The file's SHA-256; a window's adds @start-end.")
    content_id: str = Field(description="The file's SHA-256.")
    name: str = Field(description="The name it was first stored under.")
    names: list[str] = Field(
        default_factory=list,
        description="Every name (absolute path, URI, upload name) the same content was seen under, the first first.",
    )
    kind: Literal["video", "window"]
    start_s: float
    end_s: float
    duration_s: float | None
    metadata: dict[str, Any]
    created_at: str
    thumbnail: str | None = Field(None, description="A small JPEG data URL, when asked.")
    embedding: list[float] | None = Field(
        None, description="The stored embedding (float32, normalized), when asked: what every vocabulary scores."
    )


class ArchiveIndexOut(BaseModel):
    video: ArchiveRowOut
    windows: int = Field(description="Window rows stored with it (now or before).")
    new: bool = Field(description="False when the same file was stored before (its video was not decoded again).")
    rows_added: int = Field(description="Rows new in the archive: the video and the windows it lacked.")
    metadata_updated: bool = Field(description="A stored file's metadata changed (merged, or replaced).")
    name_added: bool = Field(description="The upload's name is new for this content.")


class ArchivePage(BaseModel):
    rows: list[ArchiveRowOut]
    total: int
    offset: int


class ArchiveTableOut(BaseModel):
    fingerprint: str
    model: str = Field(description="The model and sampling its embeddings come from, in words.")
    videos: int
    windows: int
    vector_index: bool
    legacy: bool = Field(
        description="Written before the fingerprint named the activation, precision and backend: its rows may "
        "have been made differently (t4v archive check; index them again under the running model)."
    )


class ArchiveStatsOut(BaseModel):
    uri: str
    tables: list[ArchiveTableOut]
    current: str = Field(description="The fingerprint of what this server makes with its default frames and views.")
    elsewhere: dict[str, int] = Field(
        default_factory=dict, description="Videos stored only under other fingerprints than the current one."
    )


class SearchHitOut(ArchiveRowOut):
    score: float = Field(description="Cosine of the text and the row's embedding.")


class SearchOut(BaseModel):
    query: str
    results: list[SearchHitOut]
    elsewhere: dict[str, int] = Field(
        default_factory=dict,
        description="Videos of this archive stored only under other models (by fingerprint), so not searched: "
        "t4v archive reindex (or POST /archive/reindex) embeds them under this one.",
    )


class ArchiveLabelsIn(BaseModel):
    """``POST /archive/labels``: every stored row under a vocabulary."""

    model_config = ConfigDict(extra="forbid")

    vocab: str | None = Field(None, description="A registered vocabulary (give vocab or labels).")
    labels: list[str] | None = Field(None, description="Ad-hoc labels.")
    templates: list[str] | None = Field(None, description="Ad-hoc labels' prompt templates.")
    top_k: int = Field(5, ge=0, le=100_000, description="Predictions per row; 0 = all.")
    kind: Literal["video", "window", "all"] = "video"
    abstain: bool | None = None
    abstain_margin: float | None = Field(None, ge=0.0, le=1.0)
    min_score: float | None = Field(None, ge=-1.0, le=1.0)
    background: str | None = None
    frames: int | None = Field(None, ge=1, description="Which table: its frames (unset: the server's default).")
    views: str = Field("1x1", description="Which table: its views.")
    sampling: Sampling | None = None
    scoring: Scoring = Field(
        "float64",
        description="float64 equals /classify; float32 costs about half the CPU (probabilities within ~1e-5, "
        "near-tied labels may swap).",
    )

    def to_request(self) -> ClassifyRequest:
        return ClassifyRequest(
            vocab=self.vocab,
            labels=tuple(self.labels) if self.labels is not None else None,
            templates=tuple(self.templates) if self.templates else None,
            clip=ClipSpec(self.frames, self.views, self.sampling),
            top_k=self.top_k,
            abstain=AbstainPolicy(self.abstain, self.abstain_margin, self.min_score, self.background),
        )


def _clip(engine: Engine, frames: int | None, views: str, sampling: Sampling | None) -> ResolvedClip:
    return engine.clip(ClipSpec(frames, views, sampling))


def _row_out(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("thumbnail", "embedding")}
    if row.get("thumbnail"):
        out["thumbnail"] = "data:image/jpeg;base64," + base64.b64encode(row["thumbnail"]).decode()
    if row.get("embedding") is not None:
        out["embedding"] = [float(x) for x in row["embedding"]]  # the float32 values, exact as JSON numbers
    return out


@router.post(
    "/videos",
    response_model=ArchiveIndexOut,
    responses=errors(400, 401, 409, 413, 415, 422, 503),
    openapi_extra=ArchiveForm.openapi_body(),
    dependencies=[Depends(require_key)],
)
async def add_video(request: Request, state: StateDep, engine: EngineDep) -> ArchiveIndexOut:
    """Upload a video and store its embedding (and its windows' with ``window_s``); a file stored
    before (same bytes) is not decoded again. Answers the stored row."""
    async with state.admitted_upload(request, engine) as upload:
        form, path = parse_form(ArchiveForm, upload)
        index = form.to_request()
        done = await engine.index(path, index, timeout_s=state.time_left_s(upload), name=display_name(upload.filename))
    row = await engine.row(engine.clip(index.clip), done.id, thumbnail=True)
    return ArchiveIndexOut(
        video=ArchiveRowOut(**_row_out(row)),
        windows=done.windows,
        new=not done.skipped,
        rows_added=done.rows,
        metadata_updated=done.metadata_updated,
        name_added=done.names_added > 0,
    )


@router.get("/videos", response_model=ArchivePage, responses=errors(401, 409, 422, 503), dependencies=READ)
async def list_videos(
    engine: EngineDep,
    kind: Literal["video", "window"] | None = "video",
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    thumbnails: bool = False,
    frames: Frames = None,
    views: Views = "1x1",
    sampling: SamplingQ = None,
    meta: MetaFilter = (),
) -> ArchivePage:
    """Stored rows, a page at a time (only those whose metadata matches every ``meta=key=value``)."""
    clip = _clip(engine, frames, views, sampling)
    rows, total = await engine.rows(clip, kind, offset, limit, thumbnails, _meta_filter(meta))
    return ArchivePage(rows=[ArchiveRowOut(**_row_out(r)) for r in rows], total=total, offset=offset)


@router.get(
    "/videos/{row_id}", response_model=ArchiveRowOut, responses=errors(401, 404, 409, 422, 503), dependencies=READ
)
async def get_video(
    row_id: RowId,
    engine: EngineDep,
    embedding: Annotated[bool, Query(description="Also answer the stored float32 embedding.")] = False,
    frames: Frames = None,
    views: Views = "1x1",
    sampling: SamplingQ = None,
) -> ArchiveRowOut:
    row = await engine.row(_clip(engine, frames, views, sampling), row_id, thumbnail=True, embedding=embedding)
    return ArchiveRowOut(**_row_out(row))


@router.delete("/videos/{row_id}", responses=errors(401, 404, 409, 422, 503), dependencies=[Depends(require_key)])
async def delete_video(
    row_id: RowId, engine: EngineDep, frames: Frames = None, views: Views = "1x1", sampling: SamplingQ = None
) -> dict[str, int]:
    """A video and its windows."""
    return {"deleted": await engine.delete(_clip(engine, frames, views, sampling), row_id)}


@router.get("/stats", response_model=ArchiveStatsOut, responses=errors(401, 503), dependencies=READ)
async def stats(engine: EngineDep) -> ArchiveStatsOut:
    """Every table of the archive: its model and sampling, rows, and whether it has a vector index."""
    tables = [
        ArchiveTableOut(
            fingerprint=spec.fingerprint,
            model=spec.describe(),
            videos=s.videos,
            windows=s.windows,
            vector_index=s.vector_index,
            legacy=spec.legacy,
        )
        for spec, s in await engine.stats()
    ]
    clip = engine.clip(ClipSpec())
    elsewhere = await asyncio.to_thread(engine.elsewhere, clip)
    return ArchiveStatsOut(
        uri=engine.archive_uri, tables=tables, current=engine.spec(clip).fingerprint, elsewhere=elsewhere
    )


@router.get("/search", response_model=SearchOut, responses=errors(401, 409, 422, 503), dependencies=READ)
async def search(
    engine: EngineDep,
    q: Annotated[str, Query(min_length=1, max_length=300, description="What to look for, e.g. surfing.")],
    k: Annotated[int, Query(ge=1, le=1000)] = 10,
    kind: Literal["video", "window"] = "video",
    thumbnails: bool = True,
    frames: Frames = None,
    views: Views = "1x1",
    sampling: SamplingQ = None,
) -> SearchOut:
    """The stored videos (or windows, with their times) nearest a text, best first."""
    clip = _clip(engine, frames, views, sampling)
    hits = await engine.search(q, clip, k=k, kind=kind, thumbnails=thumbnails)
    elsewhere = await asyncio.to_thread(engine.elsewhere, clip)
    return SearchOut(
        query=q, results=[SearchHitOut(**_row_out(h.row), score=h.score) for h in hits], elsewhere=elsewhere
    )


@router.get(
    "/videos/{row_id}/similar", response_model=SearchOut, responses=errors(401, 404, 409, 422, 503), dependencies=READ
)
async def similar(
    row_id: RowId,
    engine: EngineDep,
    k: Annotated[int, Query(ge=1, le=1000)] = 10,
    kind: Literal["video", "window"] = "video",
    thumbnails: bool = True,
    frames: Frames = None,
    views: Views = "1x1",
    sampling: SamplingQ = None,
) -> SearchOut:
    """More like this: the stored rows nearest a stored row's own embedding (the row itself first)."""
    hits = await engine.similar(_clip(engine, frames, views, sampling), row_id, k=k, kind=kind, thumbnails=thumbnails)
    return SearchOut(query=row_id, results=[SearchHitOut(**_row_out(h.row), score=h.score) for h in hits])


@router.post(
    "/labels",
    responses={
        200: {"description": "One JSON object per stored row (NDJSON), then a summary line.", "content": {NDJSON: {}}},
        **errors(401, 404, 409, 422, 503),
    },
    dependencies=READ,
)
async def labels(body: ArchiveLabelsIn, state: StateDep, engine: EngineDep) -> GuardedStream:
    """Every stored row under a vocabulary (or ad-hoc labels), without decoding anything: the
    predictions ``/classify`` gives the same files. NDJSON, streamed as it is computed: one line
    per row (its id, name, times, predictions and, with abstention, the decision), then
    ``{"done": true, "rows": N}``, or ``{"error": ..., "status": ...}`` if it fails midway. At
    most ``max_archive_scans`` run at once (503 past them)."""
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(engine.scan())  # admission, held until the stream ends
        batches = await engine.relabel(body.to_request(), None if body.kind == "all" else body.kind, body.scoring)
        held = stack.pop_all()
    return GuardedStream(
        _ndjson(batches),
        error_line=_error_line,
        stall_s=state.settings.request_timeout_s,  # a client that reads nothing for this long is gone
        stopping=state.stopping,
        held=held,
    )


class ReindexIn(BaseModel):
    """``POST /archive/reindex``: embed again under this server's model what other models left."""

    model_config = ConfigDict(extra="forbid")
    source: str | None = Field(None, description="Only this table's videos (a fingerprint); default: every other.")
    window_s: float | None = Field(None, gt=0, le=MAX_WINDOW_S, description="Also store their windows.")
    frames: int | None = Field(None, ge=1, description="Which table to fill: its frames (unset: the server's).")
    views: str = Field("1x1", description="Which table to fill: its views.")
    sampling: Sampling | None = None


@router.post(
    "/reindex",
    responses={
        200: {
            "description": "One JSON line per video (id, path, status), then a summary line.",
            "content": {NDJSON: {}},
        },
        **errors(401, 404, 409, 422, 503),
    },
    dependencies=[Depends(require_key)],
)
async def reindex(body: ReindexIn, state: StateDep, engine: EngineDep) -> GuardedStream:
    """Embed again, under this server's model, the videos stored under other models, from the
    names they were seen under (a file moved since is counted, not guessed); NDJSON, a line per
    video as it is done (status indexed, stored, missing or failed), then the counts. Resumable:
    what is stored is skipped. Counts as a scan of the archive (``max_archive_scans``)."""
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(engine.scan())
        runs = engine.reindex(_clip(engine, body.frames, body.views, body.sampling), body.source, body.window_s)
        held = stack.pop_all()
    return GuardedStream(
        _reindex_lines(runs),
        error_line=_error_line,
        stall_s=state.settings.request_timeout_s,
        stopping=state.stopping,
        held=held,
    )


async def _reindex_lines(runs: AsyncIterator[Reindexed]) -> AsyncIterator[bytes]:
    counts: dict[str, int] = {}
    try:
        async for done in runs:
            counts[done.status] = counts.get(done.status, 0) + 1
            yield (json.dumps(asdict(done)) + "\n").encode()
    except T4VError as exc:
        yield _error_line(status_of(exc), str(exc))
        return
    yield (json.dumps({"done": True, **counts}) + "\n").encode()


def _error_line(status: int, detail: str) -> bytes:
    """The line that ends a stream of rows that failed (or a server shutting down)."""
    return (json.dumps({"error": detail, "status": status}) + "\n").encode()


async def _ndjson(batches: Iterator[pa.RecordBatch]) -> AsyncIterator[bytes]:
    """Each batch's lines, computed in a thread (the event loop only sends)."""

    def next_page() -> tuple[bytes, int] | None:
        batch = next(batches, None)
        if batch is None:
            return None
        buffer = io.StringIO()
        write_jsonl(batch, buffer)
        return buffer.getvalue().encode(), batch.num_rows

    rows, t0 = 0, time.perf_counter()
    try:
        while (page := await asyncio.to_thread(next_page)) is not None:
            rows += page[1]
            yield page[0]
    except T4VError as exc:
        yield _error_line(status_of(exc), str(exc))
        return
    yield (json.dumps({"done": True, "rows": rows, "seconds": round(time.perf_counter() - t0, 3)}) + "\n").encode()
