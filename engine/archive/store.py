"""The archive's storage contract: what the engine asks of a store of embeddings, whatever holds
them (``lance.py`` is the implementation; another one, pgvector or Qdrant, is one module that
passes ``tests/integration/test_archive_store.py``).

An :class:`Archive` is a database of tables, one per
:class:`~text4vis.engine.archive.spec.ArchiveSpec` (the fingerprint of how its embeddings were
made); :meth:`Archive.table` is the one way to open one. A row is a video (``kind`` video) or one
window of it (``kind`` window); its ``id`` is the file's SHA-256 (:func:`content_id`), with
``@start-end`` for a window (:func:`window_id`). Writing a row again is a no-op, also when two
processes write it at once: every row is stored exactly once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from text4vis.engine.archive.spec import ArchiveSpec
from text4vis.engine.request import check_metadata
from text4vis.models.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

# a row's fields as reads return them (besides its embedding, and its thumbnail when asked)
ROW_FIELDS = ("id", "content_id", "name", "kind", "start_s", "end_s", "duration_s", "metadata", "created_at")
UNKNOWN_LOCATOR = 2**64 - 1
log = logging.getLogger(__name__)


def plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row as stored (``metadata`` JSON text, ``created_at`` a datetime) as reads answer it
    (``metadata`` a dict, ``created_at`` ISO 8601)."""
    row = dict(row)
    if row.get("metadata") is not None:
        row["metadata"] = _readable(row.get("id"), row["metadata"])
    if isinstance(row.get("created_at"), dt.datetime):
        row["created_at"] = row["created_at"].isoformat()
    return row


def _readable(row_id: object, text: str) -> dict[str, Any]:
    """A stored row's metadata, or, when it is none a read could send back (stored before the
    archive checked it, or by another tool), an error entry in its place: one row never fails
    a page or a search (it is logged)."""
    try:
        return check_metadata(json.loads(text, parse_constant=float))
    except (InputError, ValueError, RecursionError) as exc:
        log.warning("archive row %s: its stored metadata cannot be answered (%s); shown as an error entry", row_id, exc)
        return {"error": f"the stored metadata cannot be answered: {exc}"}


KINDS = ("video", "window")


