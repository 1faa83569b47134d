"""``POST /classify``: validate, resolve the vocabulary, hand the upload to the engine, map the result."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import torch
from fastapi import APIRouter, File, Form, UploadFile
from PIL import Image

from engine.classifier import Classifier
from engine.sampling import parse_views
from models.errors import InputError
from server.deps import EngineDep, RegistryDep, ServiceDep
from server.schemas import ClassifyOut, PredictionOut, VocabRef, errors

router = APIRouter(tags=["classify"])


def _parse_labels(labels: str) -> list[str]:
    try:
        value = json.loads(labels)
    except json.JSONDecodeError:
        raise InputError('labels must be a JSON array of strings, e.g. ["dancing", "surfing"]') from None
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise InputError('labels must be a JSON array of strings, e.g. ["dancing", "surfing"]')
    return value


@router.post("/classify", response_model=ClassifyOut, responses=errors(400, 404, 413, 415, 422, 503))
async def classify(
    service: ServiceDep,
    registry: RegistryDep,
    engine: EngineDep,
    file: Annotated[UploadFile, File(description="A video (mp4, avi, webm, ...) or an image (jpeg, png, webp, gif).")],
    vocab: Annotated[str, Form(description="A registered vocabulary name (give vocab or labels).")] = "",
    labels: Annotated[str, Form(description='Ad-hoc labels instead of vocab: a JSON array, e.g. ["a", "b"].')] = "",
    top_k: Annotated[int, Form(ge=0, le=100_000, description="Predictions to return; 0 = all.")] = 5,
    frames: Annotated[
        int, Form(ge=0, le=64, description="Frames sampled per clip (T); 0 = the server's default_frames.")
    ] = 0,
    views: Annotated[str, Form(description="CLIPSxCROPS: 1x1 or up to the server's max, e.g. 4x3.")] = "1x1",
    thumbnails: Annotated[
        bool, Form(description="Also return the first view's frames as small JPEG data URLs.")
    ] = False,
) -> ClassifyOut:
    """Classify a video or an image against a vocabulary (or ad-hoc labels)."""
    t0 = time.perf_counter()
    settings = service.settings
    if bool(vocab) == bool(labels):
        raise InputError("give exactly one of vocab or labels")
    frames = frames or settings.default_frames
    if frames > settings.max_frames:
        raise InputError(f"frames must be at most {settings.max_frames}")
    try:
        clips, crops = parse_views(views)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    max_clips, max_crops = parse_views(settings.max_views)
    if clips > max_clips or crops > max_crops:
        raise InputError(f"views must be at most {settings.max_views}")

    classifier: Classifier
    ref: VocabRef | None = None
    if vocab:
        classifier, version = await asyncio.to_thread(registry.classifier, vocab)
        ref = VocabRef(name=vocab, version=version)
    else:
        classifier = await asyncio.to_thread(registry.ad_hoc, _parse_labels(labels))
    t1 = time.perf_counter()

    with tempfile.NamedTemporaryFile(dir=service.upload_dir, suffix=_suffix(file.filename)) as tmp:
        await asyncio.to_thread(shutil.copyfileobj, file.file, tmp, 1 << 20)
        await asyncio.to_thread(tmp.flush)
        result = await engine.classify(Path(tmp.name), classifier, frames=frames, clips=clips, crops=crops,
                                       top_k=top_k, timeout_s=settings.request_timeout_s,
                                       name=_display_name(file.filename))
    vocab_ms = (t1 - t0) * 1e3
    return ClassifyOut(
        vocab=ref,
        predictions=[PredictionOut(label=p.label, probability=p.probability, score=p.score)
                     for p in result.predictions],
        model=classifier.text_model,
        frame_indices=result.frame_indices,
        timing_ms={"vocab": round(vocab_ms, 2), **result.timing_ms,
                   "total": round(vocab_ms + result.timing_ms["total"], 2)},
        thumbnails=await asyncio.to_thread(_thumbnails, result.first_view) if thumbnails else None,
    )


def _thumbnails(frames: torch.Tensor, size: int = 96) -> list[str]:
    """uint8 ``[T, 3, S, S]`` -> JPEG data URLs of ``size`` px."""
    urls = []
    for frame in frames:
        image = Image.fromarray(frame.permute(1, 2, 0).numpy()).resize((size, size), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        urls.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode())
    return urls


def _display_name(filename: str | None) -> str:
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in name if c.isprintable())[:100] or "upload"


def _suffix(filename: str | None) -> str:
    if not filename or "." not in filename:
        return ""
    suffix = "." + filename.rsplit(".", 1)[1][:10]
    return suffix if suffix[1:].isalnum() else ""
