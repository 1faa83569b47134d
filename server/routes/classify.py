"""``POST /classify``: admit, receive the upload, decode the form into a request, one engine
call (``Engine.classify``), encode its result."""

from __future__ import annotations

import asyncio
import base64
import io
from dataclasses import replace
from typing import ClassVar

import torch
from fastapi import APIRouter, Depends, Request
from PIL import Image
from pydantic import BaseModel, Field, field_validator

from text4vis.engine.facade import ClassifyResult
from text4vis.engine.request import AbstainPolicy, ClassifyRequest, ClipSpec
from text4vis.engine.vocab.classifier import Prediction
from text4vis.models.choices import Sampling
from text4vis.server.deps import EngineDep, StateDep, require_key_to_classify
from text4vis.server.forms import display_name, parse_form
from text4vis.server.wire import PredictionOut, UploadForm, VocabRef, errors

router = APIRouter(tags=["classify"])


class ClassifyForm(UploadForm):
    """The form fields of ``POST /classify`` (beside the ``file`` part)."""

    route: ClassVar[str] = "POST /classify"

    views: str = Field("1x1", description="CLIPSxCROPS: 1x1 or up to the server's max, e.g. 4x3.")
    sampling: Sampling | None = Field(
        None,
        description="exact: the method's test-time frames; fast: one cheap-to-decode frame per TSN segment "
        "(one clip); unset or empty: the server's default_sampling.",
    )
    thumbnails: bool = Field(False, description="Also return the first view's frames as small JPEG data URLs.")
    abstain: bool | None = Field(
        None,
        description='"None of these": also score a background vocabulary (the '
        "Kinetics-400 names minus those close to these labels) and "
        "abstain when its best label beats the vocabulary's best by "
        "abstain_margin. Unset: the vocabulary's default (off if none).",
    )
    abstain_margin: float | None = Field(
        None, ge=0.0, le=1.0, description="Cosine margin the background must win by (unset: the vocabulary's, else 0)."
    )
    min_score: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="Abstain when the best label's cosine is below this (unset: the vocabulary's).",
    )
    background: str = Field(
        "",
        description="A registered vocabulary to score as the background instead of the "
        "built-in one (implies abstain unless abstain=false).",
    )
    index: bool = Field(
        False,
        description="Also store the video's embedding in the archive (no extra decode or encode); "
        "the answer's archive_id names the row. Needs an API key where keys are configured.",
    )
    index_required: bool = Field(
        False,
        description="With index=true, while the archive cannot be written: a 503 (nothing classified) instead "
        "of an answer whose row is only kept in memory to be stored later.",
    )

    @field_validator("sampling", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    def to_request(self) -> ClassifyRequest:
        return replace(
            super().to_request(),
            clip=ClipSpec(self.frames, self.views, self.sampling),
            abstain=AbstainPolicy(self.abstain, self.abstain_margin, self.min_score, self.background or None),
        )


class ClassifyOut(BaseModel):
    vocab: VocabRef | None = Field(description="The vocabulary used; null for ad-hoc labels.")
    predictions: list[PredictionOut]
    model: str = Field(description="Text model id the classifier was built with.")
    frame_indices: list[int] = Field(description="Sampled frames, clips x T, clip-major.")
    timing_ms: dict[str, float]
    thumbnails: list[str] | None = Field(None, description="JPEG data URLs of the sampled frames, when asked.")
    abstained: bool | None = Field(
        None,
        description="With abstain or min_score: whether the answer is none of "
        "these (the predictions are still returned).",
    )
    abstain_reason: str | None = Field(None, description="Why it abstained, in words.")
    background: list[PredictionOut] | None = Field(None, description="With abstain: the nearest background labels.")
    archive_id: str | None = Field(None, description="With index=true: the archive row's id (the file's SHA-256).")
    archive_stored: bool | None = Field(
        None,
        description="With index=true: false while the archive cannot be written; the row is then kept in memory "
        "and stored once it can (lost if the server stops first); archive_error says why.",
    )
    archive_error: str | None = Field(None, description="With index=true: why the archive cannot be written now.")


@router.post(
    "/classify",
    response_model=ClassifyOut,
    responses=errors(400, 401, 404, 409, 413, 415, 422, 503),
    openapi_extra=ClassifyForm.openapi_body(),
    dependencies=[Depends(require_key_to_classify)],
)
async def classify(request: Request, state: StateDep, engine: EngineDep) -> ClassifyOut:
    """Classify a video or an image against a vocabulary (or ad-hoc labels)."""
    # admission before the upload is read (a full server answers at once); written once, here
    async with state.admitted_upload(request, engine) as upload:
        form, path = parse_form(ClassifyForm, upload)
        if form.index:  # a write to the archive needs a key, as a vocabulary write does
            state.api_keys.check(request)
        result = await engine.classify(
            path,
            form.to_request(),
            timeout_s=state.time_left_s(upload),
            name=display_name(upload.filename),
            index=form.index,
            index_required=form.index_required,
        )
        thumbnails = await asyncio.to_thread(_thumbnails, result.first_view) if form.thumbnails else None
    return classify_out(result, thumbnails)


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
        archive_id=result.archive_id,
        archive_stored=None if result.archive_id is None else result.archive_problem is None,
        archive_error=result.archive_problem,
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
