"""Listing vocabularies (GET /vocab): the summary query vs reading every full record.

    python bench/vocab_list.py [--vocabs 200] [--labels 400] [--dim 512] [--runs 5] [--redis-url URL]

Fills a fresh SQLite store (and a Redis one under a throw-away prefix when --redis-url is
given) with N vocabularies of K labels, then times `store.summaries()` (what the route runs)
against the previous listing, `[store.get(n) for n in store.names()]`. Prints the median of
--runs for each and the ratio from the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from text4vis.engine.vocab.record import VocabRecord
from text4vis.engine.vocab.stores.base import VocabStore
from text4vis.engine.vocab.stores.redis import RedisStore
from text4vis.engine.vocab.stores.sqlite import SQLiteStore


def fill(store: VocabStore, vocabs: int, labels: int, dim: int) -> None:
    matrix = np.random.default_rng(0).random((labels, dim), dtype=np.float32)
    names = tuple(f"label {j}" for j in range(labels))
    for i in range(vocabs):
        store.put(
            VocabRecord(f"v{i:04d}", 0, f"etag{i}", "bench/text", names, ("a video of {}.",), matrix, time.time())
        )


def median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def compare(label: str, store: VocabStore, args: argparse.Namespace) -> None:
    fill(store, args.vocabs, args.labels, args.dim)
    full = median_ms(lambda: [store.get(n) for n in store.names()], args.runs)
    summary = median_ms(store.summaries, args.runs)
    assert len(store.summaries()) == args.vocabs
    print(f"{label:7s} full records {full:9.2f} ms | summaries {summary:7.2f} ms | {full / summary:7.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocabs", type=int, default=200)
    parser.add_argument("--labels", type=int, default=400)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    print(f"{args.vocabs} vocabularies x {args.labels} labels x {args.dim} dims, median of {args.runs}")
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SQLiteStore(Path(tmp) / "vocab.db")
        compare("sqlite", sqlite, args)
        sqlite.close()
    if args.redis_url:
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        redis = RedisStore(args.redis_url, prefix=prefix)
        try:
            compare("redis", redis, args)
        finally:
            for name in redis.names():
                redis.delete(name)
            redis.close()


if __name__ == "__main__":
    main()
