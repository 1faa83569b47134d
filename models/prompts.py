"""Prompt templates and label clean-up.

Labels go into the templates exactly as given, as the reference does (``ApplyEyeMakeup`` stays
``ApplyEyeMakeup``): the classifiers of released checkpoints and the published zero-shot numbers
come from those prompts. :func:`clean_label` (``apply eye makeup``) is an opt-in option
(``clean_labels``) per request, per vocabulary and on the CLI."""

from __future__ import annotations

import csv
import json
import re
import string
import warnings
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


LABEL_FILE_FORMATS = (
    ".txt (one label per line), .csv (a header with a name column, e.g. id,name) or .json (an array of strings)"
)


class LabelFileWarning(UserWarning):
    """Something in a label file that is probably a mistake but still read as written."""


HEADER_WORDS = frozenset(
    {"name", "names", "label", "labels", "class", "classes", "class_name", "classname", "category", "categories"}
)


def read_labels(path: Path) -> list[str]:
    """Class names from a label file: ``.txt`` one per line (blank lines and ``#`` comment lines
    skipped; a first line that looks like a header warns, :class:`LabelFileWarning`), ``.csv`` with a
    header naming a ``name`` column, ``.json`` an array of strings. Anything else, or a file that
    reads as another format (a JSON array in a .txt, ``a;b;c`` on one line), is a ValueError that
    says so. (``clients/t4v_client/labels.py`` applies the same rules; a test holds them equal.)"""
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8-sig")
    if suffix == ".json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(f"{path.name}: not valid JSON; a .json label file is an array of strings") from None
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise ValueError(f"{path.name}: a .json label file is an array of strings")
        labels = [x.strip() for x in value]
    elif suffix == ".csv":
        rows = [row for row in csv.reader(text.splitlines()) if any(cell.strip() for cell in row)]
        header = [cell.strip().lower() for cell in rows[0]] if rows else []
        if "name" not in header:
            raise ValueError(f"{path.name}: a .csv label file needs a header with a name column (e.g. id,name)")
        column = header.index("name")
        labels = [row[column].strip() if len(row) > column else "" for row in rows[1:]]
    elif suffix == ".txt":
        labels = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]  # comments
        filled = [x for x in labels if x]
        if filled and filled[0].lower().replace(" ", "_") in HEADER_WORDS:
            warnings.warn(
                f"{path.name}: the first line {filled[0]!r} looks like a header, not a class; "
                "it is used as a label (delete the line if it is a header)",
                LabelFileWarning,
                stacklevel=2,
            )
        if filled and filled[0].startswith("["):
            raise ValueError(f"{path.name}: looks like a JSON array; name the file .json")
        if len(filled) == 1 and any(sep in filled[0] for sep in ",;\t"):
            raise ValueError(f"{path.name}: one line with separators; put one label per line")
    else:
        raise ValueError(f"{path.name}: label files are {LABEL_FILE_FORMATS}")
    return [label for label in labels if label]


def read_templates(path: Path) -> list[str]:
    """Read prompt templates, one per line; blank lines are skipped."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [validate_template(line) for line in lines if line]