def content_id(path: Path) -> str:
    """The SHA-256 of a file's bytes: a video's id, whatever its name."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def window_id(content: str, start_s: float, end_s: float) -> str:
    return f"{content}@{start_s:.3f}-{end_s:.3f}"


@dataclass
class ArchiveRow:
    id: str
    content_id: str
    name: str
    kind: str  # video | window
    start_s: float
    end_s: float
    duration_s: float | None
    embedding: np.ndarray  # float32 [D], normalized: the tensor scoring uses
    thumbnail: bytes | None = None  # a small JPEG
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    row: dict[str, Any]  # ROW_FIELDS (+ thumbnail when asked)
    score: float  # cosine between the query and the row's embedding


@dataclass(frozen=True)
class Sighting:
    """A name (an absolute path, a URI, an upload's name) a content was seen under, and when."""

    name: str
    seen_at: str  # ISO 8601, UTC


@dataclass(frozen=True)
class TableStats:
    videos: int
    windows: int
    vector_index: bool  # whether searches read an approximate index (else an exact scan)


class ArchiveTable(Protocol):
    """One fingerprint's rows. Thread-safe; every method blocks (call it off the event loop)."""

    spec: ArchiveSpec

    @property
    def name(self) -> str: ...

    def add(self, rows: list[ArchiveRow]) -> int:
        """Store ``rows`` in one commit, once each (rows already stored are left as they are; a
        non-finite embedding is :class:`NonFiniteOutput` and nothing is stored). How many were new."""
        ...

    def stored(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are stored."""
        ...

    def video_ids(self) -> frozenset[str]:
        """Every stored video's content id."""
        ...

    def id_batches(self, column: str = "id", kind: str | None = None) -> Iterator[pa.Array]:
        """A column of ids (``id`` or ``content_id``) of every row (of ``kind``), as string
        arrays a batch at a time: never the whole set in memory as Python strings."""
        ...

    def rows(self, ids: Iterable[str], thumbnail: bool = False, embedding: bool = False) -> list[dict[str, Any]]:
        """The stored rows among ``ids`` (any order), as :meth:`get` answers each."""
        ...

    def new_rows(self, mark: object | None, held: Container[str] = ()) -> tuple[object, Iterator[pa.RecordBatch]]:
        """The rows committed since ``mark`` (every row when None; rows seen before may come
        again, with their fields as they are now: after a compaction, every row) and the mark to
        pass next time: what an index kept in memory reads to stay in step with commits of other
        processes. Columns: the :data:`ROW_FIELDS` as stored (``metadata`` JSON text,
        ``created_at`` a timestamp; see :func:`plain`), ``locator`` (uint64: where
        :meth:`thumbnails` finds the row fastest; :data:`UNKNOWN_LOCATOR` for none) and
        ``embedding``, except in batches that hold only rows whose id is in ``held`` (the reader
        has their vectors: a compaction's worth of rows is not read twice)."""
        ...

    def thumbnails(self, ids: list[str], locators: list[int]) -> dict[str, bytes | None]:
        """The thumbnails of those of ``ids`` still stored, read at their ``locators`` where
        those still hold them."""
        ...

    @property
    def version(self) -> int:
        """Grows with every commit (any process's): what a cache of the table's contents keys on."""
        ...

    def get(self, row_id: str, thumbnail: bool = False, embedding: bool = False) -> dict[str, Any]:
        """One row's fields, with its thumbnail and its embedding (a float32 array) when asked
        (:class:`NotInArchive` when none has ``row_id``)."""
        ...

    def vectors(self, ids: Iterable[str]) -> dict[str, np.ndarray]:
        """The embeddings (float32 ``[D]``) of those of ``ids`` that are stored."""
        ...

    def page(
        self,
        kind: str | None = None,
        offset: int = 0,
        limit: int = 50,
        thumbnail: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Rows in table order; with ``metadata``, only those whose metadata has every ``key: value``
        (values compared as text: ``"3"`` matches ``3``; an empty value: has the key)."""
        ...

    def windows_of(self, content: str) -> list[dict[str, Any]]:
        """A video's window rows, by start."""
        ...

    def delete(self, content: str) -> int:
        """A video and its windows; how many rows went (:class:`NotInArchive` when none)."""
        ...

    def set_metadata(self, content: str, metadata: dict[str, Any], replace: bool = False) -> bool:
        """``metadata`` merged into (``replace``: instead of) the metadata of a video's rows, with
        nothing decoded; whether anything changed."""
        ...

    def count(self, kind: str | None = None, metadata: Mapping[str, str] | None = None) -> int: ...

    def scan(self, kind: str | None = None, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Every row's fields (:data:`ROW_FIELDS`) and ``embedding`` (fixed-size list of float32), in
        batches: never the whole table in memory."""
        ...

    def search(self, query: np.ndarray, k: int = 10, kind: str | None = None, thumbnail: bool = False) -> list[Hit]:
        """The ``k`` rows nearest ``query [D]`` by cosine, best first."""
        ...

    def maintain(self, keys_only: bool = False) -> list[str]:
        """Bring the table's indices up to date and compact it, off the request path (the
        maintenance thread, or after a bulk write); what it did, a phrase each. Commits and reads
        go on meanwhile and never wait for it. ``keys_only``: only the key index, and only once
        enough rows lag it to slow a keyed commit (the cheap step, run every few seconds)."""
        ...

    def stats(self) -> TableStats: ...


class Archive(Protocol):
    """A database of tables, one per spec."""

    uri: str

    def maintain(self, keys_only: bool = False) -> list[str]:
        """Upkeep of what the archive keeps beside its tables (the names); what it did.
        ``keys_only``: as :meth:`ArchiveTable.maintain`'s."""
        ...

    def specs(self) -> list[ArchiveSpec]:
        """The specs of the tables it holds."""
        ...

    def table(self, spec: ArchiveSpec, create: bool = False) -> ArchiveTable:
        """The table of ``spec``; ``create``: make it when missing (indexing). Reading an archive
        that holds only other specs' tables is :class:`ArchiveMismatch`, naming them."""
        ...

    def drop(self, fingerprint: str) -> int:
        """Delete a table and its rows; how many rows went (:class:`NotInArchive` when none has it)."""
        ...

    def add_names(self, seen: Iterable[tuple[str, str]]) -> int:
        """Record ``(content id, name)`` sightings (once each, whatever table holds the content);
        how many were new. Names are the files', not a model's: one record for the archive."""
        ...

    def names(self, contents: Iterable[str]) -> dict[str, list[Sighting]]:
        """Every name each of ``contents`` was seen under, the first seen first."""
        ...

    def by_names(self, names: Iterable[str]) -> dict[str, tuple[str, str]]:
        """For each of ``names`` seen before: the content last seen there and when (ISO 8601, UTC)."""
        ...

    def names_table(self) -> pa.Table:
        """Every content's names, the first seen first: columns ``content_id`` and ``names``
        (a list of strings); a re-labelling of the whole archive joins it to its rows."""
        ...


def open_archive(uri: str) -> Archive:
    """The archive at ``uri`` (a directory, or any URI LanceDB takes: ``s3://...``).
    :class:`ArchiveUnavailable` in one line when it cannot be opened."""
    from text4vis.engine.archive.lance import LanceArchive

    return LanceArchive(uri)
