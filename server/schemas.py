"""Request and response bodies: the OpenAPI schema is generated from these."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from text4vis.engine.request import AbstainPolicy, ClassifyRequest, ClipSpec
from text4vis.models.choices import Sampling
from text4vis.models.errors import InputError
from text4vis.models.windows import MAX_WINDOW_S

Label = Annotated[str, StringConstraints(min_length=1, max_length=300, pattern=r"\S")]
Template = Annotated[str, StringConstraints(min_length=2, max_length=300, pattern=r"^[^{}]*\{\}[^{}]*$")]
_TEMPLATES = Field(
    None,
    min_length=1,
    max_length=64,
    description='Prompt templates with one "{}" (default: the reference\'s one, '
    '"a video of a person {}."; several are averaged, CLIP\'s prompt ensemble, our extension).',
)
_CLEAN = Field(
    False,
    description="Prompt cleaned-up labels (ApplyEyeMakeup -> apply eye makeup); by default "
    "labels are used as written, as the reference and its checkpoints do.",
)


VocabName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class AbstainIn(BaseModel):
    """A vocabulary's default for "none of these": classify requests naming it abstain as with
    abstain=true and these values, unless they say otherwise."""

    model_config = ConfigDict(extra="forbid")
    margin: float = Field(0.0, ge=0.0, le=1.0, description="Cosine margin the background must win by.")
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="Abstain when the best cosine is below this.")
    background: VocabName | None = Field(
        None, description="A registered vocabulary to use as the background (default: the built-in Kinetics-400 names)."
    )


_ABSTAIN = Field(
    None,
    description='Default "none of these" for classify requests naming this vocabulary '
    "(omitted: only when a request asks).",
)


class VocabLabelsIn(BaseModel):
    """A vocabulary from class names."""

    model_config = ConfigDict(extra="forbid")
    labels: list[Label] = Field(
        min_length=1,
        max_length=100_000,
        json_schema_extra={"uniqueItems": True},
        description="Class names, unique, at most the server's max_labels; each prompt at most 77 tokens.",
    )
    templates: list[Template] | None = _TEMPLATES
    clean_labels: bool = _CLEAN
    abstain: AbstainIn | None = _ABSTAIN


class VocabPresetIn(BaseModel):
    """A vocabulary from a built-in label set."""

    model_config = ConfigDict(extra="forbid")
    preset: Literal["kinetics400"] = Field(description="A built-in label set.")
    templates: list[Template] | None = _TEMPLATES
    clean_labels: bool = _CLEAN
    abstain: AbstainIn | None = _ABSTAIN


VocabIn = VocabLabelsIn | VocabPresetIn


class LintWarningOut(BaseModel):
    kind: Literal["similar", "near_duplicate"] = Field(
        description="similar: the two classifier rows are closer than the lint threshold (cosine); near_duplicate: "
        "the same words after normalisation (case, punctuation, plural)."
    )
    labels: list[str] = Field(description="The two labels.")
    cosine: float = Field(description="Cosine of their classifier rows.")


class VocabOut(BaseModel):
    name: str
    version: int
    labels: list[str]
    templates: list[str]
    clean_labels: bool = Field(description="Whether the prompts use cleaned-up labels.")
    text_model: str
    etag: str
    abstain: AbstainIn | None = Field(None, description='The default "none of these", if it has one.')
    warnings: list[LintWarningOut] = Field(
        default_factory=list,
        description="Label pairs the classifier will likely confuse (informative: nothing is "
        "refused for them); at most 100, near duplicates first.",
    )


class SimilarityOut(BaseModel):
    labels: list[str]
    order: list[int] = Field(description="Label indices clustered so that similar labels are adjacent.")
    matrix: list[list[float]] = Field(description="Cosine of each pair of classifier rows, in labels' order.")


class VocabSummaryOut(BaseModel):
    name: str
    version: int
    num_labels: int
    text_model: str
    etag: str
    encoded_for_this_model: bool = Field(
        description="Whether its embeddings are this server's text model's; if not, the first use encodes it again."
    )


class VocabList(BaseModel):
    vocabularies: list[VocabSummaryOut]


class VocabRef(BaseModel):
    name: str
    version: int


class PredictionOut(BaseModel):
    label: str
    probability: float = Field(description="Softmax over all labels of 100 x cosine.")
    score: float = Field(description="Cosine similarity of the video and the label embedding.")


class UploadForm(BaseModel):
    """Form fields every upload route takes (beside the ``file`` part)."""

    vocab: str = Field("", description="A registered vocabulary name (give vocab or labels).")
    labels: str = Field("", description='Ad-hoc labels instead of vocab: a JSON array, e.g. ["a", "b"].')
    clean_labels: bool = Field(
        False,
        description="Ad-hoc labels: prompt their cleaned-up form (ApplyEyeMakeup -> "
        "apply eye makeup); by default as written.",
    )
    top_k: int = Field(5, ge=0, le=100_000, description="Predictions to return; 0 = all.")
    frames: int | None = Field(
        None, ge=1, description="Frames sampled per clip (T), 1 to the server's max_frames; unset: its default_frames."
    )

    def to_request(self) -> ClassifyRequest:
        """The engine's request object: the one shape every caller (route, CLI, archive) builds."""
        return ClassifyRequest(
            vocab=self.vocab or None,
            labels=tuple(parse_labels(self.labels)) if self.labels else None,
            clean_labels=self.clean_labels,
            clip=ClipSpec(self.frames),
            top_k=self.top_k,
        )

    @classmethod
    def openapi_body(cls) -> dict[str, object]:
        return upload_body(cls)


