"""Command-line options derived from pydantic fields, so each option is declared once.

``@with_options(ModelOptions)`` adds one typer option per field of ``ModelOptions`` to a command
(the name, the help, and for ``serve`` the ``T4V_*`` variable, all from the field); the command
receives the ones the user gave in its ``options`` argument and validates them with the model.
Defaults stay in the model: an option not given is not passed, so the field's default (or, for
``t4v serve``, the environment) applies.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo


def flag(name: str, field: FieldInfo) -> str:
    """The option of a field: ``--field-name``, or the field's own ``flag``."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return str(extra.get("flag", "--" + name.replace("_", "-")))


def _cli_type(annotation: Any) -> Any:
    """The type typer parses; pydantic validates the value afterwards (Literal choices included)."""
    if get_origin(annotation) in (Union, UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    origin = get_origin(annotation)
    if origin in (list, tuple):
        return list[str]
    if origin is Literal:
        return str
    if annotation in (bool, int, float, Path, str):
        return annotation
    return str


def option_parameters(model: type[BaseModel], *, env: bool, exclude: Iterable[str] = ()) -> list[inspect.Parameter]:
    params = []
    for name, field in model.model_fields.items():
        if name in exclude:
            continue
        kind = _cli_type(field.annotation)
        text = (field.description or "") + (f" [env {model_env(name)}]" if env else "")
        if kind is list[str]:
            text += " Repeat the option for several."
        spelled = flag(name, field)
        if kind is bool:  # --amp / --no-amp: a default of True can be turned off
            spelled = f"{spelled}/--no-{spelled.removeprefix('--')}"
        option = typer.Option(spelled, help=text, show_default=_default_text(field))
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
            )
        )
    return params


def _default_text(field: Any) -> str | bool:
    """What ``--help`` shows as the default (the option itself defaults to None: unset means the
    settings' default or the environment's value)."""
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, list | tuple):
            return ", ".join(map(str, value)) or False
        return f"{value} (here)"
    if field.default is None:
        return False
    value = field.default
    return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def model_env(name: str) -> str:
    return f"T4V_{name.upper()}"


def with_options(
    *models: type[BaseModel], env: bool = False, exclude: Iterable[str] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the fields of ``models`` as options; the command gets those given as ``options: dict``."""
    excluded = set(exclude)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "options"]
        added = [p for m in models for p in option_parameters(m, env=env, exclude=excluded)]
        names = {p.name for p in added}

        def run(**kwargs: Any) -> Any:
            given = {k: v for k, v in kwargs.items() if k in names and v is not None}
            return command(**{k: v for k, v in kwargs.items() if k not in names}, options=given)

        params = own + added
        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        run.__doc__, run.__name__ = command.__doc__, command.__name__
        return run

    return decorate
