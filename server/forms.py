"""Upload forms: the multipart fields of the upload routes checked strictly (an unknown field is a
422 naming it and the closest known one: ``topk`` would otherwise be ignored and the user would
get every label; a field of another route's form says which route takes it), and how a response
names the uploaded file."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import ClassVar, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from text4vis.models.errors import InputError
from text4vis.server.uploads import Upload

FILE_FIELD = "file"


class Form(BaseModel):
    """The fields of an upload route's multipart form (beside the ``file`` part)."""

    route: ClassVar[str] = ""  # "POST /classify": where these fields apply


FormT = TypeVar("FormT", bound=Form)


def _route_taking(name: str) -> str | None:
    """The route whose form has the field ``name`` (the widest form first: POST /classify)."""
    stack: list[type[Form]] = [Form]
    forms: list[type[Form]] = []
    while stack:
        cls = stack.pop()
        forms.append(cls)
        stack.extend(cls.__subclasses__())
    routes = sorted((len(f.model_fields), f.route) for f in forms if f.route and name in f.model_fields)
    return routes[-1][1] if routes else None


def parse_form(form_type: type[FormT], upload: Upload) -> tuple[FormT, Path]:
    """The upload's form fields as ``form_type`` and its file; 422 naming the field otherwise."""
    known = [FILE_FIELD, *form_type.model_fields]
    for name in upload.fields:
        if name in form_type.model_fields:
            continue
        route = _route_taking(name)
        if route is not None:  # another route's option
            raise InputError(f"{name!r} is not supported by this route (it applies to {route})")
        raise InputError(unknown_field(name, known))
    try:
        form = form_type(**upload.fields)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    if upload.path is None:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body", FILE_FIELD), "msg": "Field required", "input": None}]
        )
    return form, upload.path


def unknown_field(name: str, known: list[str]) -> str:
    """``unknown field 'topk'; did you mean 'top_k'?`` (``-`` and case forgiven in the match)."""
    shown = "".join(c for c in name if c.isprintable())[:64]
    folded = {k.replace("_", "").lower(): k for k in known}
    key = name.replace("-", "").replace("_", "").lower()
    close = (
        [folded[key]] if key in folded else difflib.get_close_matches(name.replace("-", "_"), known, n=1, cutoff=0.6)
    )
    hint = f"; did you mean {close[0]!r}?" if close else f"; the fields are {', '.join(known)}"
    return f"unknown field {shown!r}{hint}"


def display_name(filename: str | None) -> str:
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in name if c.isprintable())[:100] or "upload"
