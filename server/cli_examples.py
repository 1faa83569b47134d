"""``--examples FILE`` for ``t4v classify`` and ``t4v relabel``: a few labelled videos that make
ad-hoc labels a few-shot vocabulary (``engine/vocab/few_shot.py``). The file holds
``label,id-or-path`` lines: an archive row id (a video's SHA-256, a window's ``id@start-end``) is
read from the archive under this model, a path is embedded here, as the request's frames and
views say."""

from __future__ import annotations

import contextlib
import csv
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from text4vis.engine.request import Examples, FewShotAsk, ResolvedClip
from text4vis.server.cli_common import UsageProblem

if TYPE_CHECKING:
    from text4vis.engine.runtime.build import Runtime


def read_examples(path: Path) -> list[tuple[str, str]]:
    """``(label, id or path)`` per line (CSV: a label with a comma is quoted); blank lines and
    ``#`` comments skipped; a line of another shape is a :class:`UsageProblem` naming it."""
    if not path.is_file():
        raise UsageProblem(f"no such examples file: {path}")
    pairs = []
    with path.open(newline="") as f:
        for number, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise UsageProblem(f"{path}:{number}: an example is a line 'label,id-or-path'; got {','.join(row)!r}")
            pairs.append((row[0].strip(), row[1].strip()))
    if not pairs:
        raise UsageProblem(f"{path} holds no example")
    return pairs


def load_examples(
    path: Path, runtime: Runtime, archive_uri: str, clip: ResolvedClip, ask: FewShotAsk | None = None
) -> Examples:
    """The examples of ``path`` as embeddings: files embedded with ``runtime`` as ``clip`` says,
    ids read from the archive's table of ``clip`` under ``runtime``."""
    import numpy as np

    pairs = read_examples(path)
    files = {value: Path(value) for _, value in pairs if Path(value).is_file()}
    ids = [value for _, value in pairs if value not in files]
    vectors: dict[str, Any] = {}
    if ids:
        from text4vis.engine.archive.spec import ArchiveSpec
        from text4vis.engine.archive.store import open_archive

        table = open_archive(archive_uri).table(ArchiveSpec.of(runtime, clip))
        vectors.update(table.vectors(ids))
        missing = [i for i in ids if i not in vectors]
        if missing:
            raise UsageProblem(
                f"{path}: {missing[0]!r} is neither a file nor a row of the archive {archive_uri} under this model"
            )
    if files:
        vectors.update(_embedded(runtime, clip, list(files.values())))
    return Examples(
        tuple(label for label, _ in pairs),
        np.stack([vectors[value] for _, value in pairs]).astype(np.float32),
        ask or FewShotAsk(),
        tuple(value for _, value in pairs),
    )


def list_embeddings(runtime: Runtime, paths: list[Path], archive_uri: str, clip: ResolvedClip) -> Any:
    """The embeddings (float32 ``[N, D]``) of ``paths``: those stored in the archive under this
    model and ``clip`` read from it (by content), the others embedded here."""
    import numpy as np

    from text4vis.engine.archive.spec import ArchiveSpec
    from text4vis.engine.archive.store import content_id, open_archive
    from text4vis.engine.errors import ArchiveMismatch

    contents = [content_id(p) for p in paths]
    stored: dict[str, Any] = {}
    with contextlib.suppress(ArchiveMismatch):  # nothing stored under this model: all are embedded here
        stored = open_archive(archive_uri).table(ArchiveSpec.of(runtime, clip)).vectors(contents)
    missing = [p for p, c in zip(paths, contents, strict=True) if c not in stored]
    if missing:
        embedded = _embedded(runtime, clip, missing)
        stored.update({c: embedded[str(p)] for p, c in zip(paths, contents, strict=True) if str(p) in embedded})
    return np.stack([stored[c] for c in contents]).astype(np.float32)


def _embedded(runtime: Runtime, clip: ResolvedClip, paths: list[Path]) -> dict[str, Any]:
    from text4vis.engine.facade import DAY_S, Engine
    from text4vis.engine.offline import offline_engine, run_files

    async def embed(engine: Engine, path: Path) -> Any:
        return await engine.embed(path, clip, deadline=time.monotonic() + DAY_S, name=str(path))

    done = run_files(offline_engine(runtime, clip=clip), paths, embed)
    out = {}
    for path, video in zip(paths, done, strict=True):
        if isinstance(video, BaseException):
            raise UsageProblem(f"the example {path} cannot be embedded: {video}")
        out[str(path)] = video.embedding.numpy()
    return out
