"""The archive at scale: re-labelling and search over stored embeddings, against classifying
the same kind of videos from their files.

    python bench/archive.py [--rows 1000000] [--labels 400] [--runs 3]

Synthetic rows that cluster as real embeddings do (around --centres centres, with noise), D=512
(ViT-B). Prints, each the median of --runs:
- relabel: rows/s of scoring every row under a --labels vocabulary and writing Parquet, and the
  ratio against classify (videos/s of ``t4v classify``'s flow on the shared real clips, the tiny
  test model: a ViT-B decodes and encodes far slower, so the real ratio is larger);
- search: p50 / p99 latency of a text-sized query (k=10) with the IVF-PQ index, and recall@10
  against an exact brute-force top-10 (numpy, computed here);
- while a server's upkeep runs (its Maintainer: the full round, light rounds beside it), and
  while its search index takes in 100,000 rows another process wrote: searches and one-row
  commits alternating, p50 / p99 / longest and how many passed 100 ms;
- over HTTP (in-process, the tiny test model, so D=64): POST /archive/labels streaming --http-rows
  rows (rows/s), and what index=true adds to POST /classify (paired rounds, alternating order).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from text4vis.engine.archive.lance import FRAGMENT_ROWS, NPROBES, REFINE_FACTOR, LanceArchive, LanceTable, schema
from text4vis.engine.archive.relabel import relabel_batches, write
from text4vis.engine.archive.spec import ArchiveSpec
from text4vis.engine.request import AbstainPolicy
from text4vis.engine.vocab.classifier import Classifier
from text4vis.engine.vocab.scoring import ScoringPlan

DIM = 512


def append_rows(table: LanceTable, vectors: np.ndarray, start: int) -> None:
    """Rows ``start...`` of unit ``vectors [n, D]``, appended without the id check (they are new)."""
    n, dim = vectors.shape
    ids = [f"{i:064x}" for i in range(start, start + n)]
    table.append_new(
        pa.table(
            {
                "id": ids,
                "content_id": ids,
                "name": [f"video{i}.mp4" for i in range(start, start + n)],
                "kind": ["video"] * n,
                "start_s": np.zeros(n),
                "end_s": np.full(n, 10.0),
                "duration_s": np.full(n, 10.0),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
                "thumbnail": pa.nulls(n, pa.binary()),
                "metadata": ["{}"] * n,
                "created_at": pa.array([0] * n, pa.timestamp("ms", tz="UTC")),
            },
            schema=schema(table.spec),
        )
    )


def synthetic(table: LanceTable, rows: int, centres: int, seed: int = 0) -> np.ndarray:
    """Rows that cluster as real embeddings do: around ``centres`` unit centres, with noise."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, DIM)).astype(np.float32)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    out = np.empty((rows, DIM), dtype=np.float32)
    for start in range(0, rows, FRAGMENT_ROWS):  # fragments of the size the server's compaction leaves
        n = min(FRAGMENT_ROWS, rows - start)
        v = means[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, DIM)).astype(np.float32) / np.sqrt(DIM)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        out[start : start + n] = v
        append_rows(table, v, start)
    return out


def classify_rate(runs: int) -> float:
    """Videos/s of the offline classify flow on the three shared clips (the tiny test model)."""
    import open_clip

    from tests.conftest import shared_path
    from tests.server_helpers import classify_offline, tiny_runtime
    from text4vis.models.clip_loader import TINY_ARCH

    torch.manual_seed(1234)
    weights = Path(tempfile.mkdtemp()) / "tiny.pt"
    torch.save(open_clip.create_model(TINY_ARCH).state_dict(), weights)
    runtime = tiny_runtime(weights)
    clips = [shared_path("videos", n) for n in ("arm_wrestling.mp4", "k400_sample_340x256.mp4")] * 2
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        classify_offline(runtime, ["a", "b"], clips)
        rates.append(len(clips) / (time.perf_counter() - t0))
    return statistics.median(rates)


