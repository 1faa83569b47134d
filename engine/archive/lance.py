"""The archive on LanceDB: one table per :class:`~text4vis.engine.archive.spec.ArchiveSpec`
(named by its fingerprint, the spec in the schema's metadata), the contract of ``store.py``.

LanceDB (embedded, columnar, versioned; a local directory or any URI it takes, ``s3://...``
included) stores the embeddings, the rows' fields and a vector index in one place with atomic
commits, scans a million rows in seconds for re-labelling, and needs no server.

Rows are written with ``merge_insert`` on ``id``, declared as the table's (unenforced) primary
key: writing a row again is a no-op, and two processes inserting the same new rows at once
conflict at commit and retry, so every row is stored exactly once. A BTree on ``id`` (from
:data:`ID_INDEX_MIN_ROWS` rows) keeps a keyed commit cheap; a vector index (IVF-PQ, from
:data:`INDEX_MIN_ROWS` rows, partitioned by faiss's k-means: :func:`ivf_centroids`) answers
searches, its candidates re-ranked by their exact cosine.
Both are built and kept up to date by :meth:`LanceTable.maintain`, never inside a commit or a
read (``maintenance.py`` runs it on a thread of its own). ``bench/archive.py`` measures both.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import threading
from collections.abc import Container, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa

from text4vis.engine.archive.spec import ArchiveSpec
from text4vis.engine.archive.store import ROW_FIELDS, UNKNOWN_LOCATOR, ArchiveRow, Hit, Sighting, TableStats
from text4vis.engine.archive.store import plain as _plain
from text4vis.engine.errors import ArchiveMismatch, ArchiveUnavailable, NonFiniteOutput, NotInArchive
from text4vis.engine.request import check_metadata

if TYPE_CHECKING:
    import lancedb
    from lancedb.query import LanceVectorQueryBuilder

log = logging.getLogger(__name__)

SPEC_KEY = b"t4v.archive_spec"
TABLE_PREFIX = "videos_"
INDEX_MIN_ROWS = 100_000  # below this an exact scan answers a search; above, IVF-PQ pays
ID_INDEX_MIN_ROWS = 1_000  # from here a BTree on id makes each keyed commit cheaper
REBUILD_GROWTH = 4  # the vector index is trained again once the table has this many times its rows
COMPACT_FRAGMENTS = 16  # fragments under half FRAGMENT_ROWS that make a full round compact
FRAGMENT_ROWS = 262_144  # compaction's target: a fragment this large is never rewritten (bounded work a round)
NPROBES, REFINE_FACTOR = 128, 100  # a search: lists probed, candidates re-ranked by exact cosine (x k)
MAX_VECTOR_DELTAS = 8  # vector index deltas (rows added since training) merged with one another past this
KEYS_BEHIND = 1_000  # rows a key index may lag before a light round brings it up to date
KEYS_BEHIND_FRAGMENTS = 16  # or fragments (a keyed commit reads each its key index lacks: ~0.2 ms a fragment)
MAX_KEY_DELTAS = 8  # key index deltas merged into one past this (each adds ~0.4 ms to a keyed commit at 1M rows)
LIGHT_COMPACT_FRAGMENTS = 32  # small fragments that make a light round merge them (each adds ~0.2 ms to a keyed commit)
LIGHT_FRAGMENT_ROWS = 4_096  # a light round merges fragments below this many rows (commits'); bulk writes' wait
# for the full round (merged at 65,536 they moved twice, and the search index read their rows twice)
TRAINED_KEY = "t4v.vector_index_trained_rows"
BATCH_ROWS = 65_536  # the rows of a batch read for the in-memory index; small fragments' joined to 1/16 of it


def schema(spec: ArchiveSpec) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False, metadata={"lance-schema:unenforced-primary-key": "true"}),
            pa.field("content_id", pa.string(), nullable=False),
            pa.field("name", pa.string()),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("start_s", pa.float64()),
            pa.field("end_s", pa.float64()),
            pa.field("duration_s", pa.float64()),
            pa.field("embedding", pa.list_(pa.float32(), spec.embed_dim), nullable=False),
            pa.field("thumbnail", pa.binary()),
            pa.field("metadata", pa.string()),
            pa.field("created_at", pa.timestamp("ms", tz="UTC"), nullable=False),
        ],
        metadata={SPEC_KEY: spec.to_json().encode()},
    )


def _table_name(spec: ArchiveSpec) -> str:
    return TABLE_PREFIX + spec.fingerprint


SIGHTINGS = "names"
SIGHTINGS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False, metadata={"lance-schema:unenforced-primary-key": "true"}),
        pa.field("content_id", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("seen_at", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)


def _sighting_key(content: str, name: str) -> str:
    return hashlib.sha256(f"{content}\0{name}".encode()).hexdigest()[:32]


def _collect(out: dict[str, list[Sighting]], rows: pa.Table) -> None:
    for content, name, seen in zip(
        rows["content_id"].to_pylist(), rows["name"].to_pylist(), rows["seen_at"].to_pylist(), strict=True
    ):
        out.setdefault(content, []).append(Sighting(name, seen.isoformat() if seen else ""))


def _ordered(out: dict[str, list[Sighting]]) -> dict[str, list[Sighting]]:
    """Each content's names, the first seen first."""
    return {k: sorted(v, key=lambda s: (s.seen_at, s.name)) for k, v in out.items()}


