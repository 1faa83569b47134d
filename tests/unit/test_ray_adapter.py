"""The Ray path's driver side, without a cluster: rows are committed into the tables of the spec
the actors report, windows before their video, and a row made under another spec (a node that
runs fp16 where the others run fp32) is refused before anything of it is stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.integration.test_archive_store import random_rows, spec
from text4vis.engine.archive.distributed import Made, _Committer
from text4vis.engine.archive.lance import LanceArchive
from text4vis.engine.archive.store import ArchiveRow
from text4vis.engine.errors import ArchiveMismatch


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
