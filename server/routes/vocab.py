"""``/vocab``: define, read, list and delete vocabularies."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import asdict
from typing import Annotated, ClassVar, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from text4vis.engine.errors import VocabNotFound
from text4vis.engine.request import AbstainDefaults, FewShotAsk, IndexRequest
from text4vis.engine.vocab.few_shot import MAX_EXAMPLES, MAX_PER_LABEL, by_label
from text4vis.engine.vocab.lint import MAX_MATRIX_LABELS, clustered_order, heatmap_png
from text4vis.engine.vocab.record import VocabRecord
from text4vis.engine.vocab.registry import VocabRegistry
from text4vis.models.errors import InputError
from text4vis.models.presets import preset_labels
from text4vis.server.deps import EngineDep, RegistryDep, StateDep, require_key
from text4vis.server.forms import Form, display_name, parse_form
from text4vis.server.wire import Label, Template, VocabName, errors, upload_body

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

RowId = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class FewShotIn(BaseModel):
    """How a vocabulary uses its examples; a parameter left out is fitted by leave-one-out."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["tip-adapter", "prototype", "auto"] = Field(
        "auto",
        description="tip-adapter: Tip-Adapter's training-free cache; prototype: the classes' example means "
        "blended with their text rows; auto: the better of the two by leave-one-out over the examples.",
    )
    alpha: float | None = Field(None, ge=0, le=1000, allow_inf_nan=False, description="Tip-Adapter's cache weight.")
    beta: float | None = Field(None, ge=0, le=1000, allow_inf_nan=False, description="Tip-Adapter's sharpness.")
    blend: float | None = Field(
        None, ge=0, le=1, allow_inf_nan=False, description="prototype: the weight of the examples' mean (1: it alone)."
    )


_EXAMPLES = Field(
    None,
    description="Examples per label: {label: [archive row ids]} (videos or windows stored under this server's "
    f"model, default frames and views; at most {MAX_PER_LABEL} per label, {MAX_EXAMPLES} in all). A label "
    "without examples keeps its text row.",
)
_FEW_SHOT = Field(None, description="How the examples are used (default: auto, parameters fitted).")


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
    examples: dict[Label, list[RowId]] | None = _EXAMPLES
    few_shot: FewShotIn | None = _FEW_SHOT


class VocabPresetIn(BaseModel):
    """A vocabulary from a built-in label set."""

    model_config = ConfigDict(extra="forbid")
    preset: Literal["kinetics400"] = Field(description="A built-in label set.")
    templates: list[Template] | None = _TEMPLATES
    clean_labels: bool = _CLEAN
    abstain: AbstainIn | None = _ABSTAIN
    examples: dict[Label, list[RowId]] | None = _EXAMPLES
    few_shot: FewShotIn | None = _FEW_SHOT


VocabIn = VocabLabelsIn | VocabPresetIn


class LintWarningOut(BaseModel):
    kind: Literal["similar", "near_duplicate", "examples"] = Field(
        description="similar: the two classifier rows are closer than the lint threshold (cosine); near_duplicate: "
        "the same words after normalisation (case, punctuation, plural); examples: most of the first label's "
        "examples sit closer to the second label's than to their own."
    )
    labels: list[str] = Field(description="The two labels.")
    cosine: float = Field(description="Cosine of their classifier rows.")


class FitOut(BaseModel):
    zero_shot: float = Field(description="Leave-one-out accuracy over the examples of the text classifier alone.")
    few_shot: float = Field(description="The same with the examples, as this version uses them.")
    queries: int = Field(description="Examples scored (all, or a seeded draw of 1,000).")


class FewShotOut(BaseModel):
    method: Literal["tip-adapter", "prototype"]
    alpha: float
    beta: float
    blend: float
    asked: FewShotIn = Field(description="What the PUT asked (unset parameters were fitted).")
    examples: dict[str, int] = Field(description="Examples per label.")
    ids: dict[str, list[str]] = Field(description="The examples: {label: [archive row ids]}.")
    made_under: str = Field(description="The archive fingerprint their embeddings were read under.")
    fit: FitOut | None = Field(description="Leave-one-out accuracies over the examples.")


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
    few_shot: FewShotOut | None = Field(None, description="Its examples and how they are used, if it has any.")


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
        few_shot=_few_shot_out(record),
    )


def _few_shot_out(record: VocabRecord) -> FewShotOut | None:
    few = record.few_shot
    if few is None:
        return None
    return FewShotOut(
        method=few.method,  # type: ignore[arg-type]
        alpha=few.alpha,
        beta=few.beta,
        blend=few.blend,
        asked=FewShotIn(**asdict(few.ask)),
        examples=few.counts(record.labels),
        ids=by_label(record.labels, few),
        made_under=few.made_under,
        fit=FitOut(**asdict(few.fit)) if few.fit else None,
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
    """Define a vocabulary: its labels are encoded (only those not cached) into a new version; with
    ``examples``, the stored embeddings of a few videos per label make it a few-shot vocabulary."""
    labels = preset_labels(body.preset) if isinstance(body, VocabPresetIn) else body.labels
    existed = await asyncio.to_thread(registry.store.head, name)
    abstain = (
        AbstainDefaults(body.abstain.margin, body.abstain.min_score, body.abstain.background) if body.abstain else None
    )
    few_shot = FewShotAsk(**body.few_shot.model_dump()) if body.few_shot else None
    record, _ = await asyncio.to_thread(
        functools.partial(
            registry.put,
            name,
            labels,
            body.templates,
            _unquote(if_match),
            body.clean_labels,
            abstain,
            examples=body.examples,
            few_shot=few_shot,
        )
    )
    response.status_code = 200 if existed is not None else 201
    return await _out(record, response, registry)


class ExampleForm(Form):
    """The form fields of ``POST /vocab/{name}/examples`` (beside the ``file`` part)."""

    route: ClassVar[str] = "POST /vocab/{name}/examples"
    label: Label = Field(description="The vocabulary's label the uploaded video is an example of.")

    @classmethod
    def openapi_body(cls) -> dict[str, object]:
        return upload_body(cls)


@router.post(
    "/{name}/examples",
    response_model=VocabOut,
    dependencies=[Depends(require_key)],
    responses=errors(400, 401, 404, 409, 412, 413, 415, 422, 503),
    openapi_extra=ExampleForm.openapi_body(),
)
async def add_example(
    name: NamePath,
    request: Request,
    state: StateDep,
    engine: EngineDep,
    registry: RegistryDep,
    response: Response,
    if_match: Annotated[str | None, Header(description="Add only if the stored ETag is this one.")] = None,
) -> VocabOut:
    """Upload an example of one of the vocabulary's labels: it is stored in the archive (once,
    under this server's model and default frames and views) and a new version of the vocabulary
    uses it with the examples it had."""
    async with state.admitted_upload(request, engine) as upload:
        form, path = parse_form(ExampleForm, upload)
        await asyncio.to_thread(registry.check_label, name, form.label)  # before anything is stored
        name_ = display_name(upload.filename)
        done = await engine.index(path, IndexRequest(), timeout_s=state.time_left_s(upload), name=name_)
    record = await asyncio.to_thread(registry.add_examples, name, {form.label: [done.id]}, _unquote(if_match))
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
