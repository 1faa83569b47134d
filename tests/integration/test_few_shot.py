"""Few-shot vocabularies over the archive: a vocabulary carries a few stored windows per label;
Tip-Adapter's cache equals a transcription of its reference code, the prototype classifier is the
classes' means at blend 1, the examples lift accuracy where the words cannot (random test weights),
every bad input is a 4xx naming the item with nothing stored changed, and examples made under
another model are read again from the archive or refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from tests.media import generated_videos
from tests.server_helpers import make_app, running
from text4vis.engine.runtime.build import Runtime

CLASSES = {"clip_a.mp4": "quartz", "clip_b.mp4": "velvet", "clip_c.avi": "harbor"}  # words that say nothing of them


def run(go: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(go())


async def stored_windows(c: httpx.AsyncClient) -> dict[str, list[str]]:
    """Each test clip uploaded with 2 s windows: ``{label: [window ids]}`` (the clip is the class)."""
    ids: dict[str, list[str]] = {}
    for name, label in CLASSES.items():
        files = {"file": (name, generated_videos()[name].read_bytes(), "video/mp4")}
        r = await c.post("/archive/videos", files=files, data={"window_s": "2"})
        assert r.status_code == 200, r.text
        page = await c.get("/archive/videos", params={"kind": "window", "limit": 1000})
        ids[label] = [w["id"] for w in page.json()["rows"] if w["content_id"] == r.json()["video"]["id"]]
    return ids


async def labelled(c: httpx.AsyncClient, vocab: str) -> dict[str, dict[str, float]]:
    """Every stored window re-labelled under ``vocab``: ``{id: {label: probability}}``."""
    out = {}
    body = {"vocab": vocab, "kind": "window", "top_k": 0}
    async with c.stream("POST", "/archive/labels", json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            row = json.loads(line)
            if "id" in row:
                out[row["id"]] = {p["label"]: p["probability"] for p in row["predictions"]}
    return out


@pytest.fixture
def client(tmp_path: Path, runtime: Runtime) -> Callable[[], AsyncIterator[httpx.AsyncClient]]:
    return lambda: running(make_app(tmp_path, runtime))  # type: ignore[return-value]


def test_tip_adapter_equals_the_reference_formula_and_beats_the_words(client) -> None:  # noqa: ANN001
    async def go() -> None:
        async with client() as c:
            ids = await stored_windows(c)
            labels = list(CLASSES.values())
            examples = {label: ids[label][:2] for label in labels}
            r = await c.put("/vocab/zs", json={"labels": labels})
            assert r.status_code == 201
            body = {
                "labels": labels,
                "examples": examples,
                "few_shot": {"method": "tip-adapter", "alpha": 3, "beta": 1},
            }
            r = await c.put("/vocab/fs", json=body)
            assert r.status_code == 201, r.text
            few = r.json()["few_shot"]
            assert few["method"] == "tip-adapter" and (few["alpha"], few["beta"]) == (3.0, 1.0)
            assert few["examples"] == dict.fromkeys(labels, 2) and few["ids"] == examples
            assert 0.0 <= few["fit"]["zero_shot"] <= 1.0 and few["fit"]["queries"] == 6

            # the reference's run_tip_adapter, transcribed, on the stored embeddings
            async def embedding(row_id: str) -> np.ndarray:
                got = await c.get(f"/archive/videos/{row_id}", params={"embedding": "true"})
                return np.asarray(got.json()["embedding"], dtype=np.float64)

            keys = np.stack([await embedding(i) for label in labels for i in examples[label]])
            values = np.repeat(np.eye(3), 2, axis=0)  # one-hot, in the keys' order
            registry = c._transport.app.state.server.registry  # type: ignore[attr-defined]
            clip_weights = registry.get("fs").matrix.astype(np.float64).T  # [D, C]
            few_shot, zero_shot = await labelled(c, "fs"), await labelled(c, "zs")
            held_out = [(i, label) for label in labels for i in ids[label][2:]]
            for row_id, _ in held_out:
                f = await embedding(row_id)
                f = f / np.linalg.norm(f)
                clip_logits = 100.0 * f @ clip_weights
                affinity = f @ keys.T
                cache_logits = np.exp((-1) * (1.0 - 1.0 * affinity)) @ values
                tip_logits = clip_logits + cache_logits * 3.0
                expected = torch.softmax(torch.from_numpy(tip_logits), dim=0).numpy()
                got = np.array([few_shot[row_id][label] for label in labels])
                assert np.abs(got - expected).max() < 1e-6
            # its parameters fitted by leave-one-out, the cache separates what the words cannot
            r = await c.put("/vocab/fit", json={**body, "few_shot": {"method": "tip-adapter"}})
            fitted = await labelled(c, "fit")
            hits = {
                name: np.mean([max(p[r], key=p[r].get) == label for r, label in held_out])
                for name, p in (("fitted", fitted), ("zero", zero_shot))
            }
            assert hits["fitted"] == 1.0 and hits["fitted"] > hits["zero"], (hits, r.json()["few_shot"])

    run(go)


def test_prototype_at_blend_one_is_the_classes_mean_and_auto_fits(client) -> None:  # noqa: ANN001
    async def go() -> None:
        async with client() as c:
            ids = await stored_windows(c)
            labels = list(CLASSES.values())
            examples = {label: ids[label][:2] for label in labels[:2]}  # the third label keeps its text row
            body = {"labels": labels, "examples": examples, "few_shot": {"method": "prototype", "blend": 1}}
            assert (await c.put("/vocab/p", json=body)).status_code == 201
            registry = c._transport.app.state.server.registry  # type: ignore[attr-defined]
            classifier, _ = registry.classifier("p")
            text = registry.get("p").matrix
            for k, label in enumerate(labels[:2]):
                rows = []
                for i in examples[label]:
                    got = await c.get(f"/archive/videos/{i}", params={"embedding": "true"})
                    rows.append(np.asarray(got.json()["embedding"]))
                mean = np.mean(rows, axis=0)
                assert np.abs(classifier.matrix[k].numpy() - mean / np.linalg.norm(mean)).max() < 1e-6
            assert np.abs(classifier.matrix[2].numpy() - text[2]).max() == 0  # no examples: the text row

            auto = await c.put("/vocab/a", json={"labels": labels, "examples": {k: v[:3] for k, v in ids.items()}})
            few = auto.json()["few_shot"]
            assert few["asked"]["method"] == "auto" and few["method"] in ("tip-adapter", "prototype")
            assert few["fit"]["few_shot"] >= few["fit"]["zero_shot"] and few["fit"]["queries"] == 9

    run(go)


def test_bad_examples_are_4xx_naming_the_item_and_change_nothing(client) -> None:  # noqa: ANN001
    async def go() -> None:
        async with client() as c:
            ids = await stored_windows(c)
            labels = list(CLASSES.values())
            good = {"labels": labels, "examples": {"quartz": ids["quartz"][:1]}}
            first = await c.put("/vocab/v", json=good)
            assert first.status_code == 201
            cases = [
                ({"quartz": ["f" * 64]}, {}, 404, "f" * 64),
                ({"granite": ids["quartz"][:1]}, {}, 422, "'granite'"),
                ({"quartz": []}, {}, 422, "'quartz'"),
                ({"quartz": ids["quartz"][:1], "velvet": ids["quartz"][:1]}, {}, 422, ids["quartz"][0]),
                ({"quartz": [f"{i:064x}" for i in range(65)]}, {}, 422, "at most 64"),
                ({}, {}, 422, "examples is empty"),
                (None, {"method": "prototype"}, 422, "few_shot needs examples"),
            ]
            for examples, few_shot, status, named in cases:
                body: dict[str, object] = {"labels": labels, "examples": examples}
                if few_shot:
                    body["few_shot"] = few_shot
                r = await c.put("/vocab/v", json=body)
                assert r.status_code == status and named in r.text, (examples, r.status_code, r.text)
            for bad in ('{"alpha": NaN}', '{"beta": -1}', '{"blend": 2}', '{"method": "knn"}'):
                text = json.dumps({"labels": labels, "examples": good["examples"]})[:-1] + f', "few_shot": {bad}}}'
                r = await c.put("/vocab/v", content=text, headers={"content-type": "application/json"})
                assert r.status_code == 422, (bad, r.text)
            now = await c.get("/vocab/v")
            assert (
                now.json()["version"] == first.json()["version"] and now.json()["few_shot"]["ids"] == good["examples"]
            )

    run(go)


def test_an_uploaded_example_joins_the_vocabulary(client) -> None:  # noqa: ANN001
    async def go() -> None:
        async with client() as c:
            labels = list(CLASSES.values())
            assert (await c.put("/vocab/v", json={"labels": labels})).status_code == 201
            clip = generated_videos()["clip_a.mp4"]
            files = {"file": ("a.mp4", clip.read_bytes(), "video/mp4")}
            bad = await c.post("/vocab/v/examples", files=files, data={"label": "granite"})
            assert bad.status_code == 422 and "'granite' is not one of the labels" in bad.text
            assert (await c.get("/archive/stats")).json()["tables"] == []  # nothing stored for a bad label
            r = await c.post("/vocab/v/examples", files=files, data={"label": "quartz"})
            assert r.status_code == 200, r.text
            few = r.json()["few_shot"]
            assert few["examples"] == {"quartz": 1} and r.json()["version"] == 2
            stored = await c.get(f"/archive/videos/{few['ids']['quartz'][0]}")
            assert stored.status_code == 200 and stored.json()["name"] == "a.mp4"

    run(go)


def test_examples_follow_the_model_or_are_refused_in_one_sentence(tmp_path: Path, tiny_clip_path: Path) -> None:
    """A vocabulary's examples were read under one fingerprint; a server of the same data dir
    running bf16 (another fingerprint) reads them again from its archive table once they are
    indexed there, and until then answers a 409 saying so (nothing stored is lost)."""
    from tests.server_helpers import settings
    from text4vis.models.clip_loader import TINY_ARCH
    from text4vis.server.app import create_app

    def app(**overrides: object) -> object:
        return create_app(settings(tmp_path, model=TINY_ARCH, clip_checkpoint=tiny_clip_path, **overrides))

    files = {"file": ("a.mp4", generated_videos()["clip_a.mp4"].read_bytes(), "video/mp4")}
    labels = list(CLASSES.values())

    async def go() -> None:
        async with running(app()) as c:  # type: ignore[arg-type]
            assert (await c.put("/vocab/v", json={"labels": labels})).status_code == 201
            first = await c.post("/vocab/v/examples", files=files, data={"label": "quartz"})
            made_under = first.json()["few_shot"]["made_under"]
        async with running(app(precision="bf16")) as c:  # type: ignore[arg-type]
            r = await c.post("/classify", files=files, data={"vocab": "v"})
            assert r.status_code == 409 and "examples made under another model" in r.json()["detail"], r.text
            assert (await c.post("/archive/videos", files=files)).status_code == 200  # indexed under bf16
            r = await c.post("/classify", files=files, data={"vocab": "v"})
            assert r.status_code == 200 and r.json()["vocab"]["version"] == 3, r.text
            few = (await c.get("/vocab/v")).json()["few_shot"]
            assert few["made_under"] != made_under and few["ids"] == first.json()["few_shot"]["ids"]

    run(go)


def test_lint_names_a_label_whose_examples_are_another_labels(client) -> None:  # noqa: ANN001
    async def go() -> None:
        async with client() as c:
            ids = await stored_windows(c)
            labels = list(CLASSES.values())
            mislabelled = {"quartz": ids["velvet"][:2], "velvet": ids["velvet"][2:4], "harbor": ids["harbor"][:2]}
            r = await c.put("/vocab/m", json={"labels": labels, "examples": mislabelled})
            warnings = [w for w in r.json()["warnings"] if w["kind"] == "examples"]
            assert [w["labels"] for w in warnings] == [["quartz", "velvet"]], r.json()["warnings"]

    run(go)
