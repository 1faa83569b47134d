"""The archive's search index in the server's memory: faiss over a table's embeddings, one index
per kind (a search for videos never filters windows out), kept in step with the table.

Why not LanceDB's own index: on text-like queries (a CLIP text embedding sits at cosine ~0.3
from the videos it describes) it answers in 40-100 ms at 1M rows (PQ codes, then the candidates
re-ranked from the table), recall@10 0.94-0.98 on its faiss-trained partitions (0.42-0.60 on
Lance's own k-means), where faiss's IVF in memory finds 1.00 in ~4 ms (``bench/archive.py``
prints both). LanceDB stays the store of record; this is a cache of its embeddings that a
process builds from it.

- Below :data:`IVF_MIN_ROWS` rows of a kind: exact (a flat inner-product index, float32).
- From there: IVF (sqrt(n) lists, float16 codes, :data:`NPROBE` lists probed), trained again on
  its own thread once the kind has :data:`RETRAIN_GROWTH` times the rows it was trained on; the
  old index answers until the new one is swapped in.
- The rows' fields (name, metadata, times: ~250 bytes a row) are held too, so an answer reads
  nothing from the table but the thumbnails it shows (a take at the rows' locators). Scores are
  the cosines of the indexed vectors: exact below the threshold, float16-rounded (~1e-3) above.

Keeping in step: rows this process commits go in at once (read-your-writes); a thread reads
what other processes committed (the table's new fragments) every :data:`SYNC_EVERY_S`, and
rescans the ids when the table holds fewer rows than the index (a deletion elsewhere: answered
until then, for a few seconds). Until a table's index is built (on that thread: ~30 s a million
rows on 2 cores), its searches go to the table's own search. Memory: ~1.3 KB a row at D=512
(float16 codes, the fields).
"""

from __future__ import annotations

import array
import datetime as dt
import json
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from text4vis.engine.archive.store import KINDS, ROW_FIELDS, UNKNOWN_LOCATOR, ArchiveRow, ArchiveTable, Hit, plain

if TYPE_CHECKING:
    import faiss

log = logging.getLogger(__name__)

IVF_MIN_ROWS = 100_000  # below: exact; from here an IVF index answers in milliseconds
NPROBE = 64  # lists probed: recall@10 0.998 on text-like queries at 1M rows (bench/archive.py)
RETRAIN_GROWTH = 4  # an IVF index is trained again once its kind has this many times its rows
SYNC_EVERY_S = 2.0  # how often other processes' commits are read in
LOCK_ROWS = 2_048  # rows joined under the lock at a time (a search waits for one such slice at most)


@dataclass
class KindIndex:
    """One kind's faiss index; its labels are positions in :attr:`VectorIndex.ids`."""

    index: Any  # a faiss.Index (its Python wrapper takes numpy arrays where the stubs say otherwise)
    trained_rows: int  # 0: exact
    alive: int = 0


@dataclass
class _State:
    ids: list[str | None] = field(default_factory=list)  # a position's row id; None once deleted
    where: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, KindIndex] = field(default_factory=dict)
    fields: list[pa.RecordBatch] = field(default_factory=list)  # the rows' fields, as the store holds them
    at_batch: array.array[int] = field(default_factory=lambda: array.array("q"))  # a position's batch...
    at_row: array.array[int] = field(default_factory=lambda: array.array("q"))  # ...and row in it
    locators: array.array[int] = field(default_factory=lambda: array.array("Q"))
    meta_hash: array.array[int] = field(default_factory=lambda: array.array("q"))  # hash of its metadata's JSON text
    mark: object = None  # the table's position the rows were read up to (store-defined)

    def row(self, position: int) -> dict[str, Any]:
        return plain(self.fields[self.at_batch[position]].slice(self.at_row[position], 1).to_pylist()[0])


