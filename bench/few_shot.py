"""Few-shot vocabularies: what examples buy, what they cost to build, what they add to a request.

    PYTHONPATH=. .venv/bin/python bench/few_shot.py [--runs 5] [--rounds 20]

Prints, each the median of its runs:
1. accuracy: six clips (the three real clips of ../shared/data and three generated ones), each a
   class named by a word that says nothing of it, cut into 1 s windows stored in the archive; two
   windows per class are the examples, the others are re-labelled: zero-shot accuracy (the words
   alone) against the few-shot vocabulary (tip-adapter and prototype, fitted by leave-one-out).
   The tiny test model has random weights, so its text says nothing while its images still
   separate the clips: the examples are all the information there is.
2. building: PUT of a 400-label vocabulary with 10,000 stored examples (25 per label, D=512,
   read from a real archive table): wall seconds with the parameters given, and with them fitted
   (auto), against the same PUT without examples (its prompts cached), interleaved.
3. serving: POST /classify (the tiny model, in-process) with a 400-label vocabulary carrying 6,400
   examples against the same labels without: latency ratio over paired rounds, the order
   alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch

from tests.conftest import shared_path
from tests.media import generated_videos
from tests.server_helpers import make_app, running, tiny_runtime
from text4vis.models.clip_loader import TINY_ARCH

WORDS = ["quartz", "velvet", "harbor", "lantern", "meadow", "cobalt"]


def tiny_weights(directory: Path) -> Path:
    torch.manual_seed(1234)
    path = directory / "tiny.pt"
    torch.save(open_clip.create_model(TINY_ARCH).state_dict(), path)
    return path


async def accuracy(directory: Path) -> None:
    clips = [shared_path("videos", n) for n in ("arm_wrestling.mp4", "k400_sample_340x256.mp4")]
    clips += [shared_path("videos", "ucf101_sample_320x240.avi"), *generated_videos().values()]
    app = make_app(directory / "data-accuracy", tiny_runtime(tiny_weights(directory)))
    async with running(app) as c:
        windows: dict[str, list[str]] = {}
        for word, clip in zip(WORDS, clips, strict=True):
            r = await c.post("/archive/videos", files={"file": (clip.name, clip.read_bytes())}, data={"window_s": "1"})
            page = await c.get("/archive/videos", params={"kind": "window", "limit": 1000})
            windows[word] = [w["id"] for w in page.json()["rows"] if w["content_id"] == r.json()["video"]["id"]]
        examples = {word: ids[:2] for word, ids in windows.items()}
        held = {i: word for word, ids in windows.items() for i in ids[2:]}
        await c.put("/vocab/words", json={"labels": WORDS})
        rows = {"zero-shot (the words)": "words"}
        for method in ("tip-adapter", "prototype", "auto"):
            body = {"labels": WORDS, "examples": examples, "few_shot": {"method": method}}
            answer = (await c.put(f"/vocab/{method}", json=body)).json()["few_shot"]
            fit = answer["fit"]
            rows[
                f"{method} ({answer['method']}, alpha {answer['alpha']:g}, beta {answer['beta']:g}, "
                f"blend {answer['blend']:g}; leave-one-out {fit['zero_shot']:.2f} -> {fit['few_shot']:.2f})"
            ] = method
        print(
            f"accuracy: {len(WORDS)} clips as classes, {sum(map(len, windows.values()))} windows of 1 s, "
            f"2 examples per class, {len(held)} held out"
        )
        for title, vocab in rows.items():
            top = {}
            body = {"vocab": vocab, "kind": "window", "top_k": 1}
            async with c.stream("POST", "/archive/labels", json=body) as r:
                async for line in r.aiter_lines():
                    row = json.loads(line)
                    if row.get("id") in held:
                        top[row["id"]] = row["predictions"][0]["label"]
            print(f"  {title}: top-1 {np.mean([top[i] == w for i, w in held.items()]):.3f}")


def building(directory: Path, runs: int) -> None:
    from text4vis.engine.archive.spec import ArchiveSpec
    from text4vis.engine.archive.store import ArchiveRow, open_archive
    from text4vis.engine.facade import Engine
    from text4vis.engine.options import ModelOptions
    from text4vis.engine.request import ClipSpec, FewShotAsk
    from text4vis.engine.runtime.build import build_runtime
    from text4vis.engine.vocab.registry import VocabRegistry
    from text4vis.engine.vocab.stores.sqlite import SQLiteStore

    runtime = build_runtime(ModelOptions(model="ViT-B-32", random_init=True, device="cpu"))  # D=512
    archive = open_archive(str(directory / "archive-build"))
    registry = VocabRegistry(SQLiteStore(directory / "vocab.db"), runtime.text_encoder)
    engine = Engine(runtime, registry, archive)
    spec = ArchiveSpec.of(runtime, ClipSpec().resolve(engine.limits))
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(10_000, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"{i:064x}" for i in range(10_000)]
    table = archive.table(spec, create=True)
    table.add([ArchiveRow(i, i, f"v{n}.mp4", "video", 0.0, 1.0, 1.0, vectors[n]) for n, i in enumerate(ids)])
    labels = [f"action number {i}" for i in range(400)]
    examples = {labels[n % 400]: [] for n in range(400)}
    for n, i in enumerate(ids):
        examples[labels[n % 400]].append(i)
    registry.put("warm", labels)  # the prompts encoded once: every PUT below reads them cached
    given, fitted, plain = [], [], []
    for run in range(runs):
        for kind in ("given", "fitted", "plain") if run % 2 == 0 else ("plain", "fitted", "given"):
            t0 = time.perf_counter()
            if kind == "plain":
                registry.put(f"plain{run}", labels)
            else:
                ask = FewShotAsk("tip-adapter", 3.0, 1.0) if kind == "given" else FewShotAsk("auto")
                registry.put(f"{kind}{run}", labels, examples=examples, few_shot=ask)
            {"given": given, "fitted": fitted, "plain": plain}[kind].append(time.perf_counter() - t0)
    g, f, p = (statistics.median(x) for x in (given, fitted, plain))
    print(
        f"building: 400 labels, 10,000 stored examples (D=512): {g:.2f} s with alpha/beta given, {f:.2f} s fitted "
        f"(auto), {p:.2f} s without examples ({runs} runs each, interleaved)"
    )


async def serving(directory: Path, rounds: int) -> None:
    from text4vis.engine.archive.store import ArchiveRow
    from text4vis.engine.request import ClipSpec

    runtime = tiny_runtime(tiny_weights(directory))
    app = make_app(directory / "data-serving", runtime)
    clip = generated_videos()["clip_a.mp4"]
    labels = [f"action number {i}" for i in range(400)]
    async with running(app) as c:
        engine = app.state.server.engine
        table = await engine.table(engine.clip(ClipSpec()), create=True)
        rng = np.random.default_rng(1)
        vectors = rng.normal(size=(6_400, 64)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"{i:064x}" for i in range(6_400)]
        table.add([ArchiveRow(i, i, f"v{n}.mp4", "video", 0.0, 1.0, 1.0, vectors[n]) for n, i in enumerate(ids)])
        examples: dict[str, list[str]] = {}
        for n, i in enumerate(ids):
            examples.setdefault(labels[n % 400], []).append(i)
        await c.put("/vocab/plain", json={"labels": labels})
        ask = {"method": "tip-adapter", "alpha": 3, "beta": 1}
        r = await c.put("/vocab/shots", json={"labels": labels, "examples": examples, "few_shot": ask})
        assert r.status_code == 201, r.text
        files = {"file": (clip.name, clip.read_bytes(), "video/mp4")}
        for vocab in ("plain", "shots"):  # warm both (the classifiers cached)
            await c.post("/classify", files=files, data={"vocab": vocab})
        ratios = []
        for i in range(rounds):
            took = {}
            for vocab in ("plain", "shots") if i % 2 == 0 else ("shots", "plain"):
                t0 = time.perf_counter()
                answer = await c.post("/classify", files=files, data={"vocab": vocab})
                took[vocab] = time.perf_counter() - t0
                assert answer.status_code == 200, answer.text
            ratios.append(took["shots"] / took["plain"])
        print(
            f"serving: POST /classify, 400 labels with 6,400 examples / without: x{statistics.median(ratios):.3f} "
            f"latency (median of {rounds} paired rounds; quartiles {np.percentile(ratios, 25):.3f}-"
            f"{np.percentile(ratios, 75):.3f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="t4v-few-shot-bench-"))
    asyncio.run(accuracy(directory))
    building(directory, args.runs)
    asyncio.run(serving(directory, args.rounds))


if __name__ == "__main__":
    main()
