"""The vocabulary registry: validate, encode only what is not cached, store versioned, serve.

Reads check the store's ``(version, etag)`` and keep decoded classifiers in process; stores that
publish changes (Redis) also drop stale entries as soon as another replica writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch

from text4vis.engine.errors import (
    ArchiveMismatch,
    NonFiniteOutput,
    NotInArchive,
    PreconditionFailed,
    StoreUnavailable,
    VocabNotFound,
)
from text4vis.engine.request import AbstainDefaults, Examples, FewShotAsk
from text4vis.engine.vocab.classifier import Classifier
from text4vis.engine.vocab.few_shot import (
    MAX_EXAMPLES,
    MAX_PER_LABEL,
    ExampleSource,
    FewShot,
    by_label,
    check_examples,
    classifier_rows,
    tip_cache,
)
from text4vis.engine.vocab.few_shot import build as few_shot_build
from text4vis.engine.vocab.lint import Linter
from text4vis.engine.vocab.record import VocabRecord, VocabSummary
from text4vis.engine.vocab.stores.base import VocabStore
from text4vis.engine.vocab.text_gate import TextGate
from text4vis.engine.vocab.validation import check_prompt_lengths, validate_labels, validate_name, validate_templates
from text4vis.models.classifiers import ensemble
from text4vis.models.errors import InputError
from text4vis.models.prompts import DEFAULT_TEMPLATE, format_prompts
from text4vis.models.text_encoder import TextEncoder

log = logging.getLogger(__name__)

BACKGROUNDS_KEPT = 16  # backgrounds (vocabulary minus its own labels) kept in memory, least recently used out


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


def vocab_etag(
    text_model: str,
    labels: Sequence[str],
    templates: Sequence[str],
    clean: bool = False,
    abstain: AbstainDefaults | None = None,
    examples: tuple[list[tuple[int, str]], FewShotAsk, str] | None = None,
) -> str:
    """Content hash: the same labels, templates, clean-up, abstention default, examples (their ids,
    the method asked and how their embeddings were made) and text model give the same ETag
    anywhere (without the options, the hash of earlier versions: stored ETags stay valid)."""
    content: list[object] = [text_model, list(labels), list(templates)]
    if clean:
        content.append("clean_labels")
    if abstain is not None:
        content.append(["abstain", abstain.margin, abstain.min_score, abstain.background])
    if examples is not None:
        pairs, ask, made_under = examples
        content.append(["examples", pairs, [ask.method, ask.alpha, ask.beta, ask.blend], made_under])
    blob = json.dumps(content, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


class VocabRegistry:
    """Thread-safe; its methods block (encode, I/O) and are called off the event loop."""

    def __init__(
        self,
        store: VocabStore,
        text_encoder: TextEncoder,
        max_labels: int = 5000,
        on_embedding_cache: Callable[[int, int], None] | None = None,
        ad_hoc_cache_prompts: int = 20_000,
        on_prompts_encoded: Callable[[int], None] | None = None,
        max_prompts: int | None = None,
        max_ad_hoc_prompts: int | None = None,
        text_gate: TextGate | None = None,
    ) -> None:
        """``ad_hoc_cache_prompts``: how many prompt embeddings of ad-hoc labels (sent with a
        classify request) are kept, in this process, least recently used first out; they are
        never written to the store, which keeps the embeddings of stored vocabularies only.
        ``max_prompts`` / ``max_ad_hoc_prompts``: labels x templates of a vocabulary / of a
        request's ad-hoc labels at most (None: no bound); ``text_gate``: the encoder's fair share
        and admission (``text_gate.py``)."""
        self.store = store
        self.text_encoder = text_encoder
        self.text_model = text_encoder.model_id
        self.max_labels = max_labels
        self._on_embedding_cache = on_embedding_cache
        self._on_prompts_encoded = on_prompts_encoded
        self.max_prompts, self.max_ad_hoc_prompts = max_prompts, max_ad_hoc_prompts
        self.text_gate = text_gate or TextGate()
        self._reencode_lock = threading.RLock()
        self._cache: dict[str, tuple[int, str, Classifier]] = {}
        self._cache_lock = threading.Lock()
        self.embedding_stats = CacheStats()
        self.ad_hoc_embeddings = LRUEmbeddings(ad_hoc_cache_prompts)
        self._background: Classifier | None = None  # the built-in background label set, encoded once
        self.linter = Linter(store)
        # (vocabulary, candidates) -> the background: once per pair of versions, not per request
        self._backgrounds: OrderedDict[tuple[int, int], tuple[Classifier, Classifier, Classifier]] = OrderedDict()
        self.examples: ExampleSource | None = None  # where examples' embeddings come from (use_examples)
        store.subscribe(self._forget)

    def use_examples(self, source: ExampleSource) -> None:
        """Read examples' embeddings from ``source`` (the server's archive under its model)."""
        self.examples = source

    # -- validation -------------------------------------------------------------------------

    def _clean(self, name: str, labels: Sequence[str], templates: Sequence[str] | None) -> tuple[list[str], list[str]]:
        """Clean and check a vocabulary's name, labels and templates; :class:`InputError` says what is wrong."""
        validate_name(name)
        return validate_labels(labels, self.max_labels), validate_templates(templates)

    def _prepare(
        self, name: str, labels: Sequence[str], templates: Sequence[str] | None, clean_labels: bool = False
    ) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
        """Validated labels and templates, and the cached embeddings of their prompts."""
        clean, temps = self._clean(name, labels, templates)
        _check_prompt_count(len(clean), len(temps), self.max_prompts, "a vocabulary", "max_prompts")
        cached = self._cached_embeddings(_prompts(clean, temps, clean_labels))
        check_prompt_lengths(self.text_encoder, clean, temps, known=cached, clean=clean_labels)
        return clean, temps, cached

    def _cached_embeddings(self, prompts: list[str]) -> dict[str, np.ndarray]:
        """Stored embeddings of ``prompts``; none while the store is unreachable (they are encoded)."""
        try:
            return self.store.get_embeddings(self.text_model, prompts)
        except StoreUnavailable:
            return {}

    # -- writes -----------------------------------------------------------------------------

    def put(
        self,
        name: str,
        labels: Sequence[str],
        templates: Sequence[str] | None = None,
        if_match: str | None = None,
        clean_labels: bool = False,
        abstain: AbstainDefaults | None = None,
        examples: dict[str, list[str]] | None = None,
        few_shot: FewShotAsk | None = None,
    ) -> tuple[VocabRecord, bool]:
        """Store a new version (or nothing, for identical content). ``(record, changed)``.
        ``clean_labels``: prompts from cleaned-up labels (``ApplyEyeMakeup`` -> ``apply eye makeup``);
        ``abstain``: the vocabulary's default for "none of these"; ``examples``: ``{label: [archive
        row ids]}``, used as ``few_shot`` says (``few_shot.py``). Everything is checked before
        anything is stored."""
        clean, temps, cached = self._prepare(name, labels, templates, clean_labels)
        if abstain is not None and abstain.background is not None:
            validate_name(abstain.background)
        shots = self._examples(tuple(clean), examples, few_shot)
        etag = vocab_etag(
            self.text_model, clean, temps, clean_labels, abstain, (shots[0], shots[1], shots[3]) if shots else None
        )
        head = self.store.head(name)
        if head is not None and head[1] == etag and if_match in (None, etag):
            current = self.store.get(name)
            if current is not None and current.etag == etag:
                return current, False  # idempotent: nothing encoded, nothing written
        matrix = self._encode(clean, temps, cached, clean_labels=clean_labels)
        few = None
        if shots is not None:
            pairs, ask, embeddings, made_under = shots
            labels_of = np.array([i for i, _ in pairs], dtype=np.int64)
            ids = tuple(row_id for _, row_id in pairs)
            few = few_shot_build(matrix.astype(np.float64), labels_of, ids, embeddings, ask, made_under)
        record = VocabRecord(
            name,
            0,
            etag,
            self.text_model,
            tuple(clean),
            tuple(temps),
            matrix,
            time.time(),
            clean_labels,
            abstain,
            few_shot=few,
        )
        stored, changed = self.store.put(record, if_match)
        self._forget(name)
        return stored, changed

    def _examples(
        self, labels: tuple[str, ...], examples: dict[str, list[str]] | None, ask: FewShotAsk | None
    ) -> tuple[list[tuple[int, str]], FewShotAsk, np.ndarray, str] | None:
        """The examples checked and their embeddings read: ``(pairs, ask, embeddings, made_under)``."""
        if not examples:
            if ask is not None:
                raise InputError("few_shot needs examples: give {label: [archive row ids]}")
            if examples is not None:
                raise InputError("examples is empty: give {label: [row ids]} for at least one label")
            return None
        pairs = check_examples(labels, examples)
        if self.examples is None:
            raise InputError("this registry has no archive to read examples from")
        source = self.examples
        embeddings = source.lookup([row_id for _, row_id in pairs])
        return pairs, ask or FewShotAsk(), embeddings, source.fingerprint

    def check_label(self, name: str, label: str) -> None:
        """:class:`InputError` unless ``label`` is one of vocabulary ``name``'s labels."""
        if label not in self.get(name).labels:
            raise InputError(f"{label!r} is not one of the labels of vocabulary {name!r}")

    def add_examples(self, name: str, examples: dict[str, list[str]], if_match: str | None = None) -> VocabRecord:
        """A new version of ``name`` with ``examples`` added to those it has (its few-shot method
        and parameters as it asked them)."""
        current = self.get(name)
        merged = by_label(current.labels, current.few_shot) if current.few_shot else {}
        for label, ids in examples.items():
            merged[label] = [*merged.get(label, []), *(i for i in ids if i not in merged.get(label, []))]
        stored, _ = self.put(
            name,
            current.labels,
            current.templates,
            if_match=if_match,
            clean_labels=current.clean_labels,
            abstain=current.abstain,
            examples=merged,
            few_shot=current.few_shot.ask if current.few_shot else None,
        )
        return stored

    def delete(self, name: str) -> bool:
        validate_name(name)
        gone = self.store.delete(name)
        self._forget(name)
        return gone

    def _encode(
        self,
        labels: list[str],
        templates: list[str],
        cached: dict[str, np.ndarray] | None = None,
        keep: Callable[[dict[str, np.ndarray]], None] | None = None,
        clean_labels: bool = False,
    ) -> np.ndarray:
        """The classifier matrix; new embeddings go to ``keep`` (by default the store)."""
        prompts = _prompts(labels, templates, clean_labels)
        cached = dict(cached) if cached is not None else self._cached_embeddings(prompts)
        missing = [p for p in dict.fromkeys(prompts) if p not in cached]
        self.embedding_stats.hits += len(prompts) - len(missing)
        self.embedding_stats.misses += len(missing)
        if self._on_embedding_cache is not None:
            self._on_embedding_cache(len(prompts) - len(missing), len(missing))
        if missing:
            fresh = self.text_gate.encode(self.text_encoder, missing, self._progress(len(missing)))
            _check_finite(fresh, missing)  # before anything is cached
            new = dict(zip(missing, fresh, strict=True))
            with contextlib.suppress(StoreUnavailable):  # not cached this time; the result is the same
                (keep or partial(self.store.put_embeddings, self.text_model))(new)
            cached.update(new)
        emb = torch.from_numpy(np.stack([cached[p] for p in prompts])).view(len(labels), len(templates), -1)
        matrix = ensemble(emb).numpy()
        _check_finite(matrix, labels)  # never stored: every request would score NaN against it
        return matrix

    def _progress(self, total: int) -> Callable[[int, int], None]:
        """Counts encoded prompts (``on_prompts_encoded``: /metrics) and, for a long encode, logs
        how far it is every 5 s at INFO, so a PUT of thousands of prompts is never silent."""
        state: dict[str, float] = {"done": 0, "logged": time.monotonic()}
        if total >= 1000:
            log.info("encoding %d prompts", total)

        def report(done: int, _: int) -> None:
            if self._on_prompts_encoded is not None:
                self._on_prompts_encoded(done - int(state["done"]))
            state["done"] = done
            now = time.monotonic()
            if now - state["logged"] >= 5.0 or (done == total and total >= 1000):
                state["logged"] = now
                log.info("encoded %d of %d prompts", done, total)

        return report

    # -- reads ------------------------------------------------------------------------------

    def get(self, name: str) -> VocabRecord:
        validate_name(name)
        record = self.store.get(name)
        if record is None:
            raise VocabNotFound(f"no vocabulary named {name!r}")
        return record

    def summaries(self) -> list[VocabSummary]:
        return self.store.summaries()

    def classifier(self, name: str) -> tuple[Classifier, int]:
        """The classifier of ``name`` and its version; decoded once per (version, etag). While the
        store is unreachable, the one held in memory (if any) is served as it was."""
        validate_name(name)
        try:
            head = self.store.head(name)
        except StoreUnavailable:
            with self._cache_lock:
                held = self._cache.get(name)
            if held is None:
                raise
            return held[2], held[0]
        if head is None:
            raise VocabNotFound(f"no vocabulary named {name!r}")
        with self._cache_lock:
            hit = self._cache.get(name)
        if hit is not None and hit[:2] == head:
            return hit[2], hit[0]
        record = self.get(name)
        if record.text_model != self.text_model or self._examples_stale(record):
            record = self._reencoded(record)
        clf = self.to_classifier(record)
        with self._cache_lock:
            self._cache[name] = (record.version, record.etag, clf)
        return clf, record.version

    def _examples_stale(self, record: VocabRecord) -> bool:
        """Its examples' embeddings were made under another fingerprint than the archive's now."""
        return (
            record.few_shot is not None
            and self.examples is not None
            and record.few_shot.made_under != self.examples.fingerprint
        )

    def _reencoded(self, record: VocabRecord) -> VocabRecord:
        """A vocabulary is its labels, templates and options; its matrix is a cache of one text
        model. Under another model it is encoded again, once, and stored as a new version (so other
        replicas find it done; two doing it at once store one version: the same content has the
        same ETag)."""
        with self._reencode_lock:  # one re-encoding at a time in this process; the others wait for it
            current = self.get(record.name)
            if current.text_model == self.text_model and not self._examples_stale(current):
                return current
            try:  # If-Match: a PUT that changed the vocabulary meanwhile wins over this re-encoding
                stored, _ = self._put_again(current)
            except PreconditionFailed:
                return self._reencoded(self.get(record.name))
        if record.text_model != self.text_model:
            log.info(
                "vocabulary %r was encoded by %s: encoded again for %s (version %d)",
                record.name,
                record.text_model,
                self.text_model,
                stored.version,
            )
        else:
            log.info(
                "vocabulary %r: its examples read again under this model (version %d)", record.name, stored.version
            )
        return stored

    def _put_again(self, current: VocabRecord) -> tuple[VocabRecord, bool]:
        """``current``'s content stored again under this model (its examples read again from the
        archive: :class:`ArchiveMismatch` when it does not hold them under this model)."""
        try:
            return self.put(
                current.name,
                current.labels,
                current.templates,
                clean_labels=current.clean_labels,
                abstain=current.abstain,
                if_match=current.etag,
                examples=by_label(current.labels, current.few_shot) if current.few_shot else None,
                few_shot=current.few_shot.ask if current.few_shot else None,
            )
        except (NotInArchive, ArchiveMismatch):
            raise ArchiveMismatch(
                f"vocabulary {current.name!r} has examples made under another model, and the archive does not "
                "hold them under this one: index its examples again (t4v index, POST /archive/videos) or PUT it "
                "again"
            ) from None

    def to_classifier(self, record: VocabRecord) -> Classifier:
        if record.text_model != self.text_model:
            raise InputError(
                f"vocabulary {record.name!r} was encoded by {record.text_model}, this server runs "
                f"{self.text_model}: PUT it again here"
            )
        base = Classifier(
            record.labels, torch.from_numpy(record.matrix), record.templates, record.text_model, record.abstain
        )
        return with_few_shot(base, record.few_shot) if record.few_shot is not None else base

    def with_examples(self, classifier: Classifier, examples: Examples) -> Classifier:
        """``classifier`` (ad-hoc labels) with examples given as embeddings (``t4v classify
        --examples``), used as they ask (``few_shot.py``)."""
        index = {label: i for i, label in enumerate(classifier.labels)}
        for label, source in zip(examples.labels, examples.ids or examples.labels, strict=True):
            if label not in index:
                raise InputError(f"the example {source!r} is of {label!r}, which is not one of the labels")
        labels_of = np.array([index[label] for label in examples.labels], dtype=np.int64)
        counts = np.bincount(labels_of, minlength=len(index))
        if counts.max(initial=0) > MAX_PER_LABEL or len(labels_of) > MAX_EXAMPLES:
            raise InputError(f"at most {MAX_PER_LABEL} examples per label and {MAX_EXAMPLES} in all")
        text = classifier.matrix.numpy().astype(np.float64)
        few = few_shot_build(text, labels_of, examples.ids, examples.embeddings, examples.ask, "")
        return with_few_shot(classifier, few)

    def ad_hoc(
        self, labels: Sequence[str], templates: Sequence[str] | None = None, clean_labels: bool = False
    ) -> Classifier:
        """A classifier for labels sent with the request: embeddings from the store (stored
        vocabularies' prompts) or the bounded in-process cache; new ones go to that cache only."""
        clean, temps = self._clean("ad-hoc", labels, templates)
        _check_prompt_count(len(clean), len(temps), self.max_ad_hoc_prompts, "ad-hoc labels", "max_ad_hoc_prompts")
        prompts = _prompts(clean, temps, clean_labels)
        cached = self._cached_embeddings(prompts)
        cached.update(self.ad_hoc_embeddings.get_many(p for p in prompts if p not in cached))
        check_prompt_lengths(self.text_encoder, clean, temps, known=cached, clean=clean_labels)
        matrix = self._encode(clean, temps, cached, keep=self.ad_hoc_embeddings.put_many, clean_labels=clean_labels)
        return Classifier(tuple(clean), torch.from_numpy(matrix), tuple(temps), self.text_model)

    def background(self, vocabulary: Classifier, name: str | None = None) -> Classifier:
        """The background vocabulary for open-set abstention, minus the labels that are the
        vocabulary's own (``engine/vocab/abstain.py``): the registered vocabulary ``name``, or by default
        the Kinetics-400 names with the reference template (encoded once; their embeddings cached
        like any vocabulary's)."""
        from text4vis.models.presets import preset_labels

        if name is not None:
            try:
                candidates, _ = self.classifier(name)
            except VocabNotFound:
                raise VocabNotFound(f"no vocabulary named {name!r} to use as the background") from None
            return self._background_for(vocabulary, candidates)
        if self._background is None:
            labels = preset_labels("kinetics400")
            matrix = self._encode(labels, [DEFAULT_TEMPLATE])
            self._background = Classifier(tuple(labels), torch.from_numpy(matrix), (DEFAULT_TEMPLATE,), self.text_model)
        return self._background_for(vocabulary, self._background)

    def _background_for(self, vocabulary: Classifier, candidates: Classifier) -> Classifier:
        """:func:`background_for`, kept for the last few pairs of classifiers (a stored
        vocabulary's classifier is one object per version, so its background is computed once
        per version of both; an ad-hoc vocabulary's is computed per request)."""
        from text4vis.engine.vocab.abstain import background_for

        key = (id(vocabulary), id(candidates))
        with self._cache_lock:
            hit = self._backgrounds.get(key)
            if hit is not None and hit[0] is vocabulary and hit[1] is candidates:
                self._backgrounds.move_to_end(key)
                return hit[2]
        kept = background_for(vocabulary, candidates)
        with self._cache_lock:
            self._backgrounds[key] = (vocabulary, candidates, kept)  # held: their ids are not reused meanwhile
            while len(self._backgrounds) > BACKGROUNDS_KEPT:
                self._backgrounds.popitem(last=False)
        return kept

    def _forget(self, name: str) -> None:
        with self._cache_lock:
            self._cache.pop(name, None)


