"""``/vocab``: define, read, list and delete vocabularies."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Response

from text4vis.engine.errors import VocabNotFound
from text4vis.engine.vocab.classifier import AbstainDefaults
from text4vis.engine.vocab.lint import MAX_MATRIX_LABELS, clustered_order, heatmap_png
from text4vis.engine.vocab.registry import VocabRegistry
from text4vis.engine.vocab.stores import VocabRecord
from text4vis.models.errors import InputError
from text4vis.models.presets import preset_labels
from text4vis.server.deps import RegistryDep, require_key
from text4vis.server.schemas import (
    AbstainIn,
    LintWarningOut,
    SimilarityOut,
    VocabIn,
    VocabList,
    VocabOut,
    VocabPresetIn,
    VocabSummaryOut,
    errors,
)

router = APIRouter(prefix="/vocab", tags=["vocabularies"])
NamePath = Annotated[str, Path(description="Vocabulary name.", pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


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
