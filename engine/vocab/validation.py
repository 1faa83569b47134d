"""The rules a vocabulary must follow, in one place: the server (PUT /vocab, ad-hoc labels) and
``t4v classify`` apply the same ones, each failure an :class:`InputError` of one sentence."""

from __future__ import annotations

import re
from collections.abc import Container, Sequence
from typing import TYPE_CHECKING

from text4vis.models.errors import InputError
from text4vis.models.prompts import DEFAULT_TEMPLATE, format_prompts, validate_template

if TYPE_CHECKING:  # the rules are imported by light modules (settings, the CLI): no torch here
    from text4vis.models.text_encoder import TextEncoder

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_TEMPLATES = 64
MAX_LABEL_CHARS = 300
MAX_LABELS = 100_000  # the most any setting may allow
STORED_PROMPTS = 100_000  # prompt embeddings a store keeps per text model, by default (~200 MB at 512 floats)


def validate_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise InputError(f"vocabulary name {name!r} must match [A-Za-z0-9_.-]{{1,64}}")
    if not name.strip("."):
        raise InputError(f"vocabulary name {name!r} reads as a path (. or ..); use letters, digits, _ or -")


def validate_labels(labels: Sequence[str], max_labels: int = MAX_LABELS) -> list[str]:
    """The labels stripped of surrounding blanks: non-empty, unique, at most ``max_labels``."""
    if not labels:
        raise InputError("the label list is empty")
    if len(labels) == 1:
        raise InputError(
            "one label cannot be classified (softmax over a single label is always 1.0); give at least two"
        )
    if len(labels) > max_labels:
        raise InputError(f"{len(labels)} labels; at most {max_labels}")
    clean = []
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise InputError("labels must be non-empty strings")
        if len(label) > MAX_LABEL_CHARS:
            raise InputError(f"a label is longer than {MAX_LABEL_CHARS} characters")
        clean.append(label.strip())
    seen: set[str] = set()
    dupes = [x for x in clean if x in seen or seen.add(x)]  # type: ignore[func-returns-value]
    if dupes:
        raise InputError(f"duplicate labels: {', '.join(sorted(set(dupes))[:5])}")
    return clean


def validate_templates(templates: Sequence[str] | None) -> list[str]:
    """The templates (the default one when none), each with exactly one ``{}``."""
    temps = list(templates) if templates else [DEFAULT_TEMPLATE]
    if len(temps) > MAX_TEMPLATES:
        raise InputError(f"at most {MAX_TEMPLATES} templates")
    for t in temps:
        try:
            validate_template(t)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    return temps


def check_prompt_lengths(
    encoder: TextEncoder,
    labels: Sequence[str],
    templates: Sequence[str],
    known: Container[str] = (),
    clean: bool = False,
) -> None:
    """Every prompt fits the text encoder (never silently truncated). Prompts in ``known`` (cached
    embeddings: they were encoded, so they fit) are skipped: counting runs ftfy on each prompt."""
    limit = encoder.context_length
    prompts = [(label, p) for label in labels for p in format_prompts(label, templates, clean) if p not in known]
    counts = encoder.token_counts([p for _, p in prompts]) if prompts else []
    too_long = [(label, p, n) for (label, p), n in zip(prompts, counts, strict=True) if n > limit]
    if too_long:
        label, prompt, n = too_long[0]
        raise InputError(f"prompt {prompt!r} for label {label!r} is {n} tokens; the text encoder takes {limit}")