def upload_body(form: type[BaseModel]) -> dict[str, object]:
    """A route's multipart body in OpenAPI: the ``file`` part and the form's fields."""
    schema = _inlined(form.model_json_schema())
    schema["properties"] = {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "A video (mp4, avi, webm, ...) or an image (jpeg, png, webp, gif).",
        },
        **schema["properties"],
    }
    schema["required"] = ["file"]
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` (enums: Sampling) written out where they are used: a route's
    ``openapi_extra`` body is not among the components, so its references would not resolve."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    return walk(schema)  # type: ignore[no-any-return]


class ClassifyForm(UploadForm):
    """The form fields of ``POST /classify`` (beside the ``file`` part)."""

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


def parse_labels(labels: str) -> list[str]:
    """A form's ``labels``: a JSON array of strings."""
    try:
        value = json.loads(labels)
    except (json.JSONDecodeError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise InputError('labels must be a JSON array of strings, e.g. ["dancing", "surfing"]') from None
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise InputError('labels must be a JSON array of strings, e.g. ["dancing", "surfing"]')
    return value


class TimelineForm(UploadForm):
    """The form fields of ``POST /classify/timeline`` (beside the ``file`` part, a video)."""

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


class Status(BaseModel):
    status: str
    detail: str | None = None


class ErrorOut(BaseModel):
    detail: str | list[dict[str, object]]


def errors(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses`` entries for the error codes a route can answer."""
    text = {
        400: "Malformed body",
        401: "API key missing or not valid",
        404: "Unknown vocabulary (or archive row)",
        409: "The archive holds no embeddings of this model and sampling",
        412: "If-Match names a stale ETag",
        413: "Upload too large",
        415: "Not a decodable video or image",
        422: "Invalid input",
        503: "Overloaded or not ready",
    }
    return {code: {"model": ErrorOut, "description": text[code]} for code in codes}


# --- the archive (/archive) ---


class ArchiveForm(BaseModel):
    """The form fields of ``POST /archive/videos`` (beside the ``file`` part)."""

    frames: int | None = Field(None, ge=1, description="Frames per clip (T); unset: the server's default_frames.")
    views: str = Field("1x1", description="CLIPSxCROPS.")
    sampling: Sampling | None = Field(None, description="exact or fast; unset: the server's default_sampling.")
    window_s: float | None = Field(
        None, gt=0, le=MAX_WINDOW_S, description="Also store one row per window of this many seconds."
    )
    metadata: str = Field("", description='User metadata stored with the row: a JSON object, e.g. {"camera": 3}.')

    @field_validator("sampling", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @classmethod
    def openapi_body(cls) -> dict[str, object]:
        return upload_body(cls)


class ArchiveRowOut(BaseModel):
    id: str = Field(description="The file's SHA-256; a window's adds @start-end.")
    content_id: str = Field(description="The file's SHA-256.")
    name: str
    kind: Literal["video", "window"]
    start_s: float
    end_s: float
    duration_s: float | None
    metadata: dict[str, Any]
    created_at: str
    thumbnail: str | None = Field(None, description="A small JPEG data URL, when asked.")


class ArchiveIndexOut(BaseModel):
    video: ArchiveRowOut
    windows: int = Field(description="Window rows stored with it.")
    new: bool = Field(description="False when the same file was stored before (nothing was decoded).")


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


class ArchiveStatsOut(BaseModel):
    uri: str
    tables: list[ArchiveTableOut]


class SearchHitOut(ArchiveRowOut):
    score: float = Field(description="Cosine of the text and the row's embedding.")


class SearchOut(BaseModel):
    query: str
    results: list[SearchHitOut]


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
