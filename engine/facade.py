"""The engine: what a request means, decided in one place, for the server and the CLI alike.

Every way in (the HTTP routes, ``t4v classify``/``index``/``relabel``/``search``) builds a
:class:`~text4vis.engine.request.ClassifyRequest` and calls one operation here:

``classify``  a file -> its predictions (and, with ``index``, its row in the archive)
``timeline``  a file -> its windows' predictions, as they are scored (and their rows)
``embed``     a file -> its video embedding (what the archive and few-shot examples store)
``index``     a file -> its rows in the archive (video, windows), unless stored already
``relabel``   stored rows -> their predictions, batch by batch, without decoding
``search``    a text -> the nearest stored rows

Each one resolves the request once (:meth:`Engine.resolve` -> :class:`ScoringPlan`: the classifier
and its version, the "none of these" policy, its background), resolves its frames and views once
(``ClipSpec.resolve``), embeds through the one embed step (``flow/embedder.py``) and scores with
the one scoring function (``vocab/scoring.py``). The archive's table is the one whose fingerprint
says how this runtime embeds with those frames and views (``archive/spec.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import torch

from text4vis.engine.archive.indexer import Indexed, index_file, store_windows, video_row
from text4vis.engine.archive.maintenance import Maintainer
from text4vis.engine.archive.relabel import relabel_batches
from text4vis.engine.archive.search import search_text, search_vector, text_vector
from text4vis.engine.archive.spec import ArchiveSpec
from text4vis.engine.archive.store import Archive, ArchiveTable, Hit, TableStats, content_id
from text4vis.engine.archive.vectors import SearchedTable, VectorIndexes
from text4vis.engine.archive.writer import ArchiveWriter
from text4vis.engine.errors import ArchiveMismatch, ArchiveUnavailable, NotInArchive, Overloaded
from text4vis.engine.flow.admission import Ticket
from text4vis.engine.flow.embedder import EmbeddedVideo, Embedder
from text4vis.engine.flow.options import FlowHooks, FlowOptions
from text4vis.engine.flow.timeline import Segment
from text4vis.engine.request import ClassifyRequest, ClipSpec, IndexRequest, RequestLimits, ResolvedClip, WindowSpec
from text4vis.engine.runtime.build import Runtime
from text4vis.engine.vocab.abstain import Abstention
from text4vis.engine.vocab.classifier import Classifier, Prediction
from text4vis.engine.vocab.registry import VocabRegistry
from text4vis.engine.vocab.scoring import Scoring, ScoringPlan, VocabVersion, score
from text4vis.models.errors import InputError, T4VError
from text4vis.models.prompts import DEFAULT_TEMPLATE
from text4vis.models.windows import TimelinePlan, check_window

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)
T = TypeVar("T")

TIMING_KEYS = ("vocab", "decode_wait", "decode", "preprocess", "encode", "classify", "total")
DAY_S = 24 * 3600.0


@dataclass
class ClassifyResult:
    """Timing keys (milliseconds): ``vocab`` (resolving the vocabulary and its background),
    ``decode_wait``, ``decode``, ``preprocess``, ``encode`` (``flow/embedder.py``), ``classify``
    (scoring), ``total``."""

    file: str
    vocab: VocabVersion | None  # None for ad-hoc labels
    model: str  # the text model the classifier was built with
    frame_indices: list[int]  # clip-major: clips x T indices
    predictions: list[Prediction]
    timing_ms: dict[str, float]  # TIMING_KEYS
    first_view: torch.Tensor  # uint8 [T, 3, S, S]: the frames of the first view (thumbnails)
    abstention: Abstention | None = None  # with abstain or min_score: the decision and the nearest background
    embedding: torch.Tensor | None = None  # the video embedding [D] the predictions scored
    duration_s: float | None = None
    archive_id: str | None = None  # with index: the row stored (committed behind the answer)
    archive_problem: str | None = None  # with index, while the archive cannot be written: why (the row is kept)


class Timeline:
    """A timeline under way: its windows are planned and its scoring resolved; :meth:`segments`
    yields each window's :class:`Segment` as soon as it and those before it are scored (once).
    With ``store``, the windows are stored in the archive once all are scored, and
    :attr:`archive_id` then names the video."""

    def __init__(
        self,
        engine: Engine,
        media: Path,
        plan: TimelinePlan,
        scoring: ScoringPlan,
        window: WindowSpec,
        frames: int,
        *,
        deadline: float,
        name: str | None,
        store: ResolvedClip | None,
        timing_ms: dict[str, float],
    ) -> None:
        self.plan, self.scoring, self.window, self.frames = plan, scoring, window, frames
        self.timing_ms = timing_ms
        self.archive_id: str | None = None
        self.done: list[Segment] = []
        self._engine, self._media, self._deadline, self._name, self._store = engine, media, deadline, name, store

    def seconds_left(self) -> float:
        """Until the timeline's deadline."""
        return max(self._deadline - time.monotonic(), 1e-3)

    async def segments(self) -> AsyncIterator[Segment]:
        engine = self._engine
        windows = engine.flow.embed_windows(self._media, self.plan, deadline=self._deadline, name=self._name)
        try:
            async for group in windows:
                embeddings = torch.stack([w.embedding for w in group])
                scored = await engine.flow.after(score, self.scoring, embeddings)
                for w, s in zip(group, scored, strict=True):
                    segment = Segment(
                        w.window.start_s,
                        w.window.end_s,
                        w.window.indices,
                        w.window.times_s,
                        s.predictions,
                        w.embedding,
                        w.first_frame,
                    )
                    self.done.append(segment)
                    yield segment
            if self._store is not None:  # the windows, once all are in (the upload is still held)
                table = await engine.table(self._store.windows(), create=True)
                name = self._name or self._media.name
                self.archive_id = await asyncio.to_thread(
                    store_windows, table, self._media, name, self.done, self.plan.duration_s
                )
                await asyncio.to_thread(engine._archive().add_names, [(self.archive_id, name)])
        finally:
            await windows.aclose()  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Reindexed:
    """One video of a reindex: ``status`` indexed (embedded again), stored (already there),
    missing (no file at its names) or failed (``detail`` says why)."""

    id: str
    path: str | None
    status: str
    detail: str | None