class LanceArchive:
    """A LanceDB database (a directory or URI) holding one table per spec."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        try:
            import lancedb

            # every read checks for commits made through other handles (another process, another
            # replica, t4v index beside the server): without it an open table is a snapshot
            self._db: lancedb.DBConnection = lancedb.connect(uri, read_consistency_interval=dt.timedelta(0))
            self._names()  # a URI that cannot be listed fails here, once, with one line
            self._sightings_table: lancedb.table.Table | None = None
            self._sightings_lock = threading.Lock()
            self._upkeep_lock = threading.Lock()  # the names' light and full rounds, one at a time
            self._upkeeps: dict[str, Upkeep] = {}  # each table's, shared by every handle on it
        except Exception as exc:  # noqa: BLE001 - lancedb raises OSError, ValueError, RuntimeError ...
            raise ArchiveUnavailable(f"the archive {uri} cannot be opened: {_one_line(exc)}") from None

    def _names(self) -> list[str]:
        return [n for n in self._db.list_tables().tables if n.startswith(TABLE_PREFIX)]

    def _sightings(self, create: bool) -> lancedb.table.Table | None:
        """The table of every name a content was seen under (one for the archive: names are the
        files', not a model's)."""
        with self._sightings_lock:
            if self._sightings_table is None:
                if SIGHTINGS in self._db.list_tables().tables:
                    self._sightings_table = self._db.open_table(SIGHTINGS)
                elif create:
                    try:
                        self._sightings_table = self._db.create_table(SIGHTINGS, schema=SIGHTINGS_SCHEMA, exist_ok=True)
                    except Exception:  # noqa: BLE001 - another process created it at the same moment
                        self._sightings_table = self._db.open_table(SIGHTINGS)
            return self._sightings_table

    def add_names(self, seen: Iterable[tuple[str, str]]) -> int:
        pairs = list(dict.fromkeys((content, name) for content, name in seen if name))
        if not pairs:
            return 0
        table = self._sightings(create=True)
        assert table is not None
        now = dt.datetime.now(dt.UTC)
        data = pa.Table.from_pydict(
            {
                "key": [_sighting_key(c, n) for c, n in pairs],
                "content_id": [c for c, _ in pairs],
                "name": [n for _, n in pairs],
                "seen_at": [now] * len(pairs),
            },
            schema=SIGHTINGS_SCHEMA,
        )
        try:
            return int(table.merge_insert("key").when_not_matched_insert_all().execute(data).num_inserted_rows)
        except (OSError, RuntimeError) as exc:
            raise ArchiveUnavailable(f"the archive {self.uri} cannot be written: {_one_line(exc)}") from None

    def maintain(self, keys_only: bool = False) -> list[str]:
        """The names table's upkeep: a BTree on its key (each commit of names is keyed on it) and
        on ``content_id`` (reads by content) from :data:`ID_INDEX_MIN_ROWS` rows, kept up to date,
        compaction of its small commits. ``keys_only``: the light round (the key indices' deltas,
        small fragments merged), skipped while a full round runs."""
        from lancedb.index import BTree

        table = self._sightings(create=False)
        if table is None or not self._upkeep_lock.acquire(blocking=not keys_only):
            return []
        try:
            done = _catch_up_keys(table, light=keys_only)
            if keys_only:
                return done + [f"names: {x}" for x in _merge_small(table)]
            indexed = {tuple(i.columns) for i in table.list_indices()}
            if table.count_rows() >= ID_INDEX_MIN_ROWS:
                for column in ("key", "content_id"):
                    if (column,) not in indexed:
                        table.create_index(column, config=BTree())
                        done.append(f"names indexed by {column}")
            if _compact(table, FRAGMENT_ROWS, under=FRAGMENT_ROWS // 2, at_least=COMPACT_FRAGMENTS):
                done.append("names compacted")
            return done
        finally:
            self._upkeep_lock.release()

    def names(self, contents: Iterable[str]) -> dict[str, list[Sighting]]:
        table = self._sightings(create=False)
        out: dict[str, list[Sighting]] = {}
        if table is None:
            return out
        ids = list(dict.fromkeys(contents))
        for i in range(0, len(ids), 2_000):
            chunk = ", ".join(_quote(x) for x in ids[i : i + 2_000])
            rows = table.search().where(f"content_id IN ({chunk})").limit(None).to_arrow()
            _collect(out, rows)
        return _ordered(out)

    def by_names(self, names: Iterable[str]) -> dict[str, tuple[str, str]]:
        table = self._sightings(create=False)
        out: dict[str, tuple[str, str]] = {}
        wanted = list(dict.fromkeys(names))
        if table is None:
            return out
        for i in range(0, len(wanted), 2_000):
            chunk = ", ".join(_quote(x) for x in wanted[i : i + 2_000])
            rows = table.search().where(f"name IN ({chunk})").limit(None).to_arrow()
            for content, name, seen in zip(
                rows["content_id"].to_pylist(), rows["name"].to_pylist(), rows["seen_at"].to_pylist(), strict=True
            ):
                if name not in out or out[name][1] < seen.isoformat():  # the latest content seen at that name
                    out[name] = (content, seen.isoformat())
        return out

    def names_table(self) -> pa.Table:
        table = self._sightings(create=False)
        if table is None:
            return pa.table({"content_id": pa.array([], pa.string()), "names": pa.array([], pa.list_(pa.string()))})
        rows = table.to_lance().to_table(columns=["content_id", "name", "seen_at"]).sort_by([("seen_at", "ascending")])
        grouped = rows.group_by("content_id", use_threads=False).aggregate([("name", "list")])
        return grouped.rename_columns(["content_id", "names"])

    def specs(self) -> list[ArchiveSpec]:
        out = []
        for name in self._names():
            with contextlib.suppress(Exception):  # a table another version wrote: not ours to read
                out.append(ArchiveSpec.from_json(self._db.open_table(name).schema.metadata[SPEC_KEY]))
        return out

    def table(self, spec: ArchiveSpec, create: bool = False) -> LanceTable:
        name = _table_name(spec)
        try:
            upkeep = self._upkeeps.setdefault(name, Upkeep())
            if name in self._names():
                return LanceTable(self._db.open_table(name), spec, upkeep)
            if create:
                try:
                    table = self._db.create_table(name, schema=schema(spec), exist_ok=True)
                except Exception:  # noqa: BLE001 - another process created it at the same moment
                    table = self._db.open_table(name)
                log.info("archive %s: new table for %s", self.uri, spec.describe())
                return LanceTable(table, spec, upkeep)
        except (ArchiveMismatch, ArchiveUnavailable):
            raise
        except Exception as exc:  # noqa: BLE001
            raise ArchiveUnavailable(f"the archive {self.uri} cannot be read: {_one_line(exc)}") from None
        others = self.specs()
        if not others:
            raise ArchiveMismatch(f"the archive {self.uri} holds no videos yet: index some first (t4v index)")
        raise ArchiveMismatch(
            f"the archive {self.uri} holds no embeddings of this model and sampling, {spec.describe()}; "
            f"it holds {'; '.join(s.describe() for s in others)}: run with the options that made those, "
            "or embed them again under this model (t4v archive reindex, POST /archive/reindex)"
        )

    def drop(self, fingerprint: str) -> int:
        name = TABLE_PREFIX + fingerprint
        if name not in self._names():
            raise NotInArchive(f"the archive {self.uri} has no table {fingerprint}")
        rows = int(self._db.open_table(name).count_rows())
        self._db.drop_table(name)
        return rows


class Upkeep:
    """What keeps one table's upkeep steps apart in this process, shared by every handle on it:
    steps whose commits would conflict (a compaction rewrites what an index covers) never run
    at once. ``round``: one full round at a time; ``layout``: key-index commits and compactions;
    ``vector``: the vector index and the light round's merges."""

    def __init__(self) -> None:
        self.round, self.layout, self.vector = threading.Lock(), threading.Lock(), threading.Lock()