class VectorIndex:
    """The in-memory index of one table. Thread-safe: one lock around the faiss indices (a
    search takes milliseconds; rows join in batches)."""

    def __init__(self, table: ArchiveTable, dim: int) -> None:
        self.table, self.dim = table, dim
        self._lock = threading.Lock()
        self._state: _State | None = None  # None until built

    @property
    def ready(self) -> bool:
        return self._state is not None

    @property
    def rows(self) -> int:
        """The rows it answers for (0 until built)."""
        state = self._state
        return sum(k.alive for k in state.kinds.values()) if state is not None else 0

    # -- building and keeping in step (the sync thread) -------------------------------------

    def build(self) -> None:
        """Read every row (a batch at a time) and index it; swapped in at the end (a previous
        index answers meanwhile)."""
        t0 = time.perf_counter()
        state = _State()
        state.mark, batches = self.table.new_rows(None)
        vectors: dict[str, list[np.ndarray]] = {kind: [] for kind in KINDS}
        labels: dict[str, list[np.ndarray]] = {kind: [] for kind in KINDS}
        for batch in batches:
            picked = self._collect(state, batch, [hash(t) for t in batch.column("metadata").to_pylist()])
            matrix = unit_embeddings(batch, self.dim) if picked else None
            for kind, (picked_rows, positions) in picked.items():
                assert matrix is not None
                vectors[kind].append(matrix[picked_rows])
                labels[kind].append(positions)
        for kind in KINDS:
            matrix = np.concatenate(vectors[kind]) if vectors[kind] else np.empty((0, self.dim), np.float32)
            at = np.concatenate(labels[kind]) if labels[kind] else np.empty(0, np.int64)
            state.kinds[kind] = _new_index(matrix, at, self.dim)
        with self._lock:
            self._state = state
        rows = self.rows
        seconds = time.perf_counter() - t0
        log.info("archive table %s: search index of %d rows built in %.1f s", self.table.name, rows, seconds)

    def sync(self) -> None:
        """Rows other processes committed since the last read (and the new fields or places of
        rows held); deletions when the table holds fewer rows than the index; built again
        (beside the one that answers meanwhile) once a kind has outgrown it: an exact one past
        :data:`IVF_MIN_ROWS`, an IVF one at :data:`RETRAIN_GROWTH` times its training rows."""
        state = self._state
        if state is None:
            return
        mark, batches = self.table.new_rows(state.mark, held=state.where)
        for batch in batches:
            self._add_batch(batch)
        state.mark = mark
        if sum(k.alive for k in state.kinds.values()) > self.table.count():
            self._forget_deleted()
        if any(_outgrown(entry) for entry in state.kinds.values()):
            self.build()

    def _forget_deleted(self) -> None:
        state = self._state
        assert state is not None
        stored: set[str] = set()
        for batch in self.table.id_batches():
            stored.update(batch.to_pylist())
        with self._lock:
            gone = [row_id for row_id in state.where if row_id not in stored]
        self.remove(gone)

    # -- this process's own writes --------------------------------------------------------

    def added(self, rows: Iterable[ArchiveRow]) -> None:
        """Rows this process just committed: searchable at once."""
        rows = list(rows)
        if not rows or self._state is None:
            return
        now = dt.datetime.now(dt.UTC)
        columns: dict[str, Any] = {name: [getattr(r, name) for r in rows] for name in ROW_FIELDS[:7]}
        columns["metadata"] = [json.dumps(r.metadata) for r in rows]
        columns["created_at"] = pa.array([now] * len(rows), pa.timestamp("ms", tz="UTC"))
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(
            pa.array(np.stack([r.embedding for r in rows]).astype(np.float32).reshape(-1)), self.dim
        )
        columns["locator"] = pa.array([UNKNOWN_LOCATOR] * len(rows), pa.uint64())
        self._add_batch(pa.RecordBatch.from_pydict(columns))

    def refreshed(self, rows: list[dict[str, Any]]) -> None:
        """Rows whose fields this process changed (metadata), as the table now answers them."""
        state = self._state
        if state is None or not rows or not state.fields:
            return
        fields = pa.RecordBatch.from_pylist(
            [
                {
                    **{name: r[name] for name in ROW_FIELDS},
                    "metadata": json.dumps(r["metadata"]),
                    "created_at": dt.datetime.fromisoformat(r["created_at"]),
                }
                for r in rows
            ],
            schema=state.fields[0].schema,
        )
        texts = fields.column("metadata").to_pylist()
        with self._lock:
            state.fields.append(fields)
            for i, row in enumerate(rows):
                position = state.where.get(row["id"])
                if position is not None:
                    state.at_batch[position], state.at_row[position] = len(state.fields) - 1, i
                    state.meta_hash[position] = hash(texts[i])

    def remove(self, row_ids: Iterable[str]) -> None:
        """Rows deleted (by this process, or found gone)."""
        state = self._state
        if state is None:
            return
        with self._lock:
            positions = [state.where.pop(row_id) for row_id in set(row_ids) if row_id in state.where]
            for position in positions:
                state.ids[position] = None
            if positions:
                for entry in state.kinds.values():
                    entry.alive -= int(entry.index.remove_ids(np.array(positions, np.int64)))

    def remove_content(self, content: str) -> None:
        """A video's rows (its own id, its windows' ``id@start-end``)."""
        state = self._state
        if state is None:
            return
        with self._lock:
            ids = [row_id for row_id in state.where if row_id.split("@", 1)[0] == content]
        self.remove(ids)

    def _add_batch(self, batch: pa.RecordBatch) -> None:
        """A batch's rows joined, :data:`LOCK_ROWS` at a time: a search waits for one slice at
        most, never for a compaction's worth of rows. What takes time is done before the lock:
        the per-row reading (ids, metadata texts and their hashes: after a compaction every row
        comes back with a new place), the vectors' normalization and, for an IVF index, the list
        each vector joins (the coarse quantizer: 12.5 ms for 2,048 rows at 1,000 lists, D=512, on
        a quiet core; under the lock only their codes are appended, 3.3 ms)."""
        state = self._state
        assert state is not None
        for start in range(0, batch.num_rows, LOCK_ROWS):
            part = batch.slice(start, LOCK_ROWS)
            hashes = [hash(t) for t in part.column("metadata").to_pylist()]
            matrix = unit_embeddings(part, self.dim) if "embedding" in part.schema.names else None
            lists = _lists(state, part, matrix)
            with self._lock:
                for kind, (rows, positions) in self._collect(state, part, hashes).items():
                    assert matrix is not None  # rows are picked only from batches with vectors
                    entry = state.kinds[kind]
                    vectors = np.ascontiguousarray(matrix[rows])
                    if kind in lists:
                        assigned = np.ascontiguousarray(lists[kind][rows])
                        entry.index.add_core(
                            len(rows), _ptr(vectors), _ptr(positions), _ptr(assigned)
                        )  # what add_with_ids does once it has assigned the lists
                    else:
                        entry.index.add_with_ids(vectors, positions)
                    entry.alive += len(rows)

    def _collect(
        self, state: _State, batch: pa.RecordBatch, hashes: list[int]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The rows of ``batch`` not held yet, by kind: their rows in the batch and the new
        positions they are given; rows held already get their new locator, and their new
        fields when their metadata changed (told by ``hashes``, the hashes of the batch's
        metadata texts). A batch without embeddings holds rows read as held: one not held now
        was deleted since, and is skipped."""
        ids, kinds = batch.column("id").to_pylist(), batch.column("kind").to_pylist()
        has_vectors = "embedding" in batch.schema.names
        locators = batch.column("locator").to_numpy(zero_copy_only=False)
        fresh, changed = [], []
        for i, row_id in enumerate(ids):
            position = state.where.get(row_id)
            if position is None:
                if has_vectors:
                    fresh.append(i)
                continue
            state.locators[position] = int(locators[i])
            if hashes[i] != state.meta_hash[position]:
                changed.append((i, position))
        kept = sorted(fresh + [i for i, _ in changed])
        if not kept:
            return {}
        b = len(state.fields)
        state.fields.append(batch.select(list(ROW_FIELDS)).take(pa.array(kept)))
        row_in = {i: r for r, i in enumerate(kept)}
        for i, position in changed:
            state.at_batch[position], state.at_row[position] = b, row_in[i]
            state.meta_hash[position] = hashes[i]
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for kind in KINDS:
            picked = [i for i in fresh if kinds[i] == kind]
            if not picked:
                continue
            positions = np.arange(len(state.ids), len(state.ids) + len(picked), dtype=np.int64)
            for i, position in zip(picked, positions.tolist(), strict=True):
                state.where[ids[i]] = position
                state.ids.append(ids[i])
                state.at_batch.append(b)
                state.at_row.append(row_in[i])
                state.locators.append(int(locators[i]))
                state.meta_hash.append(hashes[i])
            out[kind] = (np.array(picked, dtype=np.int64), positions)
        return out

    # -- answering ------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int, kind: str | None, thumbnail: bool) -> list[Hit]:
        """The ``k`` rows nearest ``query``: their fields from memory, their thumbnails (when
        asked) read at their locators."""
        state = self._state
        if state is None:
            return self.table.search(query, k=k, kind=kind, thumbnail=thumbnail)
        q = unit_rows(np.asarray(query, np.float32)[None])
        found: list[tuple[float, int]] = []
        with self._lock:
            for name in (kind,) if kind else KINDS:
                entry = state.kinds[name]
                if entry.alive:
                    scores, positions = entry.index.search(q, min(k, entry.alive))
                    found += [(float(s), int(p)) for s, p in zip(scores[0], positions[0], strict=True) if p >= 0]
            found.sort(key=lambda x: -x[0])
            found = found[:k]
            hits = [Hit(state.row(p), min(1.0, s)) for s, p in found]
            locators = [int(state.locators[p]) for _, p in found]
        if thumbnail and hits:
            ids = [h.row["id"] for h in hits]
            thumbs = self.table.thumbnails(ids, locators)
            gone = [i for i in ids if i not in thumbs]
            if gone:  # deleted by another process since the last sync
                self.remove(gone)
                hits = [h for h in hits if h.row["id"] in thumbs]
            for h in hits:
                h.row["thumbnail"] = thumbs[h.row["id"]]
        return hits


class VectorIndexes:
    """The process's search indices, one per table, and the thread that builds them and reads in
    other processes' commits. A table's first search asks for its index; until it is built the
    table's own search answers."""

    def __init__(self, sync_every_s: float = SYNC_EVERY_S) -> None:
        self.sync_every_s = sync_every_s
        self._indexes: dict[str, VectorIndex] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def of(self, table: ArchiveTable, dim: int) -> VectorIndex:
        with self._lock:
            index = self._indexes.get(table.name)
            if index is None:
                index = self._indexes[table.name] = VectorIndex(table, dim)
                self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="archive-search-index", daemon=True)
                self._thread.start()
            return index

    def wait_ready(self, timeout_s: float) -> bool:
        """Every index asked for so far built (tests, benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if all(i.ready for i in self._indexes.values()):
                    return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                indexes = list(self._indexes.values())
            for index in indexes:
                try:
                    index.sync() if index.ready else index.build()
                except Exception:  # noqa: BLE001 - the table's own search answers meanwhile; retried
                    log.warning("archive search index of %s: failed, retried", index.table.name, exc_info=True)
            self._wake.wait(self.sync_every_s)
            self._wake.clear()


def _outgrown(entry: KindIndex) -> bool:
    if entry.trained_rows == 0:
        return entry.alive >= IVF_MIN_ROWS
    return entry.alive >= RETRAIN_GROWTH * entry.trained_rows


def _new_index(matrix: np.ndarray, labels: np.ndarray, dim: int) -> KindIndex:
    """Exact below :data:`IVF_MIN_ROWS` rows, IVF with float16 codes from there."""
    import faiss

    n = len(matrix)
    if n < IVF_MIN_ROWS:
        index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        trained = 0
    else:
        lists = int(math.sqrt(n))
        ivf = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(dim), dim, lists, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        ivf.train(matrix[np.random.default_rng(0).choice(n, min(n, 100 * lists), replace=False)])
        ivf.nprobe = NPROBE
        index, trained = ivf, n
    entry = KindIndex(index, trained)
    if n:
        index.add_with_ids(matrix, labels)
        entry.alive = n
    return entry


def unit_embeddings(batch: pa.RecordBatch, dim: int) -> np.ndarray:
    """A batch's embeddings as unit float32 rows (flatten: a slice's own rows)."""
    return unit_rows(batch.column("embedding").flatten().to_numpy(zero_copy_only=False).reshape(-1, dim))


def _lists(state: _State, batch: pa.RecordBatch, matrix: np.ndarray | None) -> dict[str, np.ndarray]:
    """For each kind whose index is an IVF one, the list each of the batch's vectors joins
    (read before the lock: the quantizer is only trained once, when the index is built)."""
    if matrix is None or not len(matrix):
        return {}
    out = {}
    kinds = np.array(batch.column("kind").to_pylist(), dtype=object)
    for kind, entry in state.kinds.items():
        mine = np.flatnonzero(kinds == kind)
        if entry.trained_rows and len(mine):
            lists = np.full(len(matrix), -1, dtype=np.int64)
            lists[mine] = entry.index.quantizer.assign(np.ascontiguousarray(matrix[mine]), 1).ravel()
            out[kind] = lists
    return out


def _ptr(array: np.ndarray) -> Any:
    import faiss

    return faiss.swig_ptr(array)


def unit_rows(rows: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


class SearchedTable:
    """A table whose searches go through its in-memory index, and whose rows written or deleted
    by this process join or leave that index at once; everything else is the table's own."""

    def __init__(self, table: ArchiveTable, index: VectorIndex) -> None:
        self.table, self.index = table, index
        self.spec = table.spec

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)

    def add(self, rows: list[ArchiveRow]) -> int:
        new = self.table.add(rows)
        self.index.added(rows)
        return new

    def delete(self, content: str) -> int:
        gone = self.table.delete(content)
        self.index.remove_content(content)
        return gone

    def set_metadata(self, content: str, metadata: dict[str, Any], replace: bool = False) -> bool:
        changed = self.table.set_metadata(content, metadata, replace)
        if changed:
            rows = [self.table.get(content)] + self.table.windows_of(content)
            self.index.refreshed(rows)
        return changed

    def search(self, query: np.ndarray, k: int = 10, kind: str | None = None, thumbnail: bool = False) -> list[Hit]:
        return self.index.search(query, k, kind, thumbnail)
