"""``POST /classify/timeline``: a long video as windows of time, each classified as a video of its
own (``models/windows.py`` plans them, ``Engine.timeline`` embeds and scores them).

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
from collections.abc import AsyncIterator
from typing import ClassVar, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from text4vis.engine.facade import Timeline
from text4vis.engine.flow.timeline import Event, Segment, merge_events
from text4vis.engine.request import WindowSpec
from text4vis.models.errors import T4VError
from text4vis.models.windows import MAX_WINDOW_S
from text4vis.server.deps import EngineDep, StateDep, require_key_to_classify
from text4vis.server.errors import status_of
from text4vis.server.forms import display_name, parse_form
from text4vis.server.routes.classify import predictions_out
from text4vis.server.streaming import NDJSON, GuardedStream
from text4vis.server.wire import PredictionOut, UploadForm, VocabRef, errors

log = logging.getLogger(__name__)
router = APIRouter(tags=["classify"])


class TimelineForm(UploadForm):
    """The form fields of ``POST /classify/timeline`` (beside the ``file`` part, a video)."""

    route: ClassVar[str] = "POST /classify/timeline"

    top_k: int = Field(3, ge=0, le=100_000, description="Predictions per window; 0 = all.")
    window_s: float = Field(
        8.0,
        gt=0,
        le=MAX_WINDOW_S,
        description="Seconds per window; each window is sampled as a video of its own (T frames).",
    )
    stride_s: float | None = Field(
        None, gt=0, le=MAX_WINDOW_S, description="Seconds from one window's start to the next; unset: window_s."
    )
    stream: bool = Field(
        False,
        description="Answer application/x-ndjson, one line per window as it is scored "
        "(first a start line, last an end line with the events).",
    )
    index: bool = Field(
        False,
        description="Also store each window's embedding in the archive (kind window; no extra decode or "
        "encode); archive_id names the video. Needs an API key where keys are configured.",
    )

    def window(self, max_windows: int) -> WindowSpec:
        return WindowSpec(self.window_s, self.stride_s or self.window_s, max_windows)


class SegmentOut(BaseModel):
    start_s: float = Field(description="Window start, seconds from the video's first frame.")
    end_s: float = Field(description="Window end (the video's end for a last, shorter window).")
    frame_indices: list[int] = Field(description="The window's sampled frames (indices in the whole video).")
    times_s: list[float] = Field(description="When those frames are shown (from their timestamps).")
    predictions: list[PredictionOut]


class EventOut(BaseModel):
    label: str = Field(description="The top label of consecutive windows that agree on it.")
    start_s: float
    end_s: float
    probability: float = Field(description="Mean of the label's probability over the event's windows.")
    windows: int


class TimelineOut(BaseModel):
    vocab: VocabRef | None = Field(description="The vocabulary used; null for ad-hoc labels.")
    model: str = Field(description="Text model id the classifier was built with.")
    duration_s: float
    window_s: float
    stride_s: float
    frames: int = Field(description="Frames sampled per window (T).")
    segments: list[SegmentOut]
    events: list[EventOut]
    timing_ms: dict[str, float]
    archive_id: str | None = Field(None, description="With index=true: the video's content id (its windows' rows).")


class TimelineStartLine(BaseModel):
    """First line of a streamed timeline."""

    type: Literal["start"] = "start"
    vocab: VocabRef | None
    model: str
    duration_s: float
    window_s: float
    stride_s: float
    frames: int
    windows: int = Field(description="Segment lines to expect.")


class TimelineSegmentLine(SegmentOut):
    type: Literal["segment"] = "segment"


class TimelineEndLine(BaseModel):
    """Last line of a streamed timeline that completed."""

    type: Literal["end"] = "end"
    events: list[EventOut]
    timing_ms: dict[str, float]
    archive_id: str | None = Field(None, description="With index=true: the video's content id (its windows' rows).")


class TimelineErrorLine(BaseModel):
    """Last line of a streamed timeline that failed after it began (the HTTP status was already 200)."""

    type: Literal["error"] = "error"
    status: int = Field(description="The status the error would have had before the response began.")
    detail: str


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
async def timeline(request: Request, state: StateDep, engine: EngineDep) -> TimelineOut | Response:
    """Classify a video window by window: segments with their predictions, and merged events."""
    settings = state.settings
    async with contextlib.AsyncExitStack() as stack:
        upload = await stack.enter_async_context(state.admitted_upload(request, engine))
        t0 = time.perf_counter()
        form, path = parse_form(TimelineForm, upload)
        if form.index:  # a write to the archive needs a key, as a vocabulary write does
            state.api_keys.check(request)
        timeout_s = settings.timeline_timeout_s - upload.seconds  # the whole answer's, the upload included
        run = await engine.timeline(
            path,
            form.to_request(),
            form.window(settings.max_timeline_windows),
            timeout_s=max(timeout_s, 1e-3),
            name=display_name(upload.filename),
            index=form.index,
        )
        if not form.stream:
            segments = [s async for s in run.segments()]
            return _whole(run, segments, t0)
        held = stack.pop_all()  # the stream now owns the admission and the upload
    return GuardedStream(
        _lines(run, t0),
        error_line=lambda status, detail: _line(TimelineErrorLine(status=status, detail=detail)),
        stall_s=settings.request_timeout_s,
        deadline=asyncio.get_running_loop().time() + run.seconds_left(),
        stopping=state.stopping,
        held=held,
    )


def _head(run: Timeline) -> dict[str, object]:
    vocab = run.scoring.vocab
    return {
        "vocab": VocabRef(name=vocab.name, version=vocab.version) if vocab else None,
        "model": run.scoring.text_model,
        "duration_s": run.plan.duration_s,
        "window_s": run.window.window_s,
        "stride_s": run.window.stride_s,
        "frames": run.frames,
    }


def _whole(run: Timeline, segments: list[Segment], t0: float) -> TimelineOut:
    return TimelineOut(
        **_head(run),  # type: ignore[arg-type]
        segments=[_segment(s) for s in segments],
        events=_events(merge_events(segments)),
        timing_ms=_timing(run, t0),
        archive_id=run.archive_id,
    )


async def _lines(run: Timeline, t0: float) -> AsyncIterator[bytes]:
    yield _line(TimelineStartLine(**_head(run), windows=len(run.plan.windows)))  # type: ignore[arg-type]
    segments = run.segments()
    done: list[Segment] = []
    try:
        async for segment in segments:
            done.append(segment)
            yield _line(TimelineSegmentLine(**_segment(segment).model_dump()))
    except T4VError as exc:  # the status line went out long ago: the error is the last line
        yield _line(TimelineErrorLine(status=status_of(exc), detail=str(exc)))
        return
    except Exception:  # noqa: BLE001 - as the server's catch-all would answer it
        log.exception("timeline failed after it began")
        yield _line(TimelineErrorLine(status=500, detail="internal error"))
        return
    finally:
        await segments.aclose()  # type: ignore[attr-defined]
    yield _line(
        TimelineEndLine(events=_events(merge_events(done)), timing_ms=_timing(run, t0), archive_id=run.archive_id)
    )


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


def _timing(run: Timeline, t0: float) -> dict[str, float]:
    timing = {**run.timing_ms, "total": (time.perf_counter() - t0) * 1e3}
    return {k: round(v, 2) for k, v in timing.items()}
