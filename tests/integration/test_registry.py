"""One suite, two stores: SQLite (embedded default) and a real redis-server."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from text4vis.engine.errors import PreconditionFailed, VocabNotFound
from text4vis.engine.vocab.registry import VocabRegistry
from text4vis.engine.vocab.stores.base import VocabStore
from text4vis.engine.vocab.stores.redis import RedisStore
from text4vis.engine.vocab.stores.sqlite import SQLiteStore
from text4vis.models.classifiers import text_classifier
from text4vis.models.clip_loader import TINY_ARCH, ClipSource, LoadedClip, load_clip
from text4vis.models.errors import InputError
from text4vis.models.text_encoder import TextEncoder


class CountingEncoder(TextEncoder):
    def __init__(self, clip: LoadedClip) -> None:
        super().__init__(clip)
        self.encoded: list[str] = []
        self.counted: list[str] = []

    def encode(self, prompts, trim=True, progress=None):  # noqa: ANN001, ANN201
        self.encoded.extend(prompts)
        return super().encode(prompts, trim, progress)

    def token_counts(self, prompts):  # noqa: ANN001, ANN201
        self.counted.extend(prompts)
        return super().token_counts(prompts)


@pytest.fixture(params=["sqlite", "redis"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201
    """Makes stores that share one backing database (two 'replicas')."""
    opened: list[VocabStore] = []
    prefix = f"t{uuid.uuid4().hex[:8]}"

    def make() -> VocabStore:
        if request.param == "sqlite":
            store: VocabStore = SQLiteStore(tmp_path / "vocab.db")
        else:
            store = RedisStore(request.getfixturevalue("redis_url"), prefix=prefix)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def registry(store_factory, tiny_clip: LoadedClip) -> Iterator[VocabRegistry]:  # noqa: ANN001
    yield VocabRegistry(store_factory(), CountingEncoder(tiny_clip), max_labels=50)


def test_put_get_versions_and_idempotence(registry: VocabRegistry, tiny_clip: LoadedClip) -> None:
    enc = registry.text_encoder
    assert isinstance(enc, CountingEncoder)
    rec, changed = registry.put("sports", ["yoga", "surfing", "ApplyEyeMakeup"])
    assert changed and rec.version == 1 and rec.labels == ("yoga", "surfing", "ApplyEyeMakeup")
    expected = text_classifier(TextEncoder(tiny_clip), rec.labels, rec.templates)
    np.testing.assert_allclose(rec.matrix, expected.numpy(), atol=1e-6)
    assert len(enc.encoded) == 3

    again, changed = registry.put("sports", ["yoga", "surfing", "ApplyEyeMakeup"])
    assert not changed and again.version == 1 and again.etag == rec.etag
    assert len(enc.encoded) == 3  # nothing re-encoded

    grown, changed = registry.put("sports", ["yoga", "surfing", "ApplyEyeMakeup", "skiing"])
    assert changed and grown.version == 2 and grown.etag != rec.etag
    assert enc.encoded[3:] == ["a video of a person skiing."]  # only the new prompt

    clf, version = registry.classifier("sports")
    assert version == 2 and clf.labels[-1] == "skiing"
    assert [v.name for v in registry.summaries()] == ["sports"]


def test_if_match(registry: VocabRegistry) -> None:
    rec, _ = registry.put("v", ["a", "b"])
    with pytest.raises(PreconditionFailed):
        registry.put("v", ["a", "b", "c"], if_match="stale")
    with pytest.raises(PreconditionFailed):
        registry.put("new", ["a", "b"], if_match=rec.etag)
    updated, _ = registry.put("v", ["a", "b", "c"], if_match=rec.etag)
    assert updated.version == 2
    assert registry.get("v").labels == ("a", "b", "c")  # a refused PUT lost nothing


def test_delete(registry: VocabRegistry) -> None:
    registry.put("gone", ["a", "b"])
    assert registry.delete("gone") and not registry.delete("gone")
    with pytest.raises(VocabNotFound):
        registry.classifier("gone")


def test_cached_prompts_skip_the_token_count(registry: VocabRegistry) -> None:
    enc = registry.text_encoder
    assert isinstance(enc, CountingEncoder)
    registry.put("first", ["yoga", "surfing"])
    assert enc.counted == ["a video of a person yoga.", "a video of a person surfing."]
    registry.put("second", ["surfing", "skiing"])  # surfing is cached: it was encoded, it fits
    registry.ad_hoc(["yoga", "diving"])
    assert enc.counted[2:] == ["a video of a person skiing.", "a video of a person diving."]
    with pytest.raises(InputError, match="tokens"):  # an uncached prompt is still counted
        registry.put("third", ["surfing", "ab " * 90])
    assert registry.get("second").labels == ("surfing", "skiing")


def test_summaries_match_the_records(registry: VocabRegistry) -> None:
    registry.put("b-three", ["a", "b", "c"])
    registry.put("a-one", ["x", "w"])
    registry.put("a-one", ["x", "y"])
    registry.put("c-gone", ["z", "q"])
    registry.delete("c-gone")
    rows = registry.summaries()
    assert [r.name for r in rows] == ["a-one", "b-three"]
    for row in rows:
        full = registry.get(row.name)
        assert (row.version, row.etag, row.text_model, row.num_labels) == (
            full.version,
            full.etag,
            full.text_model,
            len(full.labels),
        )
    assert rows[0].version == 2 and rows[0].num_labels == 2


@pytest.mark.parametrize(
    ("name", "labels", "templates", "fragment"),
    [
        ("bad name!", ["a"], None, "must match"),
        ("x" * 65, ["a"], None, "must match"),
        ("ok", [], None, "empty"),
        ("ok", ["a", "a"], None, "duplicate labels: a"),
        ("ok", ["a", "  "], None, "non-empty"),
        ("ok", [f"l{i}" for i in range(51)], None, "at most 50"),
        ("ok", ["a", "b"], ["no placeholder"], "placeholder"),
        ("ok", ["ab " * 90, "b"], None, "tokens"),
        ("ok", ["a"], None, "one label cannot be classified"),
    ],
)
def test_bad_input_is_refused_and_nothing_lost(
    registry: VocabRegistry, name: str, labels: list[str], templates: list[str] | None, fragment: str
) -> None:
    registry.put("ok", ["kept", "also"])
    with pytest.raises(InputError, match=fragment):
        registry.put(name, labels, templates)
    assert registry.get("ok").labels == ("kept", "also")


def test_embedding_cache_is_shared_and_keyed_by_prompt(store_factory, tiny_clip: LoadedClip) -> None:  # noqa: ANN001
    store = store_factory()
    first = VocabRegistry(store, CountingEncoder(tiny_clip))
    first.put("a", ["yoga", "surfing"])
    second = VocabRegistry(store_factory(), CountingEncoder(tiny_clip))
    second.put("b", ["surfing", "yoga", "skiing"])
    assert second.text_encoder.encoded == ["a video of a person skiing."]  # type: ignore[attr-defined]
    second.put("c", ["yoga", "skiing"], templates=["a photo of {}."])
    assert second.text_encoder.encoded[-2:] == ["a photo of yoga.", "a photo of skiing."]  # type: ignore[attr-defined]
    assert second.embedding_stats.hits == 2 and second.embedding_stats.misses == 3


def test_replicas_see_each_other(store_factory, tiny_clip: LoadedClip) -> None:  # noqa: ANN001
    one = VocabRegistry(store_factory(), TextEncoder(tiny_clip))
    two = VocabRegistry(store_factory(), TextEncoder(tiny_clip))
    one.put("shared", ["a", "b"])
    clf, version = two.classifier("shared")
    assert (clf.labels, version) == (("a", "b"), 1)
    one.put("shared", ["a", "b", "c"])
    time.sleep(0.1)
    clf, version = two.classifier("shared")
    assert (clf.labels, version) == (("a", "b", "c"), 2)


def test_concurrent_puts_bump_versions_atomically(store_factory, tiny_clip: LoadedClip) -> None:  # noqa: ANN001
    registries = [VocabRegistry(store_factory(), TextEncoder(tiny_clip)) for _ in range(4)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: registries[i % 4].put("race", ["a", f"label {i}"]), range(12)))
    versions = sorted(r.version for r, changed in results if changed)
    assert versions == list(range(1, 13))
    assert registries[0].get("race").version == 12


def test_text_model_mismatch_is_refused(registry: VocabRegistry) -> None:
    rec, _ = registry.put("v", ["a", "b"])
    other = type(rec)(**{**rec.__dict__, "text_model": "ViT-L-14/openai"})
    with pytest.raises(InputError, match="encoded by ViT-L-14/openai"):
        registry.to_classifier(other)
    assert torch.is_tensor(registry.to_classifier(rec).matrix)


def test_a_vocabulary_follows_the_model(
    store_factory,
    tiny_clip: LoadedClip,
    caplog: pytest.LogCaptureFixture,  # noqa: ANN001
) -> None:
    """Stored under one text model, used under another (a restart with other weights): encoded
    again once, from its labels, templates and options, stored as a new version that a second
    replica of the new model finds done; one log line says so."""
    from text4vis.engine.request import AbstainDefaults

    old = VocabRegistry(store_factory(), TextEncoder(tiny_clip))
    abstain = AbstainDefaults(margin=0.05)
    first, _ = old.put("v", ["yoga", "surfing", "brush_hair"], ["a clip of {}."], clean_labels=True, abstain=abstain)
    other_clip = load_clip(ClipSource(arch=TINY_ARCH, random_init=True, seed=7))
    new = VocabRegistry(store_factory(), CountingEncoder(other_clip))
    assert new.text_model != old.text_model
    with caplog.at_level(logging.INFO, logger="text4vis.engine.vocab.registry"):
        clf, version = new.classifier("v")
    assert version == first.version + 1 and clf.text_model == new.text_model
    assert f"vocabulary 'v' was encoded by {old.text_model}: encoded again for {new.text_model}" in caplog.text
    record = new.get("v")
    assert (record.labels, record.templates, record.clean_labels, record.abstain) == (
        first.labels,
        first.templates,
        True,
        abstain,
    )
    expected = text_classifier(TextEncoder(other_clip), record.labels, record.templates, clean=True)
    np.testing.assert_allclose(record.matrix, expected.numpy(), atol=1e-6)
    replica = VocabRegistry(store_factory(), CountingEncoder(other_clip))
    assert replica.classifier("v")[1] == version
    assert isinstance(replica.text_encoder, CountingEncoder) and replica.text_encoder.encoded == []


def test_ad_hoc_embeddings_stay_in_a_bounded_cache(store_factory, tiny_clip: LoadedClip) -> None:  # noqa: ANN001
    """Ad-hoc labels never grow the store; their embeddings live in an LRU of fixed size."""
    store = store_factory()
    registry = VocabRegistry(store, CountingEncoder(tiny_clip), ad_hoc_cache_prompts=4)
    registry.put("stored", ["yoga", "surfing"])
    for i in range(5):
        registry.ad_hoc([f"label {i}a", f"label {i}b", "yoga"])  # yoga: from the store
    assert store.get_embeddings(registry.text_model, [f"a video of a person label {i}a." for i in range(5)]) == {}
    assert len(registry.ad_hoc_embeddings) == 4
    enc = registry.text_encoder
    assert isinstance(enc, CountingEncoder)
    before = len(enc.encoded)
    again = registry.ad_hoc(["label 4a", "label 4b"])  # the most recent: cached, nothing encoded
    assert len(enc.encoded) == before and again.labels == ("label 4a", "label 4b")
    registry.ad_hoc(["label 0a", "label 0b"])  # dropped long ago: encoded again
    assert enc.encoded[-2:] == ["a video of a person label 0a.", "a video of a person label 0b."]
    np.testing.assert_allclose(
        registry.ad_hoc(["label 0a", "yoga"]).matrix.numpy(), registry.ad_hoc(["label 0a", "yoga"]).matrix.numpy()
    )


def test_clean_labels_is_stored_and_part_of_the_etag(registry: VocabRegistry) -> None:
    plain, _ = registry.put("ucf", ["ApplyEyeMakeup", "brush_hair"])
    cleaned, changed = registry.put("ucf", ["ApplyEyeMakeup", "brush_hair"], clean_labels=True)
    assert changed and cleaned.version == 2 and cleaned.etag != plain.etag
    assert registry.get("ucf").clean_labels is True and not np.allclose(plain.matrix, cleaned.matrix)
    again, changed = registry.put("ucf", ["ApplyEyeMakeup", "brush_hair"], clean_labels=True)
    assert not changed and again.version == 2


def test_abstention_default_is_stored_in_both_stores_and_part_of_the_etag(registry: VocabRegistry) -> None:
    from text4vis.engine.request import AbstainDefaults

    plain, _ = registry.put("v", ["a", "b"])
    default = AbstainDefaults(0.05, 0.2, "kitchen")
    with_default, changed = registry.put("v", ["a", "b"], abstain=default)
    assert changed and with_default.version == 2 and with_default.etag != plain.etag
    assert registry.get("v").abstain == default  # read back from the store, not the cache
    assert registry.classifier("v")[0].abstain == default
    again, changed = registry.put("v", ["a", "b"], abstain=default)
    assert not changed and again.version == 2
    assert registry.put("v", ["a", "b"])[0].abstain is None


def test_a_long_encode_reports_progress(
    store_factory,
    tiny_clip: LoadedClip,
    caplog: pytest.LogCaptureFixture,  # noqa: ANN001
) -> None:
    """A PUT of thousands of prompts says how far it is: INFO lines and a counter (/metrics)."""
    import logging

    counted: list[int] = []
    registry = VocabRegistry(
        store_factory(), TextEncoder(tiny_clip), max_labels=2000, on_prompts_encoded=counted.append
    )
    caplog.set_level(logging.INFO, logger="text4vis.engine.vocab.registry")
    registry.put("big", [f"class {i}" for i in range(1200)])
    assert sum(counted) == 1200 and len(counted) > 1  # one report per batch
    assert "encoding 1200 prompts" in caplog.text and "encoded 1200 of 1200 prompts" in caplog.text


def test_lint_runs_once_per_version_on_its_own_thread_and_is_stored_with_it(
    store_factory,
    tiny_clip: LoadedClip,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    """Six concurrent reads of a version nobody linted yet share one computation, on the lint
    thread (not the executor uploads need); the result is stored with the version, so another
    replica (or a restart) reads it instead of computing it; a new version is linted anew."""
    import text4vis.engine.vocab.lint as lint_module

    calls: list[str] = []
    real = lint_module.lint

    def counted(labels, matrix):  # noqa: ANN001, ANN202
        calls.append(threading.current_thread().name)
        time.sleep(0.3)  # long enough for the six reads to overlap
        return real(labels, matrix)

    monkeypatch.setattr(lint_module, "lint", counted)
    first = VocabRegistry(store_factory(), CountingEncoder(tiny_clip), max_labels=50)
    record, _ = first.put("lint", ["surfing", "Surfing!", "yoga"])
    assert record.lint is None  # stored before its lint: what an earlier release left too
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: first.linter.warnings(first.get("lint")).result(), range(6)))
    assert len(calls) == 1 and calls[0].startswith("t4v-lint")
    assert all(r == results[0] for r in results) and results[0][0].labels == ("surfing", "Surfing!")
    replica = VocabRegistry(store_factory(), CountingEncoder(tiny_clip), max_labels=50)
    stored = replica.get("lint")
    assert stored.lint is not None and list(stored.lint) == results[0]
    assert replica.linter.warnings(stored).result() == results[0] and len(calls) == 1
    replica.put("lint", ["surfing", "yoga"])
    assert replica.get("lint").lint is None
    assert replica.linter.warnings(replica.get("lint")).result() == [] and len(calls) == 2


def test_a_background_is_computed_once_per_pair_of_versions(
    registry: VocabRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import text4vis.engine.vocab.abstain as abstain

    calls = []
    real = abstain.background_for

    def counted(vocabulary, candidates):  # noqa: ANN001, ANN202
        calls.append(candidates.labels)
        return real(vocabulary, candidates)

    monkeypatch.setattr(abstain, "background_for", counted)
    registry.put("mine", ["surfing", "yoga"])
    registry.put("bg", ["cooking", "Surfing!", "knitting"])
    mine, _ = registry.classifier("mine")
    first = registry.background(mine, "bg")
    assert first.labels == ("cooking", "knitting") and registry.background(mine, "bg") is first
    assert len(calls) == 1
    registry.put("bg", ["cooking", "juggling"])  # a new version of the background: computed again
    assert registry.background(registry.classifier("mine")[0], "bg").labels == ("cooking", "juggling")
    assert len(calls) == 2


def test_a_text_encoder_that_yields_nan_stores_and_caches_nothing(
    store_factory,
    tiny_clip: LoadedClip,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    from text4vis.engine.errors import NonFiniteOutput

    encoder = CountingEncoder(tiny_clip)
    real = encoder.encode

    def nan_for_yoga(prompts, trim=True, progress=None):  # noqa: ANN001, ANN202
        out = real(prompts, trim, progress).clone()
        out[[i for i, p in enumerate(prompts) if "yoga" in p]] = float("nan")
        return out

    monkeypatch.setattr(encoder, "encode", nan_for_yoga)
    registry = VocabRegistry(store_factory(), encoder, max_labels=50)
    with pytest.raises(NonFiniteOutput, match="non-finite embedding .* for 'a video of a person yoga.'"):
        registry.put("nan", ["surfing", "yoga"])
    assert registry.store.get("nan") is None
    assert registry.store.get_embeddings(registry.text_model, ["a video of a person surfing."]) == {}


def test_the_stored_text_embeddings_are_bounded_least_recently_used_out(
    store_factory,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    """The embedding cache grew forever (138k rows after the test suite): past max_prompts, the
    least recently used prompts (written or read) are dropped; other text models are untouched."""
    import text4vis.engine.vocab.stores.base as stores

    monkeypatch.setattr(stores, "TOUCH_EVERY_S", 0.0)  # every read counts as a use (the hour would hide it)
    store = store_factory()
    store.max_prompts = 10
    vec = np.ones(4, dtype=np.float32)
    store.put_embeddings("other-model", {"kept": vec})
    store.put_embeddings("m", {f"p{i}": vec * i for i in range(6)})
    time.sleep(0.01)
    store.put_embeddings("m", {f"p{i}": vec * i for i in range(6, 10)})
    time.sleep(0.01)
    assert set(store.get_embeddings("m", ["p0", "p1"])) == {"p0", "p1"}  # used again: the newest
    time.sleep(0.01)
    store.put_embeddings("m", {f"p{i}": vec * i for i in range(10, 14)})
    everything = [f"p{i}" for i in range(14)]
    left = store.get_embeddings("m", everything)
    assert sorted(left, key=lambda p: int(p[1:])) == ["p0", "p1", *[f"p{i}" for i in range(6, 14)]]
    assert np.array_equal(left["p12"], vec * 12)
    assert set(store.get_embeddings("other-model", ["kept"])) == {"kept"}


def test_a_vocabulary_s_embeddings_are_one_transaction(tmp_path: Path) -> None:
    """5,000 new prompt embeddings were 5,000 autocommit inserts (each a commit and an fsync)
    under the store's lock, and every read waited for them; now they are one transaction (Redis:
    one MULTI/EXEC pipeline already)."""
    store = SQLiteStore(tmp_path / "v.db")
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    embeddings = {f"a video of a person doing {i}.": np.full(8, i, dtype=np.float32) for i in range(5000)}
    store.put_embeddings("m", embeddings)
    commits = [s for s in statements if s.strip().upper() in ("COMMIT", "BEGIN IMMEDIATE")]
    assert commits == ["BEGIN IMMEDIATE", "COMMIT"], commits[:6]
    assert len(store.get_embeddings("m", list(embeddings))) == 5000
    store.close()
