"""Prompt templates and label clean-up.

Labels go into the templates exactly as given, as the reference does (``ApplyEyeMakeup`` stays
``ApplyEyeMakeup``): the classifiers of released checkpoints and the published zero-shot numbers
come from those prompts. :func:`clean_label` (``apply eye makeup``) is an opt-in option
(``clean_labels``) per request, per vocabulary and on the CLI."""

from __future__ import annotations

import csv
import re
import string
from collections.abc import Sequence
from pathlib import Path

DEFAULT_TEMPLATE = "a video of a person {}."

# The 28 Kinetics prompts of CLIP's data/prompts.md (MIT).
KINETICS_TEMPLATES: tuple[str, ...] = tuple(
    f"{prefix}{suffix}"
    for prefix in ("a photo of ", "a video of ", "a example of ", "a demonstration of ")
    for suffix in (
        "{}.",
        "a person {}.",
        "a person using {}.",
        "a person doing {}.",
        "a person during {}.",
        "a person performing {}.",
        "a person practicing {}.",
    )
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "default": (DEFAULT_TEMPLATE,),
    "kinetics": KINETICS_TEMPLATES,
}

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def clean_label(label: str) -> str:
    """Turn a dataset class name into words for a prompt.

    ``ApplyEyeMakeup`` -> ``apply eye makeup``; ``brush_hair`` -> ``brush hair``.
    Labels that already contain spaces keep their case; whitespace is collapsed.
    """
    text = label.strip().replace("_", " ")
    if " " not in text and _CAMEL_BOUNDARY.search(text):
        text = _CAMEL_BOUNDARY.sub(" ", text).lower()
    return " ".join(text.split())


def validate_template(template: str) -> str:
    """Return the template if it holds exactly one ``{}`` placeholder, else raise ValueError."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError:
        fields = []
    if fields != [""]:
        raise ValueError(f"template {template!r} must contain exactly one '{{}}' placeholder")
    return template


def format_prompts(label: str, templates: Sequence[str], clean: bool = False) -> list[str]:
    """The prompts of one label: the label (cleaned with ``clean``) put into each template."""
    words = clean_label(label) if clean else label
    return [t.format(words) for t in templates]


def read_labels(path: Path) -> list[str]:
    """Read class names from ``.csv`` (``id,name`` with a header) or text (one per line)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(text.splitlines()))
        if rows and [c.strip().lower() for c in rows[0]][:2] == ["id", "name"]:
            rows = rows[1:]
        labels = [row[1].strip() if len(row) > 1 else row[0].strip() for row in rows if row]
    else:
        labels = [line.strip() for line in text.splitlines()]
    return [label for label in labels if label]


def read_templates(path: Path) -> list[str]:
    """Read prompt templates, one per line; blank lines are skipped."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [validate_template(line) for line in lines if line]
