"""Label files, by the same rules as the server's ``t4v`` (``models/prompts.py``; a test holds
them equal): ``.txt`` one label per line, ``.csv`` with a header naming a ``name`` column,
``.json`` an array of strings; anything else is a ValueError that says what is expected."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

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
    says so."""
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
