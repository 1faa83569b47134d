"""What the routes' bodies share (the OpenAPI schema is generated from these and from the models
each route module declares beside its route): predictions, a vocabulary's reference, the error
body, the form fields of every upload route and the multipart body they describe."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from text4vis.engine.request import ClassifyRequest, ClipSpec
from text4vis.models.errors import InputError
from text4vis.server.forms import Form

Label = Annotated[str, StringConstraints(min_length=1, max_length=300, pattern=r"\S")]
Template = Annotated[str, StringConstraints(min_length=2, max_length=300, pattern=r"^[^{}]*\{\}[^{}]*$")]
VocabName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class VocabRef(BaseModel):
    name: str
    version: int


class PredictionOut(BaseModel):
    label: str
    probability: float = Field(description="Softmax over all labels of 100 x cosine.")
    score: float = Field(description="Cosine similarity of the video and the label embedding.")


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


class UploadForm(Form):
    """Form fields every classify-like upload route takes (beside the ``file`` part)."""

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


def parse_labels(labels: str) -> list[str]:
    """A form's ``labels``: a JSON array of strings."""
    try:
        value = json.loads(labels)
    except (json.JSONDecodeError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise InputError('labels must be a JSON array of strings, e.g. ["dancing", "surfing"]') from None
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise InputError('labels must be a JSON array of strings, e.g. ["dancing", "surfing"]')
    return value


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