def with_few_shot(classifier: Classifier, few: FewShot) -> Classifier:
    """``classifier`` as its examples make it: the prototype's blended rows, or Tip-Adapter's cache."""
    if few.method == "prototype":
        rows = classifier_rows(classifier.matrix.numpy().astype(np.float64), few).astype(np.float32)
        return replace(classifier, matrix=torch.from_numpy(rows))
    return replace(classifier, cache=tip_cache(few))


def _check_finite(rows: np.ndarray, names: Sequence[str]) -> None:
    if not np.isfinite(rows).all():
        bad = names[int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])]
        raise NonFiniteOutput(f"the text encoder produced a non-finite embedding (NaN or infinity) for {bad!r}")


class LRUEmbeddings:
    """At most ``capacity`` prompt embeddings, the least recently used dropped first; thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get_many(self, prompts: Iterable[str]) -> dict[str, np.ndarray]:
        found = {}
        with self._lock:
            for p in prompts:
                if p in self._items:
                    self._items.move_to_end(p)
                    found[p] = self._items[p]
        return found

    def put_many(self, embeddings: dict[str, np.ndarray]) -> None:
        with self._lock:
            self._items.update(embeddings)
            for p in embeddings:
                self._items.move_to_end(p)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


def _prompts(labels: Sequence[str], templates: Sequence[str], clean: bool = False) -> list[str]:
    return [p for label in labels for p in format_prompts(label, templates, clean)]


def _check_prompt_count(labels: int, templates: int, limit: int | None, what: str, setting: str) -> None:
    """:class:`InputError` when ``labels x templates`` prompts pass ``limit`` (a prompt bomb: one
    request of 5,000 labels x 64 templates held the text encoder for two minutes)."""
    if limit is not None and labels * templates > limit:
        raise InputError(
            f"{labels} labels x {templates} templates = {labels * templates} prompts; this server encodes at most "
            f"{limit} for {what} ({setting}): send fewer labels or templates"
        )
