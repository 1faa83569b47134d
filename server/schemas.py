"""Request and response bodies: the OpenAPI schema is generated from these."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Label = Annotated[str, StringConstraints(min_length=1, max_length=300, pattern=r"\S")]
Template = Annotated[str, StringConstraints(min_length=2, max_length=300, pattern=r"^[^{}]*\{\}[^{}]*$")]
_TEMPLATES = Field(
    None, min_length=1, max_length=64, description='Prompt templates with one "{}" (default: the reference\'s one, '
    '"a video of a person {}."; several are averaged, CLIP\'s prompt ensemble, our extension).'
)
_CLEAN = Field(False, description="Prompt cleaned-up labels (ApplyEyeMakeup -> apply eye makeup); by default "
                                  "labels are used as written, as the reference and its checkpoints do.")


class VocabLabelsIn(BaseModel):
    """A vocabulary from class names."""

    model_config = ConfigDict(extra="forbid")
    labels: list[Label] = Field(
        min_length=1, max_length=100_000, json_schema_extra={"uniqueItems": True},
        description="Class names, unique, at most the server's max_labels; each prompt at most 77 tokens.",
    )
    templates: list[Template] | None = _TEMPLATES
    clean_labels: bool = _CLEAN


class VocabPresetIn(BaseModel):
    """A vocabulary from a built-in label set."""

    model_config = ConfigDict(extra="forbid")
    preset: Literal["kinetics400"] = Field(description="A built-in label set.")
    templates: list[Template] | None = _TEMPLATES
    clean_labels: bool = _CLEAN


VocabIn = VocabLabelsIn | VocabPresetIn


class LintWarningOut(BaseModel):
    kind: Literal["similar", "near_duplicate"] = Field(
        description="similar: the two classifier rows are closer than the lint threshold (cosine); near_duplicate: "
                    "the same words after normalisation (case, punctuation, plural).")
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
    warnings: list[LintWarningOut] = Field(
        default_factory=list, description="Label pairs the classifier will likely confuse (informative: nothing is "
                                          "refused for them); at most 100, near duplicates first.")


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


class VocabList(BaseModel):
    vocabularies: list[VocabSummaryOut]


class VocabRef(BaseModel):
    name: str
    version: int


class PredictionOut(BaseModel):
    label: str
    probability: float = Field(description="Softmax over all labels of 100 x cosine.")
    score: float = Field(description="Cosine similarity of the video and the label embedding.")


class ClassifyForm(BaseModel):
    """The form fields of ``POST /classify`` (beside the ``file`` part)."""

    vocab: str = Field("", description="A registered vocabulary name (give vocab or labels).")
    labels: str = Field("", description='Ad-hoc labels instead of vocab: a JSON array, e.g. ["a", "b"].')
    top_k: int = Field(5, ge=0, le=100_000, description="Predictions to return; 0 = all.")
    frames: int | None = Field(None, ge=1, description="Frames sampled per clip (T), 1 to the server's max_frames; "
                                                       "unset: its default_frames.")
    views: str = Field("1x1", description="CLIPSxCROPS: 1x1 or up to the server's max, e.g. 4x3.")
    sampling: Literal["", "exact", "fast"] = Field(
        "", description="exact: the method's test-time frames; fast: one cheap-to-decode frame per TSN segment "
                        "(one clip); empty: the server's default_sampling."
    )
    thumbnails: bool = Field(False, description="Also return the first view's frames as small JPEG data URLs.")
    clean_labels: bool = Field(False, description="Ad-hoc labels: prompt their cleaned-up form (ApplyEyeMakeup -> "
                                                  "apply eye makeup); by default as written.")
    abstain: bool = Field(False, description='"None of these": also score a background vocabulary (the '
                                             "Kinetics-400 names minus those close to these labels) and abstain "
                                             "when its best label beats the vocabulary's best by abstain_margin.")
    abstain_margin: float = Field(0.0, ge=0.0, le=1.0, description="Cosine margin the background must win by.")
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="Abstain when the best label's cosine is "
                                                                       "below this.")

    @classmethod
    def openapi_body(cls) -> dict[str, object]:
        schema = cls.model_json_schema()
        schema["properties"] = {"file": {"type": "string", "format": "binary", "description":
                                         "A video (mp4, avi, webm, ...) or an image (jpeg, png, webp, gif)."},
                                **schema["properties"]}
        schema["required"] = ["file"]
        return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


class ClassifyOut(BaseModel):
    vocab: VocabRef | None = Field(description="The vocabulary used; null for ad-hoc labels.")
    predictions: list[PredictionOut]
    model: str = Field(description="Text model id the classifier was built with.")
    frame_indices: list[int] = Field(description="Sampled frames, clips x T, clip-major.")
    timing_ms: dict[str, float]
    thumbnails: list[str] | None = Field(None, description="JPEG data URLs of the sampled frames, when asked.")
    abstained: bool | None = Field(None, description="With abstain or min_score: whether the answer is none of "
                                                     "these (the predictions are still returned).")
    abstain_reason: str | None = Field(None, description="Why it abstained, in words.")
    background: list[PredictionOut] | None = Field(None, description="With abstain: the nearest background labels.")


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
        400: "Malformed body", 401: "API key missing or not valid", 404: "Unknown vocabulary",
        412: "If-Match names a stale ETag", 413: "Upload too large",
        415: "Not a decodable video or image", 422: "Invalid input", 503: "Overloaded or not ready",
    }
    return {code: {"model": ErrorOut, "description": text[code]} for code in codes}
