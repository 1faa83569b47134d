"""The vocabulary registry: validate, encode only what is not cached, store versioned, serve.

Reads check the store's ``(version, etag)`` and keep decoded classifiers in process; stores that
publish changes (Redis) also drop stale entries as soon as another replica writes.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from engine.classifier import Classifier
from engine.errors import InputError
from engine.stores import VocabRecord, VocabStore, VocabSummary
from models.classifiers import ensemble
from models.prompts import DEFAULT_TEMPLATE, format_prompts, validate_template
from models.text_encoder import TextEncoder

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_TEMPLATES = 64
MAX_LABEL_CHARS = 300


class VocabNotFound(Exception):
    """No vocabulary of that name."""


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


def vocab_etag(text_model: str, labels: Sequence[str], templates: Sequence[str]) -> str:
    """Content hash: the same labels, templates and text model give the same ETag anywhere."""
    blob = json.dumps([text_model, list(labels), list(templates)], ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


class VocabRegistry:
    """Thread-safe; its methods block (encode, I/O) and are called off the event loop."""

    def __init__(
        self,
        store: VocabStore,
        text_encoder: TextEncoder,
        max_labels: int = 5000,
        on_embedding_cache: Callable[[int, int], None] | None = None,
    ) -> None:
        self.store = store
        self.text_encoder = text_encoder
        self.text_model = text_encoder.model_id
        self.max_labels = max_labels
        self._on_embedding_cache = on_embedding_cache
        self._encode_lock = threading.Lock()
        self._cache: dict[str, tuple[int, str, Classifier]] = {}
        self._cache_lock = threading.Lock()
        self.embedding_stats = CacheStats()
        store.subscribe(self._forget)

    # -- validation -------------------------------------------------------------------------

    def _clean(
        self, name: str, labels: Sequence[str], templates: Sequence[str] | None
    ) -> tuple[list[str], list[str]]:
        """Clean and check a vocabulary's name, labels and templates; :class:`InputError` says what is wrong."""
        validate_name(name)
        clean = validate_labels(labels, self.max_labels)
        temps = list(templates) if templates else [DEFAULT_TEMPLATE]
        if len(temps) > MAX_TEMPLATES:
            raise InputError(f"at most {MAX_TEMPLATES} templates")
        for t in temps:
            try:
                validate_template(t)
            except ValueError as exc:
                raise InputError(str(exc)) from None
        return clean, temps

    def _check_tokens(self, labels: list[str], templates: list[str], known: Container[str] = ()) -> None:
        """Every prompt fits the text encoder. Prompts in ``known`` (cached embeddings: they were
        encoded, so they fit) are skipped: counting runs ftfy on each prompt, the costly part."""
        limit = self.text_encoder.context_length
        prompts = [(label, p) for label in labels for p in format_prompts(label, templates) if p not in known]
        counts = self.text_encoder.token_counts([p for _, p in prompts]) if prompts else []
        too_long = [(label, p, n) for (label, p), n in zip(prompts, counts, strict=True) if n > limit]
        if too_long:
            label, prompt, n = too_long[0]
            raise InputError(f"prompt {prompt!r} for label {label!r} is {n} tokens; the text encoder takes {limit}")

    def _prepare(
        self, name: str, labels: Sequence[str], templates: Sequence[str] | None
    ) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
        """Validated labels and templates, and the cached embeddings of their prompts."""
        clean, temps = self._clean(name, labels, templates)
        cached = self.store.get_embeddings(self.text_model, _prompts(clean, temps))
        self._check_tokens(clean, temps, known=cached)
        return clean, temps, cached

    # -- writes -----------------------------------------------------------------------------

    def put(
        self, name: str, labels: Sequence[str], templates: Sequence[str] | None = None, if_match: str | None = None
    ) -> tuple[VocabRecord, bool]:
        """Store a new version (or nothing, for identical content). ``(record, changed)``."""
        clean, temps, cached = self._prepare(name, labels, templates)
        etag = vocab_etag(self.text_model, clean, temps)
        head = self.store.head(name)
        if head is not None and head[1] == etag and if_match in (None, etag):
            current = self.store.get(name)
            if current is not None and current.etag == etag:
                return current, False  # idempotent: nothing encoded, nothing written
        matrix = self._encode(clean, temps, cached)
        record = VocabRecord(name, 0, etag, self.text_model, tuple(clean), tuple(temps), matrix, time.time())
        stored, changed = self.store.put(record, if_match)
        self._forget(name)
        return stored, changed

    def delete(self, name: str) -> bool:
        validate_name(name)
        gone = self.store.delete(name)
        self._forget(name)
        return gone

    def _encode(
        self, labels: list[str], templates: list[str], cached: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        prompts = _prompts(labels, templates)
        cached = dict(cached) if cached is not None else self.store.get_embeddings(self.text_model, prompts)
        missing = [p for p in dict.fromkeys(prompts) if p not in cached]
        self.embedding_stats.hits += len(prompts) - len(missing)
        self.embedding_stats.misses += len(missing)
        if self._on_embedding_cache is not None:
            self._on_embedding_cache(len(prompts) - len(missing), len(missing))
        if missing:
            with self._encode_lock:
                fresh = self.text_encoder.encode(missing).numpy()
            new = dict(zip(missing, fresh, strict=True))
            self.store.put_embeddings(self.text_model, new)
            cached.update(new)
        emb = torch.from_numpy(np.stack([cached[p] for p in prompts])).view(len(labels), len(templates), -1)
        return ensemble(emb).numpy()

    # -- reads ------------------------------------------------------------------------------

    def get(self, name: str) -> VocabRecord:
        validate_name(name)
        record = self.store.get(name)
        if record is None:
            raise VocabNotFound(f"no vocabulary named {name!r}")
        return record

    def names(self) -> list[str]:
        return self.store.names()

    def summaries(self) -> list[VocabSummary]:
        return self.store.summaries()

    def classifier(self, name: str) -> tuple[Classifier, int]:
        """The classifier of ``name`` and its version; decoded once per (version, etag)."""
        validate_name(name)
        head = self.store.head(name)
        if head is None:
            raise VocabNotFound(f"no vocabulary named {name!r}")
        with self._cache_lock:
            hit = self._cache.get(name)
        if hit is not None and hit[:2] == head:
            return hit[2], hit[0]
        record = self.get(name)
        clf = self.to_classifier(record)
        with self._cache_lock:
            self._cache[name] = (record.version, record.etag, clf)
        return clf, record.version

    def to_classifier(self, record: VocabRecord) -> Classifier:
        if record.text_model != self.text_model:
            raise InputError(
                f"vocabulary {record.name!r} was encoded by {record.text_model}, this server runs "
                f"{self.text_model}: PUT it again here"
            )
        return Classifier(record.labels, torch.from_numpy(record.matrix), record.templates, record.text_model)

    def ad_hoc(self, labels: Sequence[str], templates: Sequence[str] | None = None) -> Classifier:
        """A classifier for labels sent with the request (embeddings still cached)."""
        clean, temps, cached = self._prepare("ad-hoc", labels, templates)
        matrix = self._encode(clean, temps, cached)
        return Classifier(tuple(clean), torch.from_numpy(matrix), tuple(temps), self.text_model)

    def _forget(self, name: str) -> None:
        with self._cache_lock:
            self._cache.pop(name, None)


def _prompts(labels: Sequence[str], templates: Sequence[str]) -> list[str]:
    return [p for label in labels for p in format_prompts(label, templates)]


def validate_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise InputError(f"vocabulary name {name!r} must match [A-Za-z0-9_.-]{{1,64}}")


def validate_labels(labels: Sequence[str], max_labels: int) -> list[str]:
    if not labels:
        raise InputError("the label list is empty")
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