def http_figures(rows: int, labels: int, rounds: int) -> None:
    import asyncio
    import json

    import open_clip

    from tests.media import moving_square_frames, write_video
    from tests.server_helpers import make_app, running, tiny_runtime
    from text4vis.engine.request import ClipSpec
    from text4vis.models.clip_loader import TINY_ARCH

    torch.manual_seed(1234)
    directory = Path(tempfile.mkdtemp(prefix="t4v-archive-http-"))
    torch.save(open_clip.create_model(TINY_ARCH).state_dict(), directory / "tiny.pt")
    runtime = tiny_runtime(directory / "tiny.pt")
    clips = [
        write_video(directory / f"c{i}.mp4", moving_square_frames(48, 160, 120, seed=i)) for i in range(2 * rounds)
    ]
    names = [f"label {i}" for i in range(labels)]

    async def go() -> None:
        app = make_app(directory / "data", runtime, decode_workers=1)
        async with running(app) as client:
            engine = app.state.server.engine
            table = await engine.table(engine.clip(ClipSpec()), create=True)
            synthetic_rows(table, rows)
            t0 = time.perf_counter()
            n = 0
            async with client.stream("POST", "/archive/labels", json={"labels": names, "top_k": 5}) as r:
                async for _line in r.aiter_lines():
                    n += 1
            seconds = time.perf_counter() - t0
            print(f"POST /archive/labels: {n - 1:,} rows streamed in {seconds:.1f} s: {(n - 1) / seconds:,.0f} rows/s")
            ratios = []
            form = {"labels": json.dumps(names[:5])}
            for i in range(rounds):  # a pair per round, the order alternating; a new file each time
                plain, indexed = clips[2 * i], clips[2 * i + 1]
                order = [(plain, False), (indexed, True)] if i % 2 == 0 else [(indexed, True), (plain, False)]
                took = {}
                for path, index in order:
                    files = {"file": (path.name, path.read_bytes(), "video/mp4")}
                    t0 = time.perf_counter()
                    answer = await client.post("/classify", files=files, data={**form, "index": str(index).lower()})
                    took[index] = time.perf_counter() - t0
                    assert answer.status_code == 200, answer.text
                ratios.append(took[True] / took[False])
            print(
                f"index=true on POST /classify: x{statistics.median(ratios):.3f} latency (median of {rounds} "
                f"paired rounds; quartiles {np.percentile(ratios, 25):.3f}-{np.percentile(ratios, 75):.3f})"
            )

    asyncio.run(go())


def synthetic_rows(table: LanceTable, rows: int) -> None:
    """``rows`` random unit rows of the table's width (the HTTP figures)."""
    rng = np.random.default_rng(3)
    for start in range(0, rows, 100_000):
        v = rng.normal(size=(min(100_000, rows - start), table.spec.embed_dim)).astype(np.float32)
        append_rows(table, v / np.linalg.norm(v, axis=1, keepdims=True), start)


def ray_figures(files: int, runs: int) -> None:
    """``t4v index`` against ``t4v index --ray local`` on the same generated clips (each run into a
    fresh archive, the two interleaved): rows/s from the "in X s" each prints (model loading
    excluded on both sides; Ray's start and its actor's model load included)."""
    import re
    import subprocess
    import sys

    import open_clip

    from tests.media import moving_square_frames, write_video
    from text4vis.models.clip_loader import TINY_ARCH

    directory = Path(tempfile.mkdtemp(prefix="t4v-archive-ray-"))
    torch.manual_seed(1234)
    torch.save(open_clip.create_model(TINY_ARCH).state_dict(), directory / "tiny.pt")
    clips = directory / "clips"
    clips.mkdir()
    for i in range(files):
        write_video(clips / f"c{i:03d}.mp4", moving_square_frames(150, 320, 240, seed=i))
    model = ["--model", TINY_ARCH, "--clip-checkpoint", str(directory / "tiny.pt")]
    rates: dict[str, list[float]] = {"local": [], "ray": []}
    steady: list[float] = []  # Ray's rows/s once its first file is done
    for run in range(runs):
        for mode in ("local", "ray"):
            extra = ["--ray", "local"] if mode == "ray" else []
            archive = directory / f"{mode}{run}"
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "text4vis.server.cli",
                    "index",
                    str(clips),
                    "--archive",
                    str(archive),
                    *model,
                    *extra,
                ],
                capture_output=True,
                text=True,
            )
            found = re.search(r"(\d+) new rows .* in ([\d.]+) s", out.stderr)
            assert out.returncode == 0 and found, out.stderr[-2000:]
            rates[mode].append(int(found.group(1)) / float(found.group(2)))
            steady_found = re.search(r"the other (\d+) in ([\d.]+) s", out.stderr)
            if steady_found:
                steady.append(int(steady_found.group(1)) / float(steady_found.group(2)))
    local, ray = statistics.median(rates["local"]), statistics.median(rates["ray"])
    print(
        f"t4v index: {local:.1f} rows/s; t4v index --ray local: {ray:.1f} rows/s; ray / local = {ray / local:.2f} "
        f"({files} clips of 150 frames 320x240, tiny model, median of {runs} interleaved runs)"
    )
    ray_steady = statistics.median(steady)
    print(
        f"--ray once its first file is done (Ray's start, worker imports and model loads behind it): "
        f"{ray_steady:.1f} rows/s = {ray_steady / local:.2f}x t4v index"
    )


