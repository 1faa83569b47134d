"""``POST /classify``: validate, resolve the vocabulary, hand the upload to the engine, map the result."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from pathlib import Path
from typing import TypeVar

import torch
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import ValidationError

from text4vis.engine.flow.service import ClassifyService
from text4vis.engine.request import parse_views
from text4vis.engine.vocab.abstain import decide
from text4vis.engine.vocab.classifier import AbstainDefaults, Classifier
from text4vis.engine.vocab.registry import VocabRegistry
from text4vis.models.errors import InputError
from text4vis.server.deps import ClassifyDep, RegistryDep, StateDep, require_key_to_classify
from text4vis.server.schemas import ClassifyForm, ClassifyOut, PredictionOut, UploadForm, VocabRef, errors
from text4vis.server.state import ServerState
from text4vis.server.uploads import Upload, receive_upload

router = APIRouter(tags=["classify"])
FormT = TypeVar("FormT", bound=UploadForm)


def _parse_labels(labels: str) -> list[str]:
    try:
        value = json.loads(labels)
    except (json.JSONDecodeError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise InputError('labels must be a JSON array of strings, e.g. ["dancing", "surfing"]') from None
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise InputError('labels must be a JSON array of strings, e.g. ["dancing", "surfing"]')
    return value


@router.post("/classify", response_model=ClassifyOut, responses=errors(400, 401, 404, 413, 415, 422, 503),
             openapi_extra=ClassifyForm.openapi_body(), dependencies=[Depends(require_key_to_classify)])
async def classify(request: Request, service: StateDep, registry: RegistryDep, engine: ClassifyDep) -> ClassifyOut:
    """Classify a video or an image against a vocabulary (or ad-hoc labels)."""
    async with engine.admit(), receive_upload(request, service.upload_dir) as upload:  # written once, here
        t0 = time.perf_counter()
        form, path = parse_form(ClassifyForm, upload)
        return await _classify(path, upload.filename, form, service, registry, engine, t0)


def parse_form(form_type: type[FormT], upload: Upload) -> tuple[FormT, Path]:
    """The upload's form fields as ``form_type`` and its file; 422 naming the field otherwise."""
    try:
        form = form_type(**upload.fields)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    if upload.path is None:
        raise RequestValidationError([{"type": "missing", "loc": ("body", "file"), "msg": "Field required",
                                       "input": None}])
    return form, upload.path


def frames_of(form: UploadForm, service: ServerState) -> int:
    settings = service.settings
    frames = form.frames if form.frames is not None else settings.default_frames
    if frames > settings.max_frames:
        raise InputError(f"frames must be at most {settings.max_frames} on this server (its max_frames)")
    return frames


async def resolve_classifier(form: UploadForm, registry: VocabRegistry) -> tuple[Classifier, VocabRef | None]:
    """The registered vocabulary the form names (and its version), or a classifier of its ad-hoc labels."""
    if bool(form.vocab) == bool(form.labels):
        raise InputError("give exactly one of vocab or labels")
    if form.vocab:
        classifier, version = await asyncio.to_thread(registry.classifier, form.vocab)
        return classifier, VocabRef(name=form.vocab, version=version)
    return await asyncio.to_thread(registry.ad_hoc, _parse_labels(form.labels), None, form.clean_labels), None


async def _classify(
    path: Path, filename: str | None, form: ClassifyForm, service: ServerState, registry: VocabRegistry,
    engine: ClassifyService, t0: float,
) -> ClassifyOut:
    settings = service.settings
    frames = frames_of(form, service)
    clips, crops = parse_views(form.views)
    max_clips, max_crops = parse_views(settings.max_views)
    if clips > max_clips or crops > max_crops:
        raise InputError(f"views must be at most {settings.max_views}")

    classifier, ref = await resolve_classifier(form, registry)
    abstain, margin, min_score, background_name = _abstention(form, classifier.abstain)
    background = await asyncio.to_thread(registry.background, classifier, background_name) if abstain else None
    t1 = time.perf_counter()

    result = await engine.classify(path, classifier, frames=frames, clips=clips, crops=crops, top_k=form.top_k,
                                   timeout_s=settings.request_timeout_s, name=display_name(filename),
                                   sampling=form.sampling or settings.default_sampling,  # its rules: sample_clip
                                   background=background)
    abstention = None
    if abstain or min_score is not None:
        abstention = decide(result.predictions[0], result.background, margin, min_score)
    vocab_ms = (t1 - t0) * 1e3
    return ClassifyOut(
        vocab=ref,
        predictions=[PredictionOut(label=p.label, probability=p.probability, score=p.score)
                     for p in result.predictions],
        model=classifier.text_model,
        frame_indices=result.frame_indices,
        timing_ms={"vocab": round(vocab_ms, 2), **result.timing_ms,
                   "total": round(vocab_ms + result.timing_ms["total"], 2)},
        thumbnails=await asyncio.to_thread(_thumbnails, result.first_view) if form.thumbnails else None,
        abstained=abstention.abstained if abstention else None,
        abstain_reason=abstention.reason if abstention else None,
        background=[PredictionOut(label=p.label, probability=p.probability, score=p.score)
                    for p in result.background] if abstain else None,
    )


def _abstention(
    form: ClassifyForm, default: AbstainDefaults | None,
) -> tuple[bool, float, float | None, str | None]:
    """``(score a background?, margin, min_score, background vocabulary)``: the request's fields,
    else the vocabulary's default (``AbstainDefaults``), else off; ``abstain=false`` turns the
    default off."""
    if form.abstain is False:  # off for this request, whatever the vocabulary's default (its own min_score stays)
        if form.background:
            raise InputError("background names a vocabulary to abstain against; it needs abstain unset or true")
        return False, 0.0, form.min_score, None
    abstain = form.abstain if form.abstain is not None else bool(form.background) or default is not None
    margin = form.abstain_margin if form.abstain_margin is not None else (default.margin if default else 0.0)
    min_score = form.min_score if form.min_score is not None else (default.min_score if default else None)
    background = form.background or (default.background if default else None)
    return abstain, margin, min_score, background


def _thumbnails(frames: torch.Tensor, size: int = 96) -> list[str]:
    """uint8 ``[T, 3, S, S]`` -> JPEG data URLs of ``size`` px."""
    urls = []
    for frame in frames:
        image = Image.fromarray(frame.permute(1, 2, 0).numpy()).resize((size, size), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        urls.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode())
    return urls


def display_name(filename: str | None) -> str:
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in name if c.isprintable())[:100] or "upload"

