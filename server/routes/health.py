"""Health, readiness, metrics and the model description."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from text4vis.server.deps import RuntimeDep, StateDep, require_key_for_metrics
from text4vis.server.wire import errors

router = APIRouter(tags=["operations"])


class ModelOut(BaseModel):
    arch: str
    model_id: str
    temporal: str
    preprocess: str
    backend: str
    device: str
    precision: str
    checkpoint: str | None
    text_device: str = Field(description="Where vocabulary prompts are encoded.")
    selection: str = Field(description="Why this backend and precision run (the same sentence as the start-up log).")
    activation: str = Field(description="The visual encoder's activation: quickgelu or gelu.")
    weights_sha256: str = Field(description="The visual encoder's and the head's weights as they run (after casting).")


class Status(BaseModel):
    status: str
    detail: str | None = None


@router.get("/health/live", response_model=Status)
async def live() -> Status:
    """The process is up."""
    return Status(status="ok")


@router.get("/health/ready", response_model=Status, responses={503: {"model": Status, "description": "Not ready"}})
async def ready(service: StateDep) -> Response:
    """200 once the model is loaded and warmed up, while its encoder works and at least one decode
    worker is alive (``detail`` says how many); 503 before, if start-up failed, after the encoder
    failed, with no decode worker, while the vocabulary store fails (SQLite: a read or write failed
    and has not worked since), or while the archive cannot be written (rows wait to be stored)."""
    engine = service.engine
    if service.ready and engine is not None:
        workers = engine.flow.decode_pool.capacity()
        store_problem = await asyncio.to_thread(service.registry.store.health) if service.registry else None
        archive_problem = engine.archive_problem()
        if engine.healthy() and workers > 0 and store_problem is None and archive_problem is None:
            return JSONResponse(Status(status="ready", detail=f"{workers} decode workers").model_dump())
        if not engine.healthy():
            detail = "the encoder failed on its last batch (see the log)"
        elif workers == 0:
            detail = "no decode worker is alive (see the log)"
        elif store_problem is not None:
            detail = str(store_problem)
        else:
            detail = f"the archive cannot be written: {archive_problem}"
        status = Status(status="failed", detail=detail)
    else:
        status = Status(status="failed" if service.error else "loading", detail=service.error)
    return JSONResponse(status.model_dump(), status_code=503, headers={"Retry-After": "5"})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    dependencies=[Depends(require_key_for_metrics)],
)
async def metrics(service: StateDep) -> Response:
    """Prometheus metrics."""
    if service.engine is not None:
        flow = service.engine.flow
        service.metrics.queue_frames.set(flow.batcher.queued_frames)
        service.metrics.decode_pending.set(flow.decode_pool.pending)
        service.metrics.decode_workers.set(flow.decode_pool.capacity())
        admission = flow.admission
        stalled = admission.stalled
        service.metrics.in_progress.labels("uploading").set(admission.uploading - stalled)
        service.metrics.in_progress.labels("stalled").set(stalled)
        service.metrics.in_progress.labels("working").set(admission.working)
        service.metrics.predicted_wait.set(admission.predicted_wait_s() or 0.0)
    if service.engine is not None:
        kept, dropped = service.engine.archive_backlog()
        service.metrics.archive_kept.set(kept)
        service.metrics.archive_dropped.set(dropped)
    if service.connections is not None:
        service.metrics.connections.set(service.connections.total)
        service.metrics.connections_refused.set(service.connections.refused)
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/models", response_model=list[ModelOut], responses=errors(503))
async def models(runtime: RuntimeDep) -> list[ModelOut]:
    """What runs: architecture, weights, backend, device, precision."""
    return [ModelOut(**runtime.info.as_dict())]
