"""``POST /classify/timeline``: a long video as windows of time, each classified as a video of its
own (``models/windows.py`` plans them, :meth:`engine.service.ClassifyService.timeline` runs them).

One JSON answer at the end, or (``stream=true``) NDJSON: a start line, one line per window as it
is scored, an end line with the merged events, or an error line if the file fails midway (or
the server shuts down). ``timeline_timeout_s`` bounds the whole answer, the upload and the sends
to the client included; a streamed response keeps the request's admission and its spooled upload
until it ends (``server/streaming.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel

from text4vis.engine.archive.indexer import store_segments
from text4vis.engine.flow.timeline import Event, Segment, merge_events
from text4vis.engine.request import ClassifyRequest, ClipSpec
from text4vis.models.choices import Sampling
from text4vis.models.errors import T4VError
from text4vis.models.windows import check_window
from text4vis.server.deps import ClassifyDep, StateDep, require_key_to_classify
from text4vis.server.errors import status_of
from text4vis.server.forms import display_name, parse_form
from text4vis.server.routes.classify import predictions_out
from text4vis.server.schemas import (
    EventOut,
    SegmentOut,
    TimelineEndLine,
    TimelineErrorLine,
    TimelineForm,
    TimelineOut,
    TimelineSegmentLine,
    TimelineStartLine,
    VocabRef,
    errors,
)
from text4vis.server.streaming import NDJSON, GuardedStream

log = logging.getLogger(__name__)
router = APIRouter(tags=["classify"])


def _line_schema(model: type[BaseModel]) -> dict[str, object]:
    """A line's schema written out in place (the line models are no route's response model, so
    they are not among the components); what it nests (VocabRef, PredictionOut, EventOut) is."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


_STREAMED = {
    "description": "With stream=true: one JSON object per line (start, segment..., end or error).",
    "content": {
        NDJSON: {
            "schema": {
                "oneOf": [
                    _line_schema(m)
                    for m in (TimelineStartLine, TimelineSegmentLine, TimelineEndLine, TimelineErrorLine)
                ]
            }
        }
    },
}


@router.post(
    "/classify/timeline",
    response_model=TimelineOut,
    responses={200: _STREAMED, **errors(400, 401, 404, 409, 413, 415, 422, 503)},
    openapi_extra=TimelineForm.openapi_body(),
    dependencies=[Depends(require_key_to_classify)],
)
async def timeline(request: Request, state: StateDep, flow: ClassifyDep) -> TimelineOut | Response:
    """Classify a video window by window: segments with their predictions, and merged events."""
    settings = state.settings
    async with contextlib.AsyncExitStack() as stack:
        upload = await stack.enter_async_context(state.admitted_upload(request, flow))
        loop = asyncio.get_running_loop()
        deadline = loop.time() - upload.seconds + settings.timeline_timeout_s  # the whole answer's
        t0 = time.perf_counter()
        form, path = parse_form(TimelineForm, upload)
        if form.index:  # a write to the archive needs a key, as a vocabulary write does
            state.api_keys.check(request)
        stride_s = form.stride_s or form.window_s
        check_window(form.window_s, stride_s)
        classify_request = form.to_request()
        frames = classify_request.resolved(flow.limits).frames
        classifier, vocab = await flow.classifier_for(classify_request)
        ref = VocabRef(name=vocab.name, version=vocab.version) if vocab else None
        t1 = time.perf_counter()
        name = display_name(upload.filename)
        plan = await flow.plan_timeline(
            path,
            window_s=form.window_s,
            stride_s=stride_s,
            frames=frames,
            max_windows=settings.max_timeline_windows,
            timeout_s=min(state.time_left_s(upload), deadline - loop.time()),
            name=name,
        )
        t2 = time.perf_counter()
        segments = flow.timeline(
            path, plan, classifier, top_k=form.top_k, timeout_s=max(deadline - loop.time(), 1e-3), name=name
        )
        timing = {"vocab": (t1 - t0) * 1e3, "plan": (t2 - t1) * 1e3}
        store: Callable[[list[Segment]], Awaitable[str]] | None = None
        if form.index:
            clip = ClassifyRequest(labels=("-",), clip=ClipSpec(frames, "1x1", Sampling.EXACT)).resolved(flow.limits)
            duration = plan.duration_s

            async def store(done: list[Segment]) -> str:
                table = await asyncio.to_thread(state.archive_table, clip, True)
                return await asyncio.to_thread(store_segments, table, path, name, done, duration)

        if not form.stream:
            done = [s async for s in segments]
            archive_id = await store(done) if store is not None else None
            timing["total"] = (time.perf_counter() - t0) * 1e3
            return TimelineOut(
                vocab=ref,
                model=classifier.text_model,
                duration_s=plan.duration_s,
                window_s=form.window_s,
                stride_s=stride_s,
                frames=frames,
                segments=[_segment(s) for s in done],
                events=_events(merge_events(done)),
                timing_ms=_rounded(timing),
                archive_id=archive_id,
            )
        start = TimelineStartLine(
            vocab=ref,
            model=classifier.text_model,
            duration_s=plan.duration_s,
            window_s=form.window_s,
            stride_s=stride_s,
            frames=frames,
            windows=len(plan.windows),
        )
        held = stack.pop_all()  # the stream now owns the admission and the upload
    return GuardedStream(
        _lines(start, segments, timing, t0, store),
        error_line=lambda status, detail: _line(TimelineErrorLine(status=status, detail=detail)),
        stall_s=settings.request_timeout_s,
        deadline=deadline,
        stopping=state.stopping,
        held=held,
    )


async def _lines(
    start: TimelineStartLine,
    segments: AsyncIterator[Segment],
    timing: dict[str, float],
    t0: float,
    store: Callable[[list[Segment]], Awaitable[str]] | None = None,
) -> AsyncIterator[bytes]:
    yield _line(start)
    done: list[Segment] = []
    archive_id = None
    try:
        async for segment in segments:
            done.append(segment)
            yield _line(TimelineSegmentLine(**_segment(segment).model_dump()))
        if store is not None:  # the windows, once all are in (the upload is still held)
            archive_id = await store(done)
    except T4VError as exc:  # the status line went out long ago: the error is the last line
        yield _line(TimelineErrorLine(status=status_of(exc), detail=str(exc)))
        return
    except Exception:  # noqa: BLE001 - as the server's catch-all would answer it
        log.exception("timeline failed after it began")
        yield _line(TimelineErrorLine(status=500, detail="internal error"))
        return
    finally:
        await segments.aclose()  # type: ignore[attr-defined]
    timing["total"] = (time.perf_counter() - t0) * 1e3
    yield _line(TimelineEndLine(events=_events(merge_events(done)), timing_ms=_rounded(timing), archive_id=archive_id))


def _line(model: BaseModel) -> bytes:
    return model.model_dump_json().encode() + b"\n"


def _segment(s: Segment) -> SegmentOut:
    return SegmentOut(
        start_s=s.start_s,
        end_s=s.end_s,
        frame_indices=s.frame_indices,
        times_s=s.times_s,
        predictions=predictions_out(s.predictions),
    )


def _events(events: list[Event]) -> list[EventOut]:
    return [
        EventOut(label=e.label, start_s=e.start_s, end_s=e.end_s, probability=e.probability, windows=e.windows)
        for e in events
    ]


def _rounded(timing: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in timing.items()}
