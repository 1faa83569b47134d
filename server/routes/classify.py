"""``POST /classify``: admit, receive the upload, build the request, await the engine, map the result."""

from __future__ import annotations

import asyncio
import base64
import io

import torch
from fastapi import APIRouter, Depends, Request
from PIL import Image

from text4vis.engine.archive.indexer import classified_row
from text4vis.engine.flow.service import ClassifyResult
from text4vis.engine.vocab.classifier import Prediction
from text4vis.server.deps import ClassifyDep, StateDep, require_key_to_classify
from text4vis.server.forms import display_name, parse_form
from text4vis.server.schemas import ClassifyForm, ClassifyOut, PredictionOut, VocabRef, errors

router = APIRouter(tags=["classify"])


@router.post(
    "/classify",
    response_model=ClassifyOut,
    responses=errors(400, 401, 404, 409, 413, 415, 422, 503),
    openapi_extra=ClassifyForm.openapi_body(),
    dependencies=[Depends(require_key_to_classify)],
)
async def classify(request: Request, state: StateDep, flow: ClassifyDep) -> ClassifyOut:
    """Classify a video or an image against a vocabulary (or ad-hoc labels)."""
    # admission before the upload is read (a full server answers at once); written once, here
    async with state.admitted_upload(request, flow) as upload:
        form, path = parse_form(ClassifyForm, upload)
        if form.index:  # a write to the archive needs a key, as a vocabulary write does
            state.api_keys.check(request)
        result = await flow.classify(
            path, form.to_request(), timeout_s=state.time_left_s(upload), name=display_name(upload.filename)
        )
        thumbnails = await asyncio.to_thread(_thumbnails, result.first_view) if form.thumbnails else None
        archive_id = None
        if form.index:
            clip = form.to_request().resolved(state.settings.request_limits())
            table = await asyncio.to_thread(state.archive_table, clip, True)
            row = await asyncio.to_thread(classified_row, path, result)
            state.archive_writer.submit(table, [row])  # committed behind the answer (engine/archive/writer.py)
            archive_id = row.id
    out = classify_out(result, thumbnails)
    out.archive_id = archive_id
    return out


def classify_out(result: ClassifyResult, thumbnails: list[str] | None = None) -> ClassifyOut:
    abstention = result.abstention
    return ClassifyOut(
        vocab=VocabRef(name=result.vocab.name, version=result.vocab.version) if result.vocab else None,
        predictions=predictions_out(result.predictions),
        model=result.model,
        frame_indices=result.frame_indices,
        timing_ms=result.timing_ms,
        thumbnails=thumbnails,
        abstained=abstention.abstained if abstention else None,
        abstain_reason=abstention.reason if abstention else None,
        background=predictions_out(abstention.background) if abstention and abstention.background else None,
    )


def predictions_out(predictions: list[Prediction]) -> list[PredictionOut]:
    return [PredictionOut(label=p.label, probability=p.probability, score=p.score) for p in predictions]


def _thumbnails(frames: torch.Tensor, size: int = 96) -> list[str]:
    """uint8 ``[T, 3, S, S]`` -> JPEG data URLs of ``size`` px."""
    urls = []
    for frame in frames:
        image = Image.fromarray(frame.permute(1, 2, 0).numpy()).resize((size, size), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        urls.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode())
    return urls
