"""The Ray path's driver side, without a cluster: rows are committed into the tables of the spec
the actors report, windows before their video, and a row made under another spec (a node that
runs fp16 where the others run fp32) is refused before anything of it is stored."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.integration.test_archive_store import random_rows, spec
from text4vis.engine.archive.distributed import DecodeTask, Made, StoredFilter, _Committer
from text4vis.engine.archive.lance import LanceArchive
from text4vis.engine.archive.store import ArchiveRow
from text4vis.engine.errors import ArchiveMismatch
from text4vis.engine.flow.decode_worker import DecodeJob


def test_rows_of_another_spec_are_refused(tmp_path: Path) -> None:
    archive = LanceArchive(str(tmp_path / "a"))
    video, window = spec(views="4x3"), spec()
    made = Made(video, window)
    committer = _Committer(made, archive.table(video, create=True), archive.table(window, create=True))
    (row,) = random_rows(1, 32)
    part = ArchiveRow(row.id + "@0.000-1.000", row.id, row.name, "window", 0.0, 1.0, 1.0, np.array(row.embedding))
    committer.take((video.to_json(), window.to_json()), [part, row])
    committer.commit(0)
    assert archive.table(video).count("video") == 1 and archive.table(window).count("window") == 1
    half = (spec(views="4x3", precision="fp16").to_json(), spec(precision="fp16").to_json())
    with pytest.raises(ArchiveMismatch, match="every node must run the same model, precision and backend"):
        committer.take(half, random_rows(1, 32, seed=3))
    committer.commit(0)
    assert archive.table(video).count() == 1  # nothing of the refused row was stored


def test_the_stored_filter_knows_every_stored_video_and_nothing_else(tmp_path: Path) -> None:
    table = LanceArchive(str(tmp_path / "a")).table(spec(), create=True)
    rows = random_rows(300, 32)
    table.add(rows)
    hashed = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2_000)]
    table.add([replace(row, id=h, content_id=h) for row, h in zip(random_rows(2_000, 32, seed=1), hashed, strict=True)])
    stored = StoredFilter(StoredFilter.keys(table))
    assert all(r.id in stored for r in rows) and all(h in stored for h in hashed)
    assert not any(hashlib.sha256(f"new {i}".encode()).hexdigest() in stored for i in range(2_000))


def test_a_decode_task_is_the_same_size_whatever_the_archive_holds() -> None:
    """The task Ray ships to every decode worker carries a reference to the stored keys, not the
    keys: ten stored videos or a million, the same bytes (it shipped 67 MB per million before)."""
    import ray
    from ray import cloudpickle

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        job = DecodeJob(Path(), None, 8, 1, 1, "pyav")  # type: ignore[arg-type]
        sizes, answers = [], []
        for n in (10, 1_000_000):
            keys = np.sort(np.random.default_rng(n).integers(1, 2**63, n, dtype=np.int64).astype(np.uint64))
            task = DecodeTask(job, None, StoredFilter(ray.put(keys)))
            sizes.append(len(cloudpickle.dumps(task)))
            probe = f"{int(keys[n // 2]):016x}" + "0" * 48
            answers.append(ray.get(ray.remote(lambda t, c: c in t.stored).remote(task, probe)))
        assert max(sizes) < 2_000 and answers == [True, True]  # the million keys alone are 8 MB
    finally:
        ray.shutdown()
