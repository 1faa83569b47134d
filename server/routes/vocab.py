"""``/vocab``: define, read, list and delete vocabularies."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from text4vis.engine.errors import VocabNotFound
from text4vis.engine.request import AbstainDefaults
from text4vis.engine.vocab.lint import MAX_MATRIX_LABELS, clustered_order, heatmap_png
from text4vis.engine.vocab.record import VocabRecord
from text4vis.engine.vocab.registry import VocabRegistry
from text4vis.models.errors import InputError
from text4vis.models.presets import preset_labels
from text4vis.server.deps import RegistryDep, require_key
from text4vis.server.wire import Label, Template, VocabName, errors

router = APIRouter(prefix="/vocab", tags=["vocabularies"])
NamePath = Annotated[str, Path(description="Vocabulary name.", pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


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


async def _out(record: VocabRecord, response: Response, registry: VocabRegistry) -> VocabOut:
    response.headers["ETag"] = f'"{record.etag}"'
    warnings = await asyncio.wrap_future(registry.linter.warnings(record))  # once per version, on its own thread
    return VocabOut(
        name=record.name,
        version=record.version,
        labels=list(record.labels),
        templates=list(record.templates),
        clean_labels=record.clean_labels,
        text_model=record.text_model,
        etag=record.etag,
        abstain=AbstainIn(
            margin=record.abstain.margin, min_score=record.abstain.min_score, background=record.abstain.background
        )
        if record.abstain
        else None,
        warnings=[LintWarningOut(kind=w.kind, labels=list(w.labels), cosine=round(w.cosine, 4)) for w in warnings],
    )


def _unquote(etag: str | None) -> str | None:
    if etag is None:
        return None
    etag = etag.strip()
    return etag[2:].strip('"') if etag.startswith("W/") else etag.strip('"')


@router.put(
    "/{name}",
    response_model=VocabOut,
    status_code=201,
    dependencies=[Depends(require_key)],
    responses={200: {"model": VocabOut, "description": "Replaced (or unchanged)"}, **errors(400, 401, 412, 422, 503)},
)
async def put_vocab(
    name: NamePath,
    body: VocabIn,
    registry: RegistryDep,
    response: Response,
    if_match: Annotated[str | None, Header(description="Replace only if the stored ETag is this one.")] = None,
) -> VocabOut:
    """Define a vocabulary: its labels are encoded (only those not cached) into a new version."""
    labels = preset_labels(body.preset) if isinstance(body, VocabPresetIn) else body.labels
    existed = await asyncio.to_thread(registry.store.head, name)
    abstain = (
        AbstainDefaults(body.abstain.margin, body.abstain.min_score, body.abstain.background) if body.abstain else None
    )
    record, _ = await asyncio.to_thread(
        registry.put, name, labels, body.templates, _unquote(if_match), body.clean_labels, abstain
    )
    response.status_code = 200 if existed is not None else 201
    return await _out(record, response, registry)


@router.get("", response_model=VocabList, responses=errors(503))
async def list_vocabs(registry: RegistryDep) -> VocabList:
    """Every vocabulary with its version and size."""
    rows = await asyncio.to_thread(registry.summaries)
    return VocabList(
        vocabularies=[
            VocabSummaryOut(
                name=r.name,
                version=r.version,
                num_labels=r.num_labels,
                text_model=r.text_model,
                etag=r.etag,
                encoded_for_this_model=r.text_model == registry.text_model,
            )
            for r in rows
        ]
    )


@router.get("/{name}", response_model=VocabOut, responses=errors(404, 422, 503))
async def get_vocab(name: NamePath, registry: RegistryDep, response: Response) -> VocabOut:
    """One vocabulary, with an ETag header for later If-Match."""
    return await _out(await asyncio.to_thread(registry.get, name), response, registry)


@router.get(
    "/{name}/similarity",
    response_model=SimilarityOut,
    responses={
        200: {"content": {"image/png": {}}, "description": "The matrix as JSON, or a clustered heatmap (format=png)"},
        **errors(404, 422, 503),
    },
)
async def similarity(
    name: NamePath,
    registry: RegistryDep,
    format: Annotated[Literal["json", "png"], Query(description="json: the matrix; png: a heatmap")] = "json",
) -> Response | SimilarityOut:
    """Cosine of every pair of the vocabulary's classifier rows (at most 500 labels)."""
    record = await asyncio.to_thread(registry.get, name)
    if len(record.labels) > MAX_MATRIX_LABELS:
        raise InputError(
            f"vocabulary {name!r} has {len(record.labels)} labels; a similarity matrix takes at most "
            f"{MAX_MATRIX_LABELS} (the warnings of GET /vocab/{name} list its closest pairs)"
        )
    if format == "png":
        png = await asyncio.to_thread(
            heatmap_png, record.labels, record.matrix, f"{name} v{record.version}: cosine of the classifier rows"
        )
        return Response(png, media_type="image/png")
    matrix = record.matrix @ record.matrix.T
    order = await asyncio.to_thread(clustered_order, record.matrix)
    return SimilarityOut(
        labels=list(record.labels), order=order, matrix=[[round(float(x), 5) for x in row] for row in matrix]
    )


@router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    dependencies=[Depends(require_key)],
    responses=errors(401, 404, 422, 503),
)
async def delete_vocab(name: NamePath, registry: RegistryDep) -> Response:
    """Delete a vocabulary (its cached text embeddings stay, for the next PUT)."""
    if not await asyncio.to_thread(registry.delete, name):
        raise VocabNotFound(f"no vocabulary named {name!r}")
    return Response(status_code=204)