class LanceTable:
    """One spec's rows. Thread-safe: LanceDB's table handles are; commits are atomic."""

    def __init__(self, table: lancedb.table.Table, spec: ArchiveSpec, upkeep: Upkeep | None = None) -> None:
        self._table = table
        self.spec = spec
        self._upkeep = upkeep or Upkeep()

    @property
    def name(self) -> str:
        return self._table.name

    def stored(self, ids: Iterable[str]) -> set[str]:
        found: set[str] = set()
        ids = list(ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            quoted = ", ".join(_quote(x) for x in chunk)
            rows = self._table.search().where(f"id IN ({quoted})").select(["id"]).limit(len(chunk)).to_arrow()
            found.update(rows["id"].to_pylist())
        return found

    def video_ids(self) -> frozenset[str]:
        rows = self._table.search().where("kind = 'video'").select(["content_id"]).limit(None).to_arrow()
        return frozenset(rows["content_id"].to_pylist())

    def id_batches(self, column: str = "id", kind: str | None = None) -> Iterator[pa.Array]:
        flt = f"kind = {_quote(kind)}" if kind else None
        for batch in self._table.to_lance().to_batches(columns=[column], filter=flt, batch_size=262_144):
            yield batch.column(0)

    def rows(self, ids: Iterable[str], thumbnail: bool = False, embedding: bool = False) -> list[dict[str, Any]]:
        wanted = list(dict.fromkeys(ids))
        out: list[dict[str, Any]] = []
        for i in range(0, len(wanted), 2_000):
            chunk = wanted[i : i + 2_000]
            out += self._select(f"id IN ({', '.join(map(_quote, chunk))})", len(chunk), 0, thumbnail, embedding)
        return out

    def new_rows(self, mark: object | None, held: Container[str] = ()) -> tuple[object, Iterator[pa.RecordBatch]]:
        """The mark: the ids of the table's fragments. Commits add fragments; a compaction or an
        update replaces some by others, whose rows come again (the reader skips those it holds,
        or takes their new fields). The fields are read first; the embeddings of the rows not
        ``held`` are then taken at their places in the same version (a compaction of a million
        rows reads ~0.3 s of fields, not ~2 s of vectors). The locator: Lance's row address
        (valid until a compaction moves the row)."""
        dataset = self._table.to_lance()
        fragments = dataset.get_fragments()
        seen = cast("frozenset[int]", mark) if mark is not None else frozenset()
        fresh = [f for f in fragments if f.fragment_id not in seen]
        names = [*ROW_FIELDS, "locator"]
        wanted = [*ROW_FIELDS, "embedding"] if not held else list(ROW_FIELDS)

        def read() -> Iterator[pa.RecordBatch]:
            """The scanner's batches, those of small fragments joined (a commit of one row is a
            fragment of one row: a take and a join to the reader's index each; a sync after 60
            one-row commits took 68 ms, 43 of its own CPU, now 35 and 14)."""
            # Dataset.to_batches takes ``fragments`` into **kwargs and reads every fragment: the scanner obeys it
            scanner = dataset.scanner(columns=wanted, fragments=fresh, batch_size=BATCH_ROWS, with_row_address=True)
            pending: list[pa.RecordBatch] = []
            for batch in scanner.to_batches():
                pending.append(batch.rename_columns([*wanted, "locator"]))
                if sum(b.num_rows for b in pending) >= BATCH_ROWS // 16:
                    yield pa.concat_batches(pending)
                    pending = []
            if pending:
                yield pa.concat_batches(pending)

        def batches() -> Iterator[pa.RecordBatch]:
            if not fresh:
                return
            for batch in read():
                if not held:
                    yield batch
                    continue
                new = np.array([row_id not in held for row_id in batch.column("id").to_pylist()], dtype=bool)
                if not new.any():
                    yield batch
                    continue
                if not new.all():
                    yield batch.filter(pa.array(~new)).select(names)
                    batch = batch.filter(pa.array(new))
                yield batch.append_column("embedding", self._vectors_at(dataset, batch))

        return frozenset(f.fragment_id for f in fragments), batches()

    @staticmethod
    def _vectors_at(dataset: Any, batch: pa.RecordBatch) -> pa.Array:
        """The embeddings of ``batch``'s rows, taken at their locators in ``dataset`` (the version
        they were read from), in the batch's order."""
        # a take answers in the order asked (checked with shuffled addresses over several fragments)
        return dataset._take_rows(batch.column("locator").to_pylist(), columns=["embedding"]).column(0).combine_chunks()

    def thumbnails(self, ids: list[str], locators: list[int]) -> dict[str, bytes | None]:
        """Read where the locators point (a take, no search), the ids checked; those moved
        since by key."""
        out: dict[str, bytes | None] = {}
        known = [(i, at) for i, at in zip(ids, locators, strict=True) if at != UNKNOWN_LOCATOR]
        if known:
            with contextlib.suppress(Exception):  # a fragment compacted away: by key below
                taken = self._table.to_lance()._take_rows([at for _, at in known], columns=["id", "thumbnail"])
                for row_id, thumb in zip(taken["id"].to_pylist(), taken["thumbnail"].to_pylist(), strict=True):
                    out[row_id] = thumb
        rest = [i for i in ids if i not in out]
        if rest:
            for row in self.rows(rest, thumbnail=True):
                out[row["id"]] = row.get("thumbnail")
        return out

    @property
    def version(self) -> int:
        return int(self._table.version)

    def add(self, rows: list[ArchiveRow]) -> int:
        rows = list({row.id: row for row in reversed(rows)}.values())[::-1]  # one per id: the key checks the table
        if not rows:
            return 0
        dim = self.spec.embed_dim
        for row in rows:
            if row.embedding.shape != (dim,):
                raise ValueError(f"embedding of shape {row.embedding.shape}; this archive stores [{dim}]")
            if not np.isfinite(row.embedding).all():  # a NaN row would be re-labelled as nothing, forever
                raise NonFiniteOutput(f"the embedding of {row.name!r} is not finite (NaN or infinity): not stored")
        now = dt.datetime.now(dt.UTC)
        data = pa.Table.from_pydict(
            {
                "id": [r.id for r in rows],
                "content_id": [r.content_id for r in rows],
                "name": [r.name for r in rows],
                "kind": [r.kind for r in rows],
                "start_s": [r.start_s for r in rows],
                "end_s": [r.end_s for r in rows],
                "duration_s": [r.duration_s for r in rows],
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.stack([r.embedding for r in rows]).astype(np.float32).reshape(-1)), dim
                ),
                "thumbnail": [r.thumbnail for r in rows],
                "metadata": [json.dumps(r.metadata) for r in rows],
                "created_at": [now] * len(rows),
            },
            schema=self._table.schema,
        )
        try:
            result = self._table.merge_insert("id").when_not_matched_insert_all().execute(data)
        except (OSError, RuntimeError) as exc:  # storage: a read-only or full disk, a lost bucket
            raise ArchiveUnavailable(f"the archive's table {self.name} cannot be written: {_one_line(exc)}") from None
        return int(result.num_inserted_rows)

    def maintain(self, keys_only: bool = False) -> list[str]:
        """Bring the indices up to date and compact the table, off the request path (the
        :class:`~text4vis.engine.archive.maintenance.Maintainer`'s thread, or after a bulk write);
        what it did, a phrase each. Readers and writers go on meanwhile: each step is one commit
        of its own, and reads see the version before it until it lands. Every step's work is
        bounded by what changed, not by the table (figures at 1M rows, D=512, 2 cores):

        - rows committed since join the id index as a delta (a keyed commit reads every id not
          in it: 0.4 s with 100,000 of them, 10 ms with none; the step takes 11-62 ms, merging
          the deltas into one once :data:`MAX_KEY_DELTAS` pile up 0.3 s);
        - a BTree on ``id`` from :data:`ID_INDEX_MIN_ROWS` rows;
        - the vector index from :data:`INDEX_MIN_ROWS` rows, trained again from scratch only
          once the table has grown :data:`REBUILD_GROWTH` times past the rows it was trained on
          (its partitions would no longer fit the data); otherwise new rows join it as a delta
          over the trained partitions and codebook (0.05 s for 1,000 rows; merging 222 rows into
          the whole index took 38 s at 1.1M), so answers do not move with it;
          the deltas are merged with one another (not with the base) once
          :data:`MAX_VECTOR_DELTAS` pile up;
        - compaction towards fragments of :data:`FRAGMENT_ROWS` rows once :data:`COMPACT_FRAGMENTS`
          under half that pile up (fragments of that size are never rewritten, so a round's
          work does not grow with the table), and versions older than a week removed.

        ``keys_only``: the light round, every few seconds, also while a full round builds its
        vector index (their commits do not conflict; a compaction's would): rows committed since
        join the id index as a delta once :data:`KEYS_BEHIND` rows or :data:`KEYS_BEHIND_FRAGMENTS`
        fragments lag it (11-62 ms), and the small fragments are merged once
        :data:`LIGHT_COMPACT_FRAGMENTS` pile up (a keyed commit opens each: 16 ms at 25 fragments,
        110 ms at 600; merging 600 one-row fragments takes 1 s), unless a full round is at its
        vector index (a merge committed meanwhile makes the index's commit fail). A light round
        that finds a full round compacting does nothing."""
        if keys_only:
            return self._light_round()
        from lancedb.index import BTree

        with self._upkeep.round:
            with self._upkeep.layout:
                done = _catch_up_keys(self._table, light=False, columns=("id",))
                rows = self.count()
                indices = {tuple(i.columns): i.name for i in self._table.list_indices()}
                if ("id",) not in indices and rows >= ID_INDEX_MIN_ROWS:
                    log.info("archive table %s: indexing its ids (%d rows)", self.name, rows)
                    self._table.create_index("id", config=BTree())
                    done.append("ids indexed")
            with self._upkeep.vector:
                vector = indices.get(("embedding",))
                trained = self._trained_rows(vector)
                if rows >= INDEX_MIN_ROWS and (vector is None or rows >= REBUILD_GROWTH * trained):
                    self._build_vector_index(rows, again=vector is not None)
                    done.append(f"vector index {'rebuilt' if vector else 'built'} over {rows} rows")
                elif vector is not None:
                    done += self._index_new_vectors(vector)
            with self._upkeep.layout:
                metrics = _compact(self._table, FRAGMENT_ROWS, under=FRAGMENT_ROWS // 2, at_least=COMPACT_FRAGMENTS)
                if metrics is not None:
                    self._table.to_lance().cleanup_old_versions(older_than=dt.timedelta(days=7))
                    done.append(f"compacted ({metrics.fragments_removed} fragments into {metrics.fragments_added})")
        return done

    def _light_round(self) -> list[str]:
        upkeep = self._upkeep
        if not upkeep.layout.acquire(blocking=False):  # a full round compacting: next time
            return []
        try:
            done = _catch_up_keys(self._table, light=True, columns=("id",))
            if upkeep.vector.acquire(blocking=False):  # no full round at its vector index
                try:
                    done += _merge_small(self._table)
                finally:
                    upkeep.vector.release()
            return done
        finally:
            upkeep.layout.release()

    def _index_new_vectors(self, index: str) -> list[str]:
        """Rows not in the vector index join it as a delta (no training, the base untouched);
        the deltas merged with one another once :data:`MAX_VECTOR_DELTAS` pile up."""
        stats = self._table.index_stats(index)
        if stats is None:
            return []
        done = []
        optimize = self._table.to_lance().optimize.optimize_indices
        behind = int(stats.num_unindexed_rows)
        if behind:
            optimize(index_names=[index], num_indices_to_merge=0, num_threads=1)
            done.append(f"{behind} rows joined the vector index")
        deltas = int(cast("int", self._table.index_stats(index).num_indices)) - 1  # type: ignore[union-attr]
        if deltas > MAX_VECTOR_DELTAS:
            optimize(index_names=[index], num_indices_to_merge=deltas, num_threads=1)
            done.append(f"{deltas} vector index deltas merged")
        return done

    def _trained_rows(self, index: str | None) -> int:
        """How many rows the vector index was trained on (recorded in the table's config by
        :meth:`_build_vector_index`; an index built before it was recorded: the rows now); 0
        without an index."""
        if index is None:
            return 0
        return int(self._table.to_lance().config().get(TRAINED_KEY, 0)) or self.count()

    def append_new(self, rows: pa.Table) -> None:
        """Append rows known to be new, without the id check (a bulk import, the benchmark)."""
        self._table.add(rows.cast(self._table.schema))

    def count(self, kind: str | None = None, metadata: Mapping[str, str] | None = None) -> int:
        if metadata:
            return len(self._matching(kind, metadata))
        return int(self._table.count_rows(f"kind = {_quote(kind)}" if kind else None))

    def get(self, row_id: str, thumbnail: bool = False, embedding: bool = False) -> dict[str, Any]:
        rows = self._select(f"id = {_quote(row_id)}", 1, 0, thumbnail, embedding)
        if not rows:
            raise NotInArchive(f"no stored video or window has id {row_id!r}")
        return rows[0]

    def vectors(self, ids: Iterable[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        ids = list(dict.fromkeys(ids))
        for i in range(0, len(ids), 2_000):  # 2,000 ids a query: 10,000 examples in ~0.1 s
            chunk = ids[i : i + 2_000]
            quoted = ", ".join(_quote(x) for x in chunk)
            rows = (
                self._table.search().where(f"id IN ({quoted})").select(["id", "embedding"]).limit(len(chunk)).to_arrow()
            )
            dim = self.spec.embed_dim
            matrix = rows["embedding"].combine_chunks().values.to_numpy(zero_copy_only=False).reshape(-1, dim)
            found.update(zip(rows["id"].to_pylist(), matrix.astype(np.float32), strict=True))
        return found

    def page(
        self,
        kind: str | None = None,
        offset: int = 0,
        limit: int = 50,
        thumbnail: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        if not metadata:
            return self._select(f"kind = {_quote(kind)}" if kind else None, limit, offset, thumbnail)
        ids = self._matching(kind, metadata)[offset : offset + limit]
        if not ids:
            return []
        found = {r["id"]: r for r in self._select(f"id IN ({', '.join(map(_quote, ids))})", len(ids), 0, thumbnail)}
        return [found[i] for i in ids if i in found]

    def _matching(self, kind: str | None, metadata: Mapping[str, str]) -> list[str]:
        """The ids of the rows whose metadata has every ``key: value`` (compared as text; an empty
        value: has the key), in table order. Only the ``id`` and ``metadata`` columns are read, the
        keys narrowing it in SQL first."""
        where = [f"kind = {_quote(kind)}"] if kind else []
        where += [f"metadata LIKE {_quote('%' + json.dumps(key) + ': %')}" for key in metadata]
        query = self._table.search().select(["id", "metadata"]).limit(None)
        if where:
            query = query.where(" AND ".join(where))
        out = []
        for row in query.to_arrow().to_pylist():
            stored = json.loads(row["metadata"] or "{}")
            if all(key in stored and value in ("", _as_text(stored[key])) for key, value in metadata.items()):
                out.append(row["id"])
        return out

    def windows_of(self, content: str) -> list[dict[str, Any]]:
        rows = self._select(f"content_id = {_quote(content)} AND kind = 'window'", 100_000, 0, False)
        return sorted(rows, key=lambda r: r["start_s"])

    def _select(
        self, where: str | None, limit: int, offset: int, thumbnail: bool, embedding: bool = False
    ) -> list[dict[str, Any]]:
        query = self._table.search()
        if where:
            query = query.where(where)
        columns = [*ROW_FIELDS, *(["thumbnail"] if thumbnail else []), *(["embedding"] if embedding else [])]
        out = query.select(columns).offset(offset).limit(limit).to_arrow().to_pylist()
        rows = [_plain(row) for row in out]
        if embedding:
            for row in rows:
                row["embedding"] = np.asarray(row["embedding"], dtype=np.float32)
        return rows

    def delete(self, content: str) -> int:
        where = f"content_id = {_quote(content)}"
        n = int(self._table.count_rows(where))
        if n == 0:
            raise NotInArchive(f"no stored video has id {content!r}")
        self._table.delete(where)
        return n

    def set_metadata(self, content: str, metadata: dict[str, Any], replace: bool = False) -> bool:
        where = f"content_id = {_quote(content)}"
        rows = self._table.search().where(where).select(["id", "metadata"]).limit(None).to_arrow().to_pylist()
        changed = False
        for row in rows:
            old = json.loads(row["metadata"] or "{}")
            new = check_metadata(dict(metadata) if replace else {**old, **metadata})  # the merge within the limits too
            if new != old:
                self._table.update(where=f"id = {_quote(row['id'])}", values={"metadata": json.dumps(new)})
                changed = True
        return changed

    def scan(self, kind: str | None = None, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        dataset = self._table.to_lance()
        columns = [*ROW_FIELDS, "embedding"]
        flt = f"kind = {_quote(kind)}" if kind else None
        yield from dataset.to_batches(columns=columns, filter=flt, batch_size=batch_rows)

    def _has_vector_index(self) -> bool:
        return any(i.columns == ["embedding"] for i in self._table.list_indices())

    def ensure_index(self, min_rows: int = INDEX_MIN_ROWS) -> bool:
        """Build the vector index once the table has ``min_rows``; True when it has one."""
        with self._upkeep.round, self._upkeep.vector:
            if self._has_vector_index():
                return True
            rows = self.count()
            if rows < min_rows:
                return False
            self._build_vector_index(rows, again=False)
            return True

    def _build_vector_index(self, rows: int, again: bool) -> None:
        """IVF-PQ, cosine, sqrt(rows) partitions trained by :func:`ivf_centroids`; the rows it
        was trained on recorded in the table's config (what :meth:`maintain` compares the
        table's growth with)."""
        partitions = max(1, int(math.sqrt(rows)))
        sub_vectors = max(1, self.spec.embed_dim // 16)
        verb = "rebuilding" if again else "building"
        log.info("archive table %s: %s its vector index over %d rows (IVF-PQ)", self.name, verb, rows)
        dataset = self._table.to_lance()
        dataset.create_index(
            "embedding",
            "IVF_PQ",
            metric="cosine",
            num_sub_vectors=sub_vectors,
            ivf_centroids=ivf_centroids(dataset, partitions, self.spec.embed_dim),
            replace=True,
        )
        self._table.to_lance().update_config({TRAINED_KEY: str(rows)})

    def stats(self) -> TableStats:
        return TableStats(self.count("video"), self.count("window"), self._has_vector_index())

    def search(self, query: np.ndarray, k: int = 10, kind: str | None = None, thumbnail: bool = False) -> list[Hit]:
        """Exact without the vector index; with it, IVF-PQ candidates re-ranked by their exact cosine."""
        vector = np.asarray(query, dtype=np.float32)
        q = cast("LanceVectorQueryBuilder", self._table.search(vector, vector_column_name="embedding"))
        q = q.distance_type("cosine")
        if kind:
            q = q.where(f"kind = {_quote(kind)}", prefilter=True)
        if self._has_vector_index():
            # the k x 100 nearest by the PQ codes, re-ranked by their exact cosine: rows of one scene
            # are near-duplicates the codes alone cannot order; recall@10 of text-like queries at
            # 1M rows 0.943 at 32 probes x 50, 0.959 at 64 x 50, 0.981 at 128 x 100 (bench run 12:
            # 0.984, p50 98 ms)
            q = q.nprobes(NPROBES).refine_factor(REFINE_FACTOR)
        columns = [*ROW_FIELDS, "thumbnail"] if thumbnail else list(ROW_FIELDS)
        rows = q.select([*columns, "_distance"]).limit(k).to_arrow().to_pylist()
        return [Hit(_plain({c: r[c] for c in columns}), 1.0 - float(r["_distance"])) for r in rows]


def ivf_centroids(dataset: Any, partitions: int, dim: int) -> np.ndarray:
    """The vector index's IVF partitions: spherical k-means (faiss, 20 iterations) over a sample
    of the table's embeddings (256 a partition, what faiss itself would keep). Lance's own
    k-means (hierarchical at 1,000 partitions) made partitions in which text-like queries (cosine
    ~0.3 from the videos they describe) found 0.40-0.60 of their 10 nearest at 1M rows; on these
    the same index finds 0.94-0.995 at 32 probes and 0.98 at :data:`NPROBES` (``bench/archive.py``
    prints it)."""
    import faiss

    from text4vis.engine.archive.vectors import unit_embeddings, unit_rows

    rows = int(dataset.count_rows())
    picked = np.sort(np.random.default_rng(0).choice(rows, min(rows, 256 * partitions), replace=False))
    sample = dataset.take(picked, columns=["embedding"]).combine_chunks().to_batches()[0]
    kmeans = faiss.Kmeans(dim, partitions, niter=20, spherical=True, seed=1)
    kmeans.train(unit_embeddings(sample, dim))
    return unit_rows(np.asarray(kmeans.centroids))


class LanceReader:
    """A local archive read without lancedb (whose import alone takes seconds): the search and the
    names ``t4v search`` needs, through Lance's own datasets, answering as :class:`LanceTable`
    and :class:`LanceArchive` do. ``None`` from :meth:`open` when it cannot serve (an object-store
    URI, no such table): the caller goes the whole way."""

    def __init__(self, uri: str, dataset: Any, names: Any) -> None:
        self.uri, self._dataset, self._names = uri, dataset, names

    @classmethod
    def open(cls, uri: str, spec: ArchiveSpec) -> LanceReader | None:
        if "://" in uri:
            return None
        path = Path(uri) / f"{_table_name(spec)}.lance"
        if not path.is_dir():
            return None
        import lance

        names = Path(uri) / f"{SIGHTINGS}.lance"
        return cls(uri, lance.dataset(str(path)), lance.dataset(str(names)) if names.is_dir() else None)

    def search(self, query: np.ndarray, k: int = 10, kind: str | None = None, thumbnail: bool = False) -> list[Hit]:
        vector = np.asarray(query, np.float32)
        nearest: dict[str, Any] = {"column": "embedding", "q": vector, "k": k, "metric": "cosine"}
        if self._dataset.list_indices():
            nearest.update(nprobes=NPROBES, refine_factor=REFINE_FACTOR)  # as LanceTable.search
        columns = [*ROW_FIELDS, "thumbnail"] if thumbnail else list(ROW_FIELDS)
        rows = self._dataset.to_table(
            nearest=nearest,
            filter=f"kind = {_quote(kind)}" if kind else None,
            prefilter=True,
            columns=[*columns, "_distance"],
        ).to_pylist()
        return [Hit(_plain({c: r[c] for c in columns}), 1.0 - float(r["_distance"])) for r in rows]

    def elsewhere(self, spec: ArchiveSpec) -> dict[str, int]:
        """As ``Engine.elsewhere``: videos of the other tables not in this one, by fingerprint."""
        import lance

        mine = _video_ids(self._dataset)
        out = {}
        for path in sorted(Path(self.uri).glob(f"{TABLE_PREFIX}*.lance")):
            fingerprint = path.name[len(TABLE_PREFIX) : -len(".lance")]
            if fingerprint != spec.fingerprint:
                missing = len(_video_ids(lance.dataset(str(path))) - mine)
                if missing:
                    out[fingerprint] = missing
        return out

    def names(self, contents: Iterable[str]) -> dict[str, list[Sighting]]:
        out: dict[str, list[Sighting]] = {}
        ids = list(dict.fromkeys(contents))
        if self._names is None or not ids:
            return out
        quoted = ", ".join(_quote(x) for x in ids)
        _collect(out, self._names.to_table(filter=f"content_id IN ({quoted})"))
        return _ordered(out)


def _catch_up_keys(
    table: lancedb.table.Table, light: bool, columns: tuple[str, ...] = ("key", "content_id")
) -> list[str]:
    """Rows committed since joined the scalar (key) indices on ``columns`` as a delta of their
    own (11-62 ms at 1M rows; merging them into the index rewrites it: 0.3 s): a keyed commit
    (``merge_insert``) reads each id its index lacks, ~4 us a row and ~0.2 ms a fragment, so a
    lag of 100,000 rows made every commit 0.4 s at 1M rows. ``light``: only once
    :data:`KEYS_BEHIND` rows or :data:`KEYS_BEHIND_FRAGMENTS` fragments lag. Past
    :data:`MAX_KEY_DELTAS` deltas, every piece is merged into one."""
    dataset = table.to_lance()
    pieces = {
        index.name: [set(segment.fragment_ids) for segment in index.segments]
        for index in dataset.describe_indices()
        if len(index.field_names) == 1 and index.field_names[0] in columns
    }
    if not pieces:
        return []
    fragments = {f.fragment_id: f.physical_rows for f in dataset.get_fragments()}
    done = []
    for name, covered in pieces.items():
        behind = fragments.keys() - set().union(*covered)
        rows = sum(fragments[f] for f in behind)
        if len(covered) > MAX_KEY_DELTAS:
            merge = len(covered)  # every piece (and the rows behind) into one
        elif behind and (not light or rows >= KEYS_BEHIND or len(behind) >= KEYS_BEHIND_FRAGMENTS):
            merge = 0  # a delta of their own: no piece rewritten
        else:
            continue
        dataset.optimize.optimize_indices(index_names=[name], num_indices_to_merge=merge, num_threads=1)
        if behind:
            done.append(f"{rows} rows joined {name}")
        if merge > 1:
            done.append(f"{merge} pieces of {name} merged")
    return done


def _merge_small(table: lancedb.table.Table) -> list[str]:
    """The light round's compaction: fragments under :data:`LIGHT_FRAGMENT_ROWS` rows merged,
    once :data:`LIGHT_COMPACT_FRAGMENTS` of them pile up (each commit of a few rows leaves one);
    the large fragments are left to the full round."""
    metrics = _compact(table, LIGHT_FRAGMENT_ROWS, under=LIGHT_FRAGMENT_ROWS, at_least=LIGHT_COMPACT_FRAGMENTS)
    if metrics is None:
        return []
    return [f"{metrics.fragments_removed} small fragments merged into {metrics.fragments_added}"]


def _compact(table: lancedb.table.Table, target: int, under: int, at_least: int) -> Any | None:
    """Compaction towards fragments of ``target`` rows (larger ones are left as they are) on one
    thread, once ``at_least`` fragments hold fewer than ``under`` rows; its metrics, or None."""
    small = sum(1 for f in table.to_lance().get_fragments() if f.physical_rows < under)
    if small < at_least:
        return None
    return table.to_lance().optimize.compact_files(target_rows_per_fragment=target, num_threads=1, batch_size=8_192)


def _video_ids(dataset: Any) -> frozenset[str]:
    return frozenset(dataset.to_table(columns=["content_id"], filter="kind = 'video'")["content_id"].to_pylist())


def _as_text(value: Any) -> str:
    """A metadata value as a filter compares it: strings as they are, the rest as JSON (3, true)."""
    return value if isinstance(value, str) else json.dumps(value)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
