"""``/archive``: videos indexed once (their embeddings in LanceDB, ``engine/archive/``),
re-labelled under any vocabulary without decoding, and searched by text.

Which table a route reads is chosen by ``frames``, ``views`` and ``sampling`` (the server's
defaults when unset), with the running model: the archive's fingerprint. Writes (index, delete)
need an API key where keys are configured, as vocabulary writes do.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

import pyarrow as pa
from fastapi import APIRouter, Depends, Path, Query, Request

from text4vis.engine.archive.indexer import index_file
from text4vis.engine.archive.relabel import write_jsonl
from text4vis.engine.archive.search import search_text
from text4vis.engine.archive.store import ArchiveTable
from text4vis.engine.request import AbstainPolicy, ClassifyRequest, ClipSpec, ResolvedClip
from text4vis.engine.vocab.classifier import Classifier
from text4vis.models.choices import Sampling
from text4vis.models.errors import InputError, T4VError
from text4vis.server.deps import ClassifyDep, RuntimeDep, StateDep, require_key, require_key_to_classify
from text4vis.server.errors import status_of
from text4vis.server.forms import display_name, parse_form
from text4vis.server.schemas import (
    ArchiveForm,
    ArchiveIndexOut,
    ArchiveLabelsIn,
    ArchivePage,
    ArchiveRowOut,
    ArchiveStatsOut,
    ArchiveTableOut,
    SearchHitOut,
    SearchOut,
    errors,
)
from text4vis.server.state import ServerState
from text4vis.server.streaming import NDJSON, GuardedStream

router = APIRouter(prefix="/archive", tags=["archive"])
RowId = Annotated[str, Path(description="A row's id (a video's is its file's SHA-256).", max_length=200)]
Frames = Annotated[int | None, Query(ge=1, description="Which table: frames per clip (unset: the server's).")]
Views = Annotated[str, Query(max_length=8, description="Which table: CLIPSxCROPS.")]
SamplingQ = Annotated[Sampling | None, Query(description="Which table: exact or fast (unset: the server's).")]


def _clip(state: ServerState, frames: int | None, views: str, sampling: Sampling | None) -> ResolvedClip:
    request = ClassifyRequest(labels=("-",), clip=ClipSpec(frames, views, sampling))
    return request.resolved(state.settings.request_limits())


async def _table(state: ServerState, clip: ResolvedClip, create: bool = False) -> ArchiveTable:
    """The table, once the rows index=true requests queued before this one are committed (a
    client sees what it indexed)."""
    await asyncio.to_thread(state.archive_writer.flush)
    return await asyncio.to_thread(state.archive_table, clip, create)


def _row_out(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "thumbnail"}
    if row.get("thumbnail"):
        out["thumbnail"] = "data:image/jpeg;base64," + base64.b64encode(row["thumbnail"]).decode()
    return out


@router.post(
    "/videos",
    response_model=ArchiveIndexOut,
    responses=errors(400, 401, 409, 413, 415, 422, 503),
    openapi_extra=ArchiveForm.openapi_body(),
    dependencies=[Depends(require_key)],
)
async def add_video(request: Request, state: StateDep, flow: ClassifyDep) -> ArchiveIndexOut:
    """Upload a video and store its embedding (and its windows' with ``window_s``); a file stored
    before (same bytes) is not decoded again. Answers the stored row."""
    async with state.admitted_upload(request, flow) as upload:
        form, path = parse_form(ArchiveForm, upload)
        metadata = _metadata(form.metadata)
        clip = _clip(state, form.frames, form.views, form.sampling)
        table = await _table(state, clip, create=True)
        name = display_name(upload.filename)
        done = await index_file(
            flow,
            table,
            path,
            clip,
            name=name,
            windows_s=form.window_s,
            metadata=metadata,
            timeout_s=state.time_left_s(upload),
        )
    row = await asyncio.to_thread(table.get, done.id, True)
    return ArchiveIndexOut(video=ArchiveRowOut(**_row_out(row)), windows=done.windows, new=not done.skipped)


def _metadata(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise InputError('metadata must be a JSON object, e.g. {"camera": 3}') from None
    if not isinstance(value, dict) or len(text) > 16_384:
        raise InputError('metadata must be a JSON object of at most 16 KiB, e.g. {"camera": 3}')
    return value


@router.get("/videos", response_model=ArchivePage, responses=errors(409, 422, 503))
async def list_videos(
    state: StateDep,
    runtime: RuntimeDep,
    kind: Literal["video", "window"] | None = "video",
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    thumbnails: bool = False,
    frames: Frames = None,
    views: Views = "1x1",
    sampling: SamplingQ = None,
) -> ArchivePage:
    """Stored rows, a page at a time."""
    table = await _table(state, _clip(state, frames, views, sampling))
    rows = await asyncio.to_thread(table.page, kind, offset, limit, thumbnails)
    total = await asyncio.to_thread(table.count, kind)
    return ArchivePage(rows=[ArchiveRowOut(**_row_out(r)) for r in rows], total=total, offset=offset)


@router.get("/videos/{row_id}", response_model=ArchiveRowOut, responses=errors(404, 409, 422, 503))
async def get_video(
    row_id: RowId,
    state: StateDep,
    runtime: RuntimeDep,
    frames: Frames = None,
    views: Views = "1x1",
    sampling: SamplingQ = None,
) -> ArchiveRowOut:
    table = await _table(state, _clip(state, frames, views, sampling))
    return ArchiveRowOut(**_row_out(await asyncio.to_thread(table.get, row_id, True)))


@router.delete(
    "/videos/{row_id}",
    responses=errors(401, 404, 409, 422, 503),
    dependencies=[Depends(require_key)],
)
async def delete_video(
    row_id: RowId,
    state: StateDep,
    runtime: RuntimeDep,
    frames: Frames = None,
    views: Views = "1x1",
    sampling: SamplingQ = None,
) -> dict[str, int]:
    """A video and its windows."""
    table = await _table(state, _clip(state, frames, views, sampling))
    return {"deleted": await asyncio.to_thread(table.delete, row_id)}


@router.get("/stats", response_model=ArchiveStatsOut, responses=errors(503))
async def stats(state: StateDep, runtime: RuntimeDep) -> ArchiveStatsOut:
    """Every table of the archive: its model and sampling, rows, and whether it has a vector index."""
    archive = state.archive
    assert archive is not None
    await asyncio.to_thread(state.archive_writer.flush)

    def read() -> list[ArchiveTableOut]:
        out = []
        for spec in archive.specs():
            table = archive.table(spec)
            out.append(
                ArchiveTableOut(
                    fingerprint=spec.fingerprint,
                    model=spec.describe(),
                    videos=table.count("video"),
                    windows=table.count("window"),
                    vector_index=table.has_index(),
                )
            )
        return out

    return ArchiveStatsOut(uri=archive.uri, tables=await asyncio.to_thread(read))


@router.get(
    "/search",
    response_model=SearchOut,
    responses=errors(401, 409, 422, 503),
    dependencies=[Depends(require_key_to_classify)],
)
async def search(
    state: StateDep,
    runtime: RuntimeDep,
    q: Annotated[str, Query(min_length=1, max_length=300, description="What to look for, e.g. surfing.")],
    k: Annotated[int, Query(ge=1, le=1000)] = 10,
    kind: Literal["video", "window"] = "video",
    thumbnails: bool = True,
    frames: Frames = None,
    views: Views = "1x1",
    sampling: SamplingQ = None,
) -> SearchOut:
    """The stored videos (or windows, with their times) nearest a text, best first."""
    table = await _table(state, _clip(state, frames, views, sampling))
    hits = await asyncio.to_thread(search_text, table, runtime.text_encoder, q, k, kind, thumbnail=thumbnails)
    return SearchOut(query=q, results=[SearchHitOut(**_row_out(h.row), score=h.score) for h in hits])


@router.post(
    "/labels",
    responses={
        200: {"description": "One JSON object per stored row (NDJSON), then a summary line.", "content": {NDJSON: {}}},
        **errors(401, 404, 409, 422, 503),
    },
    dependencies=[Depends(require_key_to_classify)],
)
async def labels(body: ArchiveLabelsIn, state: StateDep, flow: ClassifyDep) -> GuardedStream:
    """Every stored row under a vocabulary (or ad-hoc labels), without decoding anything: the
    predictions ``/classify`` gives the same files. NDJSON, streamed as it is computed: one line
    per row (its id, name, times, predictions and, with abstention, the decision), then
    ``{"done": true, "rows": N}``, or ``{"error": ..., "status": ...}`` if it fails midway."""
    from text4vis.engine.archive.relabel import relabel_batches

    request = ClassifyRequest(
        vocab=body.vocab,
        labels=tuple(body.labels) if body.labels is not None else None,
        templates=tuple(body.templates) if body.templates else None,
        top_k=body.top_k,
        abstain=AbstainPolicy(body.abstain, body.abstain_margin, body.min_score, body.background),
    )
    clip = _clip(state, body.frames, body.views, body.sampling)
    request.resolved(state.settings.request_limits())
    classifier, _ = await flow.classifier_for(request)
    policy = request.abstain.resolved(classifier.abstain)
    background: Classifier | None = None
    if policy.score_background:
        assert state.registry is not None
        background = await asyncio.to_thread(state.registry.background, classifier, policy.background)
    table = await _table(state, clip)
    batches = relabel_batches(
        table.embeddings(None if body.kind == "all" else body.kind), classifier, body.top_k, policy, background
    )
    return GuardedStream(
        _ndjson(batches),
        error_line=_error_line,
        stall_s=state.settings.request_timeout_s,  # a client that reads nothing for this long is gone
        stopping=state.stopping,
    )


def _error_line(status: int, detail: str) -> bytes:
    """The line that ends a stream of rows that failed (or a server shutting down)."""
    return (json.dumps({"error": detail, "status": status}) + "\n").encode()


async def _ndjson(batches: Iterator[pa.RecordBatch]) -> AsyncIterator[bytes]:
    """Each batch's lines, computed in a thread (the event loop only sends)."""
    import io

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