def _still_there(content: str, names: list[str]) -> Path | None:
    """The first of ``names`` that is a file with the bytes of ``content``."""
    for name in names:
        path = Path(name)
        if path.is_file() and content_id(path) == content:
            return path
    return None


class ScanGate:
    """Admission for the streamed scans of the archive (``relabel`` over HTTP): at most ``limit``
    at once; one more is refused at once (503) instead of slowing every other request down."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        if self.running >= self.limit:
            raise Overloaded(
                f"{self.running} re-labellings of the archive are running (the server's max_archive_scans); "
                "retry when one ends",
                retry_after_s=5,
            )
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1


class ArchiveExamples:
    """The archive as the source of a few-shot vocabulary's examples: the rows of the table of the
    server's default frames and views under the running model (``vocab/few_shot.py``)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._clip = engine.clip(ClipSpec())

    @property
    def fingerprint(self) -> str:
        return self._engine.spec(self._clip).fingerprint

    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        table = self._engine.table_blocking(self._clip)
        found = table.vectors(ids)
        missing = [row_id for row_id in ids if row_id not in found]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise NotInArchive(
                f"no stored video or window has id {missing[0]!r}{more} in {table.spec.describe()}: "
                "index the example first (t4v index, POST /archive/videos) under this model"
            )
        return np.stack([found[row_id] for row_id in ids])


