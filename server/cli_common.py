"""What the ``t4v`` commands share (``server/cli_*.py``): option checks, label and template
arguments, progress and one-line errors."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from text4vis.engine.request import parse_views
from text4vis.models.cli_options import flag
from text4vis.models.errors import InputError
from text4vis.models.presets import preset_labels
from text4vis.models.prompts import (
    DEFAULT_TEMPLATE,
    TEMPLATE_SETS,
    LabelFileWarning,
    read_labels,
    read_templates,
    validate_template,
)

M = TypeVar("M", bound=BaseModel)
DEFAULT_ARCHIVE = "data/archive"  # where `t4v serve` keeps it with the default data_dir
Examples_ = Annotated[
    Path | None,
    typer.Option(
        "--examples",
        help="A few labelled videos, 'label,id-or-path' per line (an archive row id, or a file embedded here): "
        "the labels become a few-shot vocabulary.",
    ),
]
FewShot_ = Annotated[
    str,
    typer.Option(
        "--few-shot",
        help="How --examples are used: tip-adapter | prototype | auto (the better by leave-one-out; "
        "parameters fitted).",
    ),
]

# model options that say where and how a model runs, not which weights: export and eval ignore them
RUNTIME_ONLY = ("device", "precision", "decoder", "scaler", "engine_dir", "backend", "providers", "threads", "compile")


class UsageProblem(InputError):
    """Bad command-line input found after parsing (missing file, empty label list, ...)."""


def validated(model: type[M], given: dict[str, Any]) -> M:
    """``model(**given)``; a validation error becomes one line naming the option and the problem."""
    try:
        return model(**given)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            name = ".".join(map(str, e["loc"]))
            field = model.model_fields.get(str(e["loc"][0])) if e["loc"] else None
            where = flag(name, field) if field is not None else name
            ctx = e.get("ctx", {})
            if e["type"] in ("literal_error", "enum"):
                problems.append(f"{where} must be one of {ctx['expected']}; got {e['input']!r}")
                continue
            message = str(ctx["error"]) if "error" in ctx else e["msg"]
            problems.append(f"{where}: {message}" if where else message)
        raise UsageProblem("; ".join(problems)) from None


@contextlib.contextmanager
def files_progress(files: list[Path], verb: str = "classified") -> Iterator[Callable[[], None]]:
    """Files done, on stderr, for several files: a rich bar on a terminal; elsewhere (logs, pipes)
    one line per file, so a long run is never silent for minutes."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    total = len(files)
    console = Console(stderr=True)
    if total >= 2 and not console.is_terminal:
        done = 0

        def line() -> None:
            nonlocal done
            done += 1
            sys.stderr.write(f"{verb} {done}/{total} files\n")
            sys.stderr.flush()

        yield line
        return
    progress = Progress(
        TextColumn(verb),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=total < 2 or not console.is_terminal,
    )
    with progress:
        task = progress.add_task("files", total=total)
        yield lambda: progress.advance(task)


def error_line(exc: BaseException) -> None:
    """One line on stderr, never wrapped: scripts grep it."""
    sys.stderr.write(f"error: {one_line(exc)}\n")


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def fail(exc: BaseException) -> None:
    error_line(exc)
    raise typer.Exit(2)


def check_views(views: str) -> tuple[int, int]:
    try:
        return parse_views(views)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None


def label_args(labels: str | None, labels_file: Path | None, preset: str | None) -> list[str]:
    if sum(x is not None for x in (labels, labels_file, preset)) != 1:
        raise UsageProblem("give exactly one of --labels, --labels-file or --preset")
    if preset is not None:
        try:
            return preset_labels(preset)
        except KeyError as exc:
            raise UsageProblem(str(exc.args[0])) from None
    if labels_file is not None:
        if not labels_file.is_file():
            raise UsageProblem(f"labels file not found: {labels_file}")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", LabelFileWarning)
                found = read_labels(labels_file)
        except ValueError as exc:
            raise UsageProblem(str(exc)) from None
        for warning in caught:
            sys.stderr.write(f"warning: {warning.message}\n")
    else:
        assert labels is not None
        found = [label.strip() for label in labels.split(",") if label.strip()]
    if not found:
        raise UsageProblem("the label list is empty")
    return found


def template_args(template: str | None, templates_file: Path | None, template_set: str | None) -> list[str]:
    given = [x for x in (template, templates_file, template_set) if x is not None]
    if len(given) > 1:
        raise UsageProblem("give at most one of --template, --templates-file, --template-set")
    if templates_file is not None:
        if not templates_file.is_file():
            raise UsageProblem(f"templates file not found: {templates_file}")
        found = read_templates(templates_file)
        if not found:
            raise UsageProblem(f"{templates_file} holds no templates")
        return found
    if template_set is not None:
        if template_set not in TEMPLATE_SETS:
            raise UsageProblem(f"unknown template set {template_set!r}; choose from {', '.join(TEMPLATE_SETS)}")
        return list(TEMPLATE_SETS[template_set])
    return [validate_template(template or DEFAULT_TEMPLATE)]


def choice(flag: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise UsageProblem(f"{flag} must be one of {', '.join(allowed)}; got {value!r}")
