"""Request and response bodies: the OpenAPI schema is generated from these."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class VocabIn(BaseModel):
    labels: list[str] | None = Field(None, description="Class names; give labels or preset.", max_length=100_000)
    templates: list[str] | None = Field(
        None, description='Prompt templates with one "{}" (default: "a video of a person {}.").', max_length=64
    )
    preset: str | None = Field(None, description="A built-in label set instead of labels, e.g. kinetics400.")

    @model_validator(mode="after")
    def _one_source(self) -> VocabIn:
        if (self.labels is None) == (self.preset is None):
            raise ValueError("give exactly one of labels or preset")
        return self


class VocabOut(BaseModel):
    name: str
    version: int
    labels: list[str]
    templates: list[str]
    text_model: str
    etag: str


class VocabSummary(BaseModel):
    name: str
    version: int
    num_labels: int
    text_model: str
    etag: str


class VocabList(BaseModel):
    vocabularies: list[VocabSummary]


class VocabRef(BaseModel):
    name: str
    version: int


class PredictionOut(BaseModel):
    label: str
    probability: float = Field(description="Softmax over all labels of 100 x cosine.")
    score: float = Field(description="Cosine similarity of the video and the label embedding.")


class ClassifyOut(BaseModel):
    vocab: VocabRef | None = Field(description="The vocabulary used; null for ad-hoc labels.")
    predictions: list[PredictionOut]
    model: str = Field(description="Text model id the classifier was built with.")
    frame_indices: list[int] = Field(description="Sampled frames, clips x T, clip-major.")
    timing_ms: dict[str, float]


class ModelOut(BaseModel):
    arch: str
    model_id: str
    temporal: str
    preprocess: str
    backend: str
    device: str
    precision: str
    checkpoint: str | None


class Status(BaseModel):
    status: str
    detail: str | None = None


class ErrorOut(BaseModel):
    detail: str | list[dict[str, object]]


def errors(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses`` entries for the error codes a route can answer."""
    text = {
        404: "Unknown vocabulary", 412: "If-Match names a stale ETag", 413: "Upload too large",
        415: "Not a decodable video or image", 422: "Invalid input", 503: "Overloaded or not ready",
    }
    return {code: {"model": ErrorOut, "description": text[code]} for code in codes}