class Engine:
    """Start it once (``await start()``), call its operations from any number of tasks, ``stop()``.

    ``registry``: vocabularies (None: an engine that only embeds, ``t4v index``); ``archive``: the
    store of embeddings (None: no archive operations)."""

    def __init__(
        self,
        runtime: Runtime,
        registry: VocabRegistry | None = None,
        archive: Archive | None = None,
        *,
        options: FlowOptions | None = None,
        limits: RequestLimits | None = None,
        hooks: FlowHooks | None = None,
        max_scans: int = 2,
        maintain_every_s: float = 0.0,
        search_in_memory: bool = False,
    ) -> None:
        self.runtime = runtime
        self.registry = registry
        self.archive = archive
        self.limits = limits or RequestLimits()
        self.flow = Embedder(runtime.pipeline, options, hooks)
        self.scans = ScanGate(max_scans)
        self._writer: ArchiveWriter | None = None  # index=true's write-behind, started on first use
        self._tables: dict[str, ArchiveTable] = {}
        self._tables_lock = threading.Lock()
        self._indexing: dict[str, asyncio.Future[None]] = {}  # content ids being indexed (event loop only)
        self._elsewhere: tuple[object, dict[str, int]] | None = None
        # the archive's upkeep (indices, compaction) on a thread of its own; 0: none (a CLI run
        # maintains once at its end)
        # the archive's search index in memory (vectors.py): a server's; a one-shot CLI run reads
        # the table's own
        self.vectors = VectorIndexes() if archive is not None and search_in_memory else None
        maintained = archive is not None and maintain_every_s > 0
        self.maintainer = Maintainer(archive, maintain_every_s) if maintained and archive is not None else None
        if registry is not None and archive is not None:
            registry.use_examples(ArchiveExamples(self))

    async def start(self) -> None:
        await self.flow.start()
        if self.maintainer is not None:
            self.maintainer.start()

    async def stop(self) -> None:
        await self.flow.stop()
        if self.maintainer is not None:
            await asyncio.to_thread(self.maintainer.stop)
        if self.vectors is not None:
            self.vectors.stop()
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)  # index=true rows still queued are committed

    def admit(self) -> contextlib.AbstractContextManager[Ticket]:
        """Admission by predicted wait, before an upload is read (``flow/admission.py``)."""
        return self.flow.admit()

    def healthy(self) -> bool:
        return self.flow.healthy()

    # -- what a request means ---------------------------------------------------------------

    def resolve_blocking(self, request: ClassifyRequest) -> ScoringPlan:
        """The request's :class:`ScoringPlan`: its vocabulary (a cached classifier) or ad-hoc labels
        (through a bounded embedding cache), the "none of these" policy with the vocabulary's
        default, and the background when the policy scores one. Blocking (encodes, reads the store)."""
        request.check(self.limits)
        registry = self.registry
        if registry is None:
            raise InputError("this engine embeds videos only (the archive's indexing): it has no vocabularies")
        vocab: VocabVersion | None = None
        if request.vocab is not None:
            classifier, version = registry.classifier(request.vocab)
            vocab = VocabVersion(request.vocab, version)
        else:
            assert request.labels is not None
            templates = list(request.templates) if request.templates else None
            classifier = registry.ad_hoc(list(request.labels), templates, request.clean_labels)
            if request.examples is not None:
                classifier = registry.with_examples(classifier, request.examples)
        policy = request.abstain.resolved(classifier.abstain)
        background: Classifier | None = None
        if policy.score_background:
            background = registry.background(classifier, policy.background)
        return ScoringPlan(classifier, vocab, request.top_k, policy, background)

    async def resolve(self, request: ClassifyRequest) -> ScoringPlan:
        """:meth:`resolve_blocking` off the event loop."""
        return await asyncio.to_thread(self.resolve_blocking, request)

    def clip(self, spec: ClipSpec) -> ResolvedClip:
        return spec.resolve(self.limits)

    # -- operations -------------------------------------------------------------------------

    async def embed(
        self, media: Path, clip: ResolvedClip, *, deadline: float, name: str | None = None
    ) -> EmbeddedVideo:
        """The video embedding of one file (views fused, normalized): the one embed step."""
        return await self.flow.embed(media, clip, deadline=deadline, name=name)

    async def classify(
        self,
        media: Path,
        request: ClassifyRequest,
        *,
        timeout_s: float = 60.0,
        name: str | None = None,
        index: bool = False,
        index_required: bool = False,
    ) -> ClassifyResult:
        """Classify one video or image file as ``request`` asks; ``timeout_s`` bounds every stage
        together. :class:`InputError` for a request outside the limits, before anything is decoded.
        ``index``: also store its embedding in the archive (committed behind the answer; while
        the archive cannot be written the row is kept and the result says so, or with
        ``index_required`` :class:`ArchiveUnavailable` before anything is decoded)."""
        problem = self.archive_problem() if index else None
        if problem is not None and index_required:
            raise ArchiveUnavailable(f"the archive cannot be written now ({problem}); nothing was classified")
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        clip = self.clip(request.clip)
        plan = await self.resolve(request)
        t1 = time.perf_counter()
        video = await self.embed(media, clip, deadline=deadline, name=name)
        t2 = time.perf_counter()
        (scored,) = await self.flow.after(score, plan, video.embedding[None])
        t3 = time.perf_counter()
        archive_id = await self._store_video(media, video, clip) if index else None
        timing = {"vocab": (t1 - t0) * 1e3, **video.timing_ms, "classify": (t3 - t2) * 1e3, "total": (t3 - t0) * 1e3}
        return ClassifyResult(
            file=video.file,
            vocab=plan.vocab,
            model=plan.text_model,
            frame_indices=video.frame_indices,
            predictions=scored.predictions,
            timing_ms={k: round(timing[k], 2) for k in TIMING_KEYS},
            first_view=video.first_view,
            abstention=scored.abstention,
            embedding=video.embedding,
            duration_s=video.duration_s,
            archive_id=archive_id,
            archive_problem=self.archive_problem() if index else None,
        )

    def archive_backlog(self) -> tuple[int, int]:
        """``index=true`` rows kept for a retry now, and dropped since start (a full keep)."""
        writer = self._writer
        return (writer.kept_rows, writer.dropped) if writer is not None else (0, 0)

    def archive_problem(self) -> str | None:
        """Why the archive cannot be written now (its write-behind's last commit failed and its
        rows wait to be tried again), or None."""
        return self._writer.problem if self._writer is not None else None

    async def _store_video(self, media: Path, video: EmbeddedVideo, clip: ResolvedClip) -> str:
        """``index=true``: the row goes to the write-behind thread (``archive/writer.py``); its id.
        No flush first (a read's ``table()`` waits for the writer; a write must not: every
        request then waited for a commit of its own, and none were grouped)."""
        table = await asyncio.to_thread(self.table_blocking, clip, True)
        content = await asyncio.to_thread(content_id, media)
        row = video_row(content, video.embedding, video.first_view[0], video.duration_s, video.file)
        if self._writer is None:
            self._writer = ArchiveWriter(self.archive)
        self._writer.submit(table, [row], [(content, video.file)])
        return content

    async def timeline(
        self,
        media: Path,
        request: ClassifyRequest,
        window: WindowSpec,
        *,
        timeout_s: float,
        name: str | None = None,
        index: bool = False,
    ) -> Timeline:
        """Plan ``media``'s windows and start scoring them; :meth:`Timeline.segments` yields each
        as soon as it and those before it are scored. ``timeout_s`` bounds the whole timeline.
        ``index``: store the windows' embeddings once all are in (the 1x1 table of these frames)."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        clip = self.clip(request.clip)
        check_window(window.window_s, window.stride_s)
        scoring = await self.resolve(request)
        t1 = time.perf_counter()
        plan = await self.flow.plan_timeline(
            media,
            window_s=window.window_s,
            stride_s=window.stride_s,
            frames=clip.frames,
            max_windows=window.max_windows,
            deadline=deadline,
            name=name,
        )
        t2 = time.perf_counter()
        return Timeline(
            self,
            media,
            plan,
            scoring,
            window,
            clip.frames,
            deadline=deadline,
            name=name,
            store=clip if index else None,
            timing_ms={"vocab": (t1 - t0) * 1e3, "plan": (t2 - t1) * 1e3},
        )

    async def index(
        self, media: Path, request: IndexRequest, *, timeout_s: float = DAY_S, name: str | None = None
    ) -> Indexed:
        """Embed and store one file (and its windows) in the archive, unless it is stored already."""
        clip = self.clip(request.clip)
        video_table = await self.table(clip, create=True)
        window_table = await self.table(clip.windows(), create=True) if request.window_s is not None else None
        name = name or str(media)
        content = await asyncio.to_thread(content_id, media)
        while content in self._indexing:  # the same bytes under another name, being indexed now: after it
            await asyncio.shield(self._indexing[content])
        self._indexing[content] = asyncio.get_running_loop().create_future()
        try:
            done = await index_file(
                self.flow,
                video_table,
                window_table,
                media,
                clip,
                content=content,
                name=name,
                window_s=request.window_s,
                metadata=request.metadata,
                replace_metadata=request.replace_metadata,
                timeout_s=timeout_s,
            )
        finally:
            self._indexing.pop(content).set_result(None)
        added = await asyncio.to_thread(self._archive().add_names, [(done.id, name)])
        return replace(done, names_added=added)

    def relabel_blocking(
        self,
        request: ClassifyRequest,
        kind: str | None = "video",
        with_embeddings: bool = False,
        scoring: Scoring = "float64",
    ) -> Iterator[pa.RecordBatch]:
        """Every stored row (of ``kind``; None: all) of the table ``request.clip`` names, scored
        under the request, batch by batch, without decoding: the predictions :meth:`classify`
        gives the same files (and, ``with_embeddings``, the stored embeddings; ``scoring``
        float32: the cheaper arithmetic, see :func:`rank`). Blocking (the batches are computed
        as they are read)."""
        plan = self.resolve_blocking(request)
        table = self.table_blocking(self.clip(request.clip))
        names = self._archive().names_table()
        return relabel_batches(table.scan(kind), plan, with_embeddings, names, scoring)

    async def relabel(
        self, request: ClassifyRequest, kind: str | None = "video", scoring: Scoring = "float64"
    ) -> Iterator[pa.RecordBatch]:
        """:meth:`relabel_blocking` once the rows ``index=true`` queued are committed; its
        batches block as they are read (read them off the event loop)."""
        await self._flush()
        return await asyncio.to_thread(self.relabel_blocking, request, kind, False, scoring)

    @contextlib.contextmanager
    def scan(self) -> Iterator[None]:
        """Admission for a long scan of the archive (a streamed re-labelling): as a classify
        request is admitted (by predicted wait, counted in progress while it runs), and at most
        ``max_scans`` at once; past either, :class:`Overloaded`."""
        with self.admit() as ticket, self.scans.admit():
            ticket.uploaded()  # nothing to upload: it is work from the start
            yield

    def search_blocking(
        self,
        text: str,
        clip: ResolvedClip,
        *,
        k: int = 10,
        kind: str | None = "video",
        thumbnails: bool = False,
        templates: Sequence[str] = (DEFAULT_TEMPLATE,),
        vector: np.ndarray | None = None,
    ) -> list[Hit]:
        """The ``k`` stored rows nearest ``text`` (prompted with ``templates``; ``vector``: its
        query embedding, when already known), best first."""
        table = self.table_blocking(clip)
        if vector is None:
            hits = search_text(table, self.runtime.text_encoder, text, k, kind, templates, thumbnail=thumbnails)
        else:
            hits = search_vector(table, vector, k, kind, thumbnail=thumbnails)
        self._with_names([h.row for h in hits])
        return hits

    async def similar(
        self, clip: ResolvedClip, row_id: str, *, k: int = 10, kind: str | None = "video", thumbnails: bool = False
    ) -> list[Hit]:
        """The ``k`` stored rows nearest a stored row's own embedding ("more like this"), best first
        (the row itself first, at cosine 1)."""
        row = await self.row(clip, row_id, embedding=True)
        table = await self.table(clip)
        hits = await asyncio.to_thread(search_vector, table, row["embedding"], k, kind, thumbnails)
        await asyncio.to_thread(self._with_names, [h.row for h in hits])
        return hits

    def query_vector(self, text: str, templates: Sequence[str] = (DEFAULT_TEMPLATE,)) -> np.ndarray:
        """A search text as the vocabulary row it is scored as (normalized ``[D]``)."""
        return text_vector(self.runtime.text_encoder, text, templates).numpy()

    def elsewhere(self, clip: ResolvedClip) -> dict[str, int]:
        """Videos of this archive stored under other fingerprints and not under this one's, by
        fingerprint: what a model change left behind (``t4v archive reindex`` embeds them again).
        Nothing to read when the archive has one table; otherwise counted once per set of table
        versions (every search answers it: it must not scan the ids each time)."""
        archive, here = self._archive(), self.spec(clip)
        others = [s for s in archive.specs() if s.fingerprint != here.fingerprint]
        if not others:
            return {}
        tables = {s.fingerprint: archive.table(s) for s in others}
        with contextlib.suppress(ArchiveMismatch):
            tables[here.fingerprint] = self.table_blocking(clip)
        key = (here.fingerprint, tuple(sorted((f, t.version) for f, t in tables.items())))
        cached = self._elsewhere
        if cached is not None and cached[0] == key:
            return dict(cached[1])
        mine = tables[here.fingerprint].video_ids() if here.fingerprint in tables else frozenset()
        out = {}
        for spec in others:
            missing = len(tables[spec.fingerprint].video_ids() - mine)
            if missing:
                out[spec.fingerprint] = missing
        self._elsewhere = (key, out)
        return dict(out)

    async def search(
        self, text: str, clip: ResolvedClip, *, k: int = 10, kind: str | None = "video", thumbnails: bool = False
    ) -> list[Hit]:
        await self._flush()
        return await asyncio.to_thread(self.search_blocking, text, clip, k=k, kind=kind, thumbnails=thumbnails)

    async def rows(
        self,
        clip: ResolvedClip,
        kind: str | None,
        offset: int,
        limit: int,
        thumbnails: bool,
        metadata: Mapping[str, str] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of stored rows (only those whose metadata has every ``key: value`` of
        ``metadata``), and how many there are."""
        table = await self.table(clip)
        page = await asyncio.to_thread(table.page, kind, offset, limit, thumbnails, metadata)
        await asyncio.to_thread(self._with_names, page)
        return page, await asyncio.to_thread(table.count, kind, metadata)

    async def row(
        self, clip: ResolvedClip, row_id: str, thumbnail: bool = False, embedding: bool = False
    ) -> dict[str, Any]:
        table = await self.table(clip)
        row = await asyncio.to_thread(table.get, row_id, thumbnail, embedding)
        await asyncio.to_thread(self._with_names, [row])
        return row

    def _with_names(self, rows: list[dict[str, Any]]) -> None:
        """Each row's ``names``: every name its file was seen under (its own name when none is recorded)."""
        found = self._archive().names({r["content_id"] for r in rows})
        for row in rows:
            row["names"] = [s.name for s in found.get(row["content_id"], [])] or [row["name"]]

    async def delete(self, clip: ResolvedClip, content: str) -> int:
        """A video and its windows; how many rows went."""
        table = await self.table(clip)
        return await asyncio.to_thread(table.delete, content)

    async def stats(self) -> list[tuple[ArchiveSpec, TableStats]]:
        """Every table of the archive (any model's) and its counts."""
        await self._flush()
        archive = self._archive()

        def read() -> list[tuple[ArchiveSpec, TableStats]]:
            return [(spec, archive.table(spec).stats()) for spec in archive.specs()]

        return await asyncio.to_thread(read)

    @property
    def archive_uri(self) -> str:
        return self._archive().uri

    # -- the archive's tables ---------------------------------------------------------------

    def spec(self, clip: ResolvedClip) -> ArchiveSpec:
        """The fingerprint of what this runtime embeds with ``clip``'s frames and views."""
        return ArchiveSpec.of(self.runtime, clip)

    def left_behind(self, clip: ResolvedClip, only: str | None = None) -> list[tuple[str, list[str]]]:
        """The videos stored under other fingerprints (or fingerprint ``only``) and not under this
        one's, each with the names it was seen under: what a reindex embeds again."""
        archive, here = self._archive(), self.spec(clip)
        tables = {spec.fingerprint: archive.table(spec) for spec in archive.specs()}
        if only is not None and only not in tables:
            raise NotInArchive(f"the archive {archive.uri} has no table {only}")
        mine = tables[here.fingerprint].video_ids() if here.fingerprint in tables else frozenset()
        wanted: set[str] = set()
        for fingerprint, table in tables.items():
            if fingerprint != here.fingerprint and only in (None, fingerprint):
                wanted |= table.video_ids() - mine
        names = archive.names(wanted)
        return [(content, [s.name for s in names.get(content, [])]) for content in sorted(wanted)]

    async def reindex(
        self, clip: ResolvedClip, only: str | None = None, window_s: float | None = None
    ) -> AsyncIterator[Reindexed]:
        """Embed again, under this runtime, the videos a model change left behind, from the first
        of their names that is still a file with the same bytes; one result per video, as it is
        done. Stored ones are skipped, so a reindex that stopped goes on where it was."""
        wanted = await asyncio.to_thread(self.left_behind, clip, only)
        request = IndexRequest(ClipSpec(clip.frames, f"{clip.clips}x{clip.crops}", clip.sampling), window_s)
        for content, names in wanted:
            path = await asyncio.to_thread(_still_there, content, names)
            if path is None:
                yield Reindexed(content, None, "missing", "no file at any of its names has its bytes any more")
                continue
            try:
                done = await self.index(path, request, name=str(path))
            except T4VError as exc:
                yield Reindexed(content, str(path), "failed", str(exc))
                continue
            yield Reindexed(content, str(path), "indexed" if not done.skipped else "stored", None)

    async def _flush(self) -> None:
        """Wait for the rows ``index=true`` queued before: a client sees what it indexed."""
        if self._writer is not None:
            await asyncio.to_thread(self._writer.flush)

    async def table(self, clip: ResolvedClip, create: bool = False) -> ArchiveTable:
        """The archive's table of ``clip`` under this runtime (made when ``create``), once the rows
        queued before are committed."""
        await self._flush()
        return await asyncio.to_thread(self.table_blocking, clip, create)

    def _archive(self) -> Archive:
        if self.archive is None:
            raise ArchiveUnavailable("this engine has no archive")
        return self.archive

    def table_blocking(self, clip: ResolvedClip, create: bool = False) -> ArchiveTable:
        """The table of ``clip`` under this runtime; an archive with no table yet reads as an empty
        one of this model, one holding only other models' tables is :class:`ArchiveMismatch`."""
        archive = self._archive()
        spec = self.spec(clip)
        with self._tables_lock:
            table = self._tables.get(spec.fingerprint)
            if table is None:
                create = create or not archive.specs()
                table = archive.table(spec, create=create)
                if self.vectors is not None:  # searched in memory; this process's writes join at once
                    table = cast("ArchiveTable", SearchedTable(table, self.vectors.of(table, spec.embed_dim)))
                self._tables[spec.fingerprint] = table
            return table
