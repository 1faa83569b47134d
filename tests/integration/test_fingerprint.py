"""An archive table's fingerprint says everything that changes an embedding, and nothing that does
not: rows made with another activation, precision or backend get a table of their own (they were
stored beside the defaults' before), equal embeddings (another decoder, an explicit activation
equal to the automatic one) share one, and ``t4v relabel`` with the defaults answers only rows
equal to ``t4v classify`` with the defaults."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.integration.test_archive import LABELS, plan_of, relabelled
from tests.media import generated_videos
from tests.server_helpers import classify_offline
from text4vis.engine.archive.spec import ArchiveSpec
from text4vis.engine.archive.store import open_archive
from text4vis.engine.facade import ClassifyResult
from text4vis.engine.offline import index_files
from text4vis.engine.options import ModelOptions
from text4vis.engine.request import ClipSpec, IndexRequest, RequestLimits
from text4vis.engine.runtime.build import Runtime, build_runtime
from text4vis.models.clip_loader import TINY_ARCH

CLIP = ClipSpec().resolve(RequestLimits())


def fingerprint(runtime: Runtime) -> str:
    return ArchiveSpec.of(runtime, CLIP).fingerprint


@pytest.fixture(scope="module")
def openai_file(quick_weights: Path) -> ModelOptions:
    """An OpenAI-layout state dict read without --model (QuickGELU, as OpenAI trained it)."""
    return ModelOptions(clip_checkpoint=quick_weights, device="cpu")


def test_each_way_of_making_an_embedding_has_a_table_of_its_own(
    runtime: Runtime, tiny_clip_path: Path, openai_file: ModelOptions
) -> None:
    base = ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, device="cpu")
    variants = {
        "bf16": build_runtime(base.model_copy(update={"precision": "bf16"})),
        "fp16": build_runtime(base.model_copy(update={"precision": "fp16"})),
    }
    prints = {name: fingerprint(r) for name, r in variants.items()}
    assert fingerprint(runtime) not in prints.values() and len(set(prints.values())) == 2
    specs = {name: ArchiveSpec.of(r, CLIP) for name, r in variants.items()}
    assert specs["bf16"].precision == "bf16" and specs["fp16"].precision == "fp16"
    # the weights as they run: the cast changes the digest too
    assert len({runtime.info.weights_sha256, *(r.info.weights_sha256 for r in variants.values())}) == 3

    quick = build_runtime(openai_file)
    gelu = build_runtime(openai_file.model_copy(update={"activation": "gelu"}))
    assert (quick.info.activation, gelu.info.activation) == ("quickgelu", "gelu")
    assert gelu.info.model_id.split("/")[0].endswith("-gelu") and quick.info.model_id != gelu.info.model_id
    assert fingerprint(quick) != fingerprint(gelu)


def test_what_does_not_change_an_embedding_shares_a_table(
    runtime: Runtime, tiny_clip_path: Path, openai_file: ModelOptions
) -> None:
    quick = build_runtime(openai_file)
    explicit = build_runtime(openai_file.model_copy(update={"activation": "quickgelu"}))
    assert fingerprint(explicit) == fingerprint(quick)  # the activation auto picks, named
    decord = ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, device="cpu", decoder="decord")
    assert fingerprint(build_runtime(decord)) == fingerprint(runtime)  # decord's frames are PyAV's


def test_relabel_with_the_defaults_answers_only_rows_made_with_the_defaults(
    runtime: Runtime, tiny_clip_path: Path, tmp_path: Path
) -> None:
    """Two of three videos indexed in bf16 first, then all three with the defaults: the defaults'
    table holds three rows, each equal to classify with the defaults (the bf16 rows are elsewhere)."""
    paths = list(generated_videos().values())
    archive = open_archive(str(tmp_path / "archive"))
    bf16 = build_runtime(ModelOptions(model=TINY_ARCH, clip_checkpoint=tiny_clip_path, device="cpu", precision="bf16"))
    index_files(bf16, archive, paths[:2], IndexRequest())
    index_files(runtime, archive, paths, IndexRequest())
    table = archive.table(ArchiveSpec.of(runtime, CLIP))
    assert table.count() == 3 and len(archive.specs()) == 2

    stored = relabelled(table, plan_of(runtime))
    for path, result in zip(paths, classify_offline(runtime, LABELS, paths, top_k=0), strict=True):
        assert isinstance(result, ClassifyResult)
        assert max(abs(stored[str(path)][p.label] - p.probability) for p in result.predictions) < 1e-6


def test_a_table_written_before_keeps_its_name_and_says_it_may_be_mixed() -> None:
    old = {
        "text_model": "ViT-B-16-quickgelu/openai",
        "weights_sha256": "ab" * 32,
        "temporal": "mean",
        "preprocess": "resize 224, crop 224",
        "frames": 8,
        "views": "1x1",
        "sampling": "exact",
        "embed_dim": 512,
    }
    text = json.dumps(old, sort_keys=True)
    spec = ArchiveSpec.from_json(text)

    assert spec.fingerprint == hashlib.sha256(text.encode()).hexdigest()[:16]  # the table it names is found
    assert spec.legacy and "not recorded" in spec.describe()
    made = ArchiveSpec(**{**old, "activation": "quickgelu", "precision": "fp32", "backend": "torch"})  # type: ignore[arg-type]
    assert not made.legacy and made.fingerprint != spec.fingerprint