def text_like(means: np.ndarray, n: int, seed: int = 11) -> np.ndarray:
    """Queries at cosine 0.3 from a cluster's centre, as a CLIP text embedding sits from the
    videos it describes (rows plus a little noise, what every method finds, say nothing)."""
    rng = np.random.default_rng(seed)
    centres = means[rng.integers(0, len(means), n)]
    r = rng.normal(size=centres.shape).astype(np.float32)
    r -= np.sum(r * centres, axis=1, keepdims=True) * centres
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    return (0.3 * centres + np.sqrt(1 - 0.09) * r).astype(np.float32)


def centres_of(count: int, seed: int = 0) -> np.ndarray:
    """The centres ``synthetic`` drew (the same generator, the same order)."""
    means = np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def measured(search: Any, queries: np.ndarray, truth: list[set[int]]) -> tuple[float, float, float]:
    """p50 and p99 latency (ms, the first 5 queries a warm-up) and recall@10 against ``truth``."""
    latencies, recalls = [], []
    for q, exact in zip(queries, truth, strict=True):
        t0 = time.perf_counter()
        found = search(q)
        latencies.append((time.perf_counter() - t0) * 1e3)
        recalls.append(len(set(found) & exact) / 10)
    lat = np.array(latencies[5:] or latencies)
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), float(np.mean(recalls))


