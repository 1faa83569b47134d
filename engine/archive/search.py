"""Text -> the archive's nearest rows: the query encoded as a vocabulary row would be, and the
stored embeddings ranked by their cosine with it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from text4vis.engine.archive.store import ArchiveTable, Hit
from text4vis.models.errors import InputError
from text4vis.models.prompts import DEFAULT_TEMPLATE

if TYPE_CHECKING:  # the text encoder (torch) is imported where a query is encoded: a cached search needs none
    import torch

    from text4vis.models.text_encoder import TextEncoder

MAX_K = 1_000
MAX_QUERY_CHARS = 300


def text_vector(encoder: TextEncoder, text: str, templates: Sequence[str] = (DEFAULT_TEMPLATE,)) -> torch.Tensor:
    """A query as a vocabulary row: ``text`` in the prompt template(s), encoded and normalized ``[D]``
    (so a search scores rows as a one-label classify would)."""
    from text4vis.engine.vocab.validation import check_prompt_lengths, validate_templates
    from text4vis.models.classifiers import text_classifier

    text = " ".join(text.split())
    if not text:
        raise InputError("the search text is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise InputError(f"the search text is {len(text)} characters; at most {MAX_QUERY_CHARS}")
    checked = validate_templates(list(templates))
    check_prompt_lengths(encoder, [text], checked)  # as /classify: a longer query was cut silently
    return text_classifier(encoder, [text], checked)[0]


def search_text(
    table: ArchiveTable,
    encoder: TextEncoder,
    text: str,
    k: int = 10,
    kind: str | None = "video",
    templates: Sequence[str] = (DEFAULT_TEMPLATE,),
    thumbnail: bool = False,
) -> list[Hit]:
    """The ``k`` stored videos (or windows) nearest ``text``, best first."""
    check_search(k, kind)
    return table.search(text_vector(encoder, text, templates).numpy(), k=k, kind=kind, thumbnail=thumbnail)


def search_vector(
    table: ArchiveTable, vector: np.ndarray, k: int = 10, kind: str | None = "video", thumbnail: bool = False
) -> list[Hit]:
    """The ``k`` stored rows nearest a query embedding already known (the CLI's cache)."""
    check_search(k, kind)
    return table.search(vector, k=k, kind=kind, thumbnail=thumbnail)


def check_search(k: int, kind: str | None) -> None:
    if not 1 <= k <= MAX_K:
        raise InputError(f"k must be 1..{MAX_K}")
    if kind not in (None, "video", "window"):
        raise InputError(f"kind must be video or window; got {kind!r}")