def search_figures(table: LanceTable, matrix: np.ndarray, centres: int, n_queries: int) -> None:
    """Each way of searching the same rows with the same text-like queries, one line each."""
    import faiss

    from text4vis.engine.archive.vectors import SearchedTable, VectorIndexes

    rows = len(matrix)
    queries = text_like(centres_of(centres), n_queries)
    truth = [set(np.argpartition(-(matrix @ q), 10)[:10].tolist()) for q in queries]

    def line(name: str, figures: tuple[float, float, float], extra: str = "") -> None:
        p50, p99, recall = figures
        print(f"search: rows={rows} p50={p50:.1f}ms p99={p99:.1f}ms recall@10={recall:.3f} {name}{extra}")

    line(
        "numpy exact (float32 matmul + argpartition)",
        measured(lambda q: np.argpartition(-(matrix @ q), 10)[:10].tolist(), queries, truth),
    )
    flat = faiss.IndexFlatIP(DIM)
    flat.add(matrix)
    line("faiss flat (exact)", measured(lambda q: flat.search(q[None], 10)[1][0].tolist(), queries, truth))
    flat.reset()

    ids = lambda hits: [int(h.row["id"], 16) for h in hits]  # noqa: E731
    t0 = time.perf_counter()
    indexes = VectorIndexes()
    searched = SearchedTable(table, indexes.of(table, DIM))
    assert indexes.wait_ready(3600)
    built = time.perf_counter() - t0
    api = lambda q: ids(searched.search(q, k=10, kind="video"))  # noqa: E731
    line(
        "the API's search: faiss IVF (fp16 codes, nprobe 64) in memory, one index per kind, fields in memory",
        measured(api, queries, truth),
        f" (built in {built:.0f} s from the table)",
    )

    t0 = time.perf_counter()
    table.ensure_index(min_rows=0)
    print(f"LanceDB IVF-PQ index over {rows:,} rows: built in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    first = table.maintain()  # the state a server's upkeep keeps the table in (the id index)
    print(f"a first maintenance round ({'; '.join(first) or 'nothing'}): {time.perf_counter() - t0:.0f} s")
    lance = lambda q: ids(table.search(q, k=10, kind="video"))  # noqa: E731
    line(
        f"LanceDB IVF-PQ, kind prefilter, nprobes {NPROBES}, refine {REFINE_FACTOR} (before; the CLI's)",
        measured(lance, queries, truth),
    )

    # rows another process wrote (work for the search index and for maintenance), then the two
    # windows a server goes through: its search index taking them in, and a maintenance round
    # as its Maintainer runs it (the full round, light rounds beside it); a search and a one-row
    # commit alternate through each, and their p50 and longest are printed
    from text4vis.engine.archive.maintenance import Maintainer
    from text4vis.engine.archive.store import ArchiveRow

    rng = np.random.default_rng(99)
    extra = rng.normal(size=(100_000, DIM)).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    for start in range(0, 100_000, 10_000):  # small fragments, unindexed rows
        append_rows(table, extra[start : start + 10_000], rows + start)
    probe = extra[0] * -1.0  # a commit before the light round: every keyed commit reads the ids its index lacks
    t0 = time.perf_counter()
    searched.add([ArchiveRow(f"{10**10:064x}", f"{10**10:064x}", "x.mp4", "video", 0.0, 1.0, 1.0, probe)])
    lagging = time.perf_counter() - t0
    t0 = time.perf_counter()
    light = table.maintain(keys_only=True)  # what the server's light round does within 2 s of them
    print(
        f"a one-row commit with 100,000 rows not yet in the id index: {1e3 * lagging:.0f} ms; the light round "
        f"({'; '.join(light) or 'nothing'}) took {time.perf_counter() - t0:.1f} s"
    )
    committed = 0

    def alternate(until: Any) -> str:
        """Searches and one-row commits, one after the other, until ``until()``: their figures."""
        nonlocal committed
        reads, commits = [], []
        t0 = time.perf_counter()
        while not until():
            t1 = time.perf_counter()
            api(queries[committed % len(queries)])
            reads.append(1e3 * (time.perf_counter() - t1))
            new = f"{10**9 + committed:064x}"
            t1 = time.perf_counter()
            searched.add([ArchiveRow(new, new, "x.mp4", "video", 0.0, 1.0, 1.0, extra[committed])])
            commits.append(1e3 * (time.perf_counter() - t1))
            committed += 1

        def figures(ms: list[float]) -> str:
            over = sum(x > 100 for x in ms)
            p50, p99 = np.median(ms), np.percentile(ms, 99)
            return f"p50 {p50:.1f} ms, p99 {p99:.0f} ms, longest {max(ms):.0f} ms, {over} over 100 ms"

        return (
            f"{time.perf_counter() - t0:.0f} s, {len(reads)} searches: {figures(reads)}; "
            f"{len(commits)} one-row commits: {figures(commits)}"
        )

    archive = LanceArchive(str(Path(table._table.to_lance().uri).parent))  # type: ignore[attr-defined]
    lights = Maintainer(archive, every_s=3600, first_s=3600)  # light rounds only
    lights.start()
    took_in = alternate(lambda: searched.index.rows >= table.count())
    lights.stop()
    print(f"while the search index took in the 100,000 rows (light rounds beside): {took_in}")
    maintainer = Maintainer(archive, every_s=3600, first_s=0.0)
    maintainer.start()
    during = alternate(lambda: maintainer.rounds >= 1)
    maintainer.stop()
    print(f"while maintenance ran (compaction, 100,000 rows joined the indices, light rounds beside): {during}")
    beside_a_compaction(table, api, queries)
    matrix = np.concatenate([matrix, extra, probe[None], extra[:committed]])
    truth = [set(np.argpartition(-(matrix @ q), 10)[:10].tolist()) for q in queries]
    line("the API's search after maintenance", measured(api, queries, truth))
    line("LanceDB IVF-PQ after maintenance", measured(lance, queries, truth))
    indexes.stop()


def beside_a_compaction(table: LanceTable, search: Any, queries: np.ndarray) -> None:
    """Searches while another process compacts a copy of the table into one fragment: nothing in
    this process runs but the searches, so their stalls are what a compaction's load does to a
    search on this machine (wall and the searching thread's own CPU, which a wait does not use)."""
    import subprocess
    import sys

    source = Path(table._table.to_lance().uri)  # type: ignore[attr-defined]
    copy = Path(tempfile.mkdtemp(prefix="t4v-compaction-")) / source.name
    shutil.copytree(source, copy)
    script = (
        "import lance, sys; lance.dataset(sys.argv[1]).optimize.compact_files("
        "target_rows_per_fragment=1 << 22, num_threads=1, batch_size=8192)"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(copy)])
    took: list[tuple[float, float]] = []
    i = 0
    while child.poll() is None:
        cpu, t0 = time.thread_time(), time.perf_counter()
        search(queries[i % len(queries)])
        took.append((1e3 * (time.perf_counter() - t0), 1e3 * (time.thread_time() - cpu)))
        i += 1
        time.sleep(0.01)
    shutil.rmtree(copy.parent, ignore_errors=True)
    if child.returncode:
        print(f"beside a compaction of a copy in another process: the compaction failed (exit {child.returncode})")
        return
    took.sort(reverse=True)
    print(
        f"beside a compaction of a copy in another process: {len(took)} searches, p50 "
        f"{np.median([w for w, _ in took]):.1f} ms, the longest (wall, own CPU ms): "
        f"{[(round(w), round(c)) for w, c in took[:3]]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--labels", type=int, default=400)
    parser.add_argument("--centres", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--http-rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--only-http", action="store_true")
    parser.add_argument("--only-search", action="store_true", help="Only the search figures.")
    parser.add_argument("--ray-files", type=int, default=0, help="Only compare t4v index with --ray on N clips.")
    args = parser.parse_args()
    if args.ray_files:
        ray_figures(args.ray_files, args.runs)
        return
    if args.only_http:
        http_figures(args.http_rows, args.labels, args.rounds)
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))

    spec = ArchiveSpec("bench/text", "00" * 32, "mean", "bench", 8, "1x1", "exact", DIM, "quickgelu", "fp32", "torch")
    directory = Path(tempfile.mkdtemp(prefix="t4v-archive-bench-"))
    try:  # 2-5 GB of table a run: removed after
        table = LanceArchive(str(directory / "archive")).table(spec, create=True)
        t0 = time.perf_counter()
        matrix = synthetic(table, args.rows, args.centres)
        print(f"stored {args.rows:,} rows in {time.perf_counter() - t0:.1f} s")
        if args.only_search:
            search_figures(table, matrix, args.centres, args.queries)
            return

        g = torch.Generator().manual_seed(1)
        vocab = torch.nn.functional.normalize(torch.randn(args.labels, DIM, generator=g), dim=-1)
        classifier = Classifier(tuple(f"label {i}" for i in range(args.labels)), vocab)
        relabel, classify = [], []
        for run in range(args.runs):  # interleaved: relabel, then classify, each run
            t0 = time.perf_counter()
            plan = ScoringPlan(classifier, None, 5, AbstainPolicy().resolved(None))
            rows = write(relabel_batches(table.scan(), plan), directory / f"labels{run}.parquet")
            relabel.append(rows / (time.perf_counter() - t0))
            classify.append(classify_rate(1))
        r, c = statistics.median(relabel), statistics.median(classify)
        print(
            f"relabel: {r:,.0f} rows/s ({args.rows:,} rows, {args.labels} labels, Parquet); "
            f"runs: {[round(x) for x in relabel]}"
        )
        print(f"classify from files: {c:.1f} videos/s (tiny model, shared clips); relabel / classify = {r / c:,.0f}x")

        search_figures(table, matrix, args.centres, args.queries)
        http_figures(args.http_rows, args.labels, args.rounds)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
