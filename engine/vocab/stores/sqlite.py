"""The embedded default store: one SQLite file under the data dir (WAL: several processes on one
machine may share it). A version bump is one write transaction; a PUT whose content equals the
stored one changes nothing; ``if_match`` guards against lost updates."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from text4vis.engine.errors import PreconditionFailed, StoreUnavailable
from text4vis.engine.request import AbstainDefaults
from text4vis.engine.vocab.few_shot import FewShot
from text4vis.engine.vocab.record import LintWarning, VocabRecord, VocabSummary, warnings_from_json, warnings_to_json
from text4vis.engine.vocab.stores import base
from text4vis.engine.vocab.stores.base import VocabStore, vector
from text4vis.engine.vocab.validation import STORED_PROMPTS

log = logging.getLogger(__name__)


class SQLiteStore(VocabStore):
    """One file, WAL mode: several processes on one machine may share it.

    A file that cannot be opened, is not a database, or cannot be written (a read-only data
    directory) fails at once, in one sentence (:class:`StoreUnavailable`), rather than at the first
    PUT; an SQLite error later is a 503 with that sentence, and :meth:`health` says what failed
    until a read (or a write, for a failed write) succeeds again (``/health/ready`` reports it)."""

    def __init__(self, path: Path, max_prompts: int = STORED_PROMPTS) -> None:
        self._path = path
        self.max_prompts = max_prompts
        self._failed: dict[bool, str] = {}  # by kind (True: a write): the last failure, until one succeeds
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._setup()
        except (sqlite3.Error, OSError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise StoreUnavailable(f"the vocabulary store {path} cannot be opened for writing: {reason}") from None

    def _setup(self) -> None:
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS vocabs (name TEXT PRIMARY KEY, version INTEGER NOT NULL, "
                "etag TEXT NOT NULL, text_model TEXT NOT NULL, labels TEXT NOT NULL, templates TEXT NOT NULL, "
                "dim INTEGER NOT NULL, matrix BLOB NOT NULL, updated_at REAL NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (text_model TEXT NOT NULL, prompt TEXT NOT NULL, "
                "vec BLOB NOT NULL, PRIMARY KEY (text_model, prompt))"
            )
            if "used_at" not in [row[1] for row in self._db.execute("PRAGMA table_info(embeddings)")]:
                self._db.execute("ALTER TABLE embeddings ADD COLUMN used_at REAL NOT NULL DEFAULT 0")
            self._db.execute("CREATE INDEX IF NOT EXISTS embeddings_used ON embeddings (text_model, used_at)")
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(vocabs)")]
            if "clean_labels" not in columns:  # a database of an earlier version: its vocabularies keep their labels
                self._db.execute("ALTER TABLE vocabs ADD COLUMN clean_labels INTEGER NOT NULL DEFAULT 0")
            if "abstain" not in columns:  # earlier versions: no default abstention
                self._db.execute("ALTER TABLE vocabs ADD COLUMN abstain TEXT")
            if "lint" not in columns:  # earlier versions: linted again once, then kept
                self._db.execute("ALTER TABLE vocabs ADD COLUMN lint TEXT")
            if "few_shot" not in columns:  # earlier versions: no examples
                self._db.execute("ALTER TABLE vocabs ADD COLUMN few_shot BLOB")
            self._probe_write()  # a read-only file opens, and reads, fine: fail now, not at the first PUT

    def _probe_write(self) -> None:
        """A write that changes nothing, rolled back (BEGIN IMMEDIATE alone passes under query_only)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("UPDATE vocabs SET version = version WHERE 0")
        finally:
            self._db.execute("ROLLBACK")

    @contextmanager
    def _guard(self, write: bool = False) -> Iterator[None]:
        """The lock, and SQLite's errors as :class:`StoreUnavailable` (a 503 naming the file); a
        failure is remembered until a call of the same kind (read or write) succeeds."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                if not self._failed:
                    log.error("the vocabulary store %s failed: %s", self._path, exc)
                self._failed[write] = f"the vocabulary store {self._path} failed: {exc}"
                raise StoreUnavailable(self._failed[write]) from None
            if self._failed.pop(write, None) is not None and not self._failed:
                log.info("the vocabulary store %s works again", self._path)

    def health(self) -> str | None:
        """Nothing failed, or the failure still stands: a write (and a read) is tried again."""
        if self._failed:
            with contextlib.suppress(StoreUnavailable), self._guard(write=True):
                self._probe_write()
            with contextlib.suppress(StoreUnavailable), self._guard():
                self._db.execute("SELECT count(*) FROM vocabs").fetchone()
        return next(iter(self._failed.values()), None)

    def get(self, name: str) -> VocabRecord | None:
        with self._guard():
            row = self._db.execute(
                "SELECT name, version, etag, text_model, labels, templates, dim, matrix, updated_at, clean_labels, "
                "abstain, lint, few_shot FROM vocabs WHERE name = ?",
                (name,),
            ).fetchone()
        return None if row is None else self._record(row)

    @staticmethod
    def _record(row: tuple) -> VocabRecord:  # type: ignore[type-arg]
        name, version, etag, text_model, labels, templates, dim, matrix, updated_at, clean, abstain, lint, few = row
        return VocabRecord(
            name,
            version,
            etag,
            text_model,
            tuple(json.loads(labels)),
            tuple(json.loads(templates)),
            vector(matrix).reshape(-1, dim),
            updated_at,
            bool(clean),
            AbstainDefaults.from_json(abstain),
            warnings_from_json(lint),
            FewShot.from_bytes(few),
        )

    def head(self, name: str) -> tuple[int, str] | None:
        with self._guard():
            row = self._db.execute("SELECT version, etag FROM vocabs WHERE name = ?", (name,)).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def put(self, record: VocabRecord, if_match: str | None = None) -> tuple[VocabRecord, bool]:
        with self._guard(write=True):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT version, etag FROM vocabs WHERE name = ?", (record.name,)).fetchone()
                if if_match is not None and (row is None or row[1] != if_match):
                    raise PreconditionFailed(f"vocabulary {record.name!r} is not at ETag {if_match}")
                if row is not None and row[1] == record.etag:
                    self._db.execute("COMMIT")
                    stored = None
                else:
                    version = 1 if row is None else int(row[0]) + 1
                    self._db.execute(
                        "INSERT OR REPLACE INTO vocabs (name, version, etag, text_model, labels, templates, dim, "
                        "matrix, updated_at, clean_labels, abstain, lint, few_shot) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            record.name,
                            version,
                            record.etag,
                            record.text_model,
                            json.dumps(record.labels),
                            json.dumps(record.templates),
                            record.matrix.shape[1],
                            np.ascontiguousarray(record.matrix, dtype=np.float32).tobytes(),
                            record.updated_at,
                            int(record.clean_labels),
                            record.abstain.to_json() if record.abstain else None,
                            None if record.lint is None else warnings_to_json(list(record.lint)),
                            None if record.few_shot is None else record.few_shot.to_bytes(),
                        ),
                    )
                    self._db.execute("COMMIT")
                    stored = VocabRecord(**{**record.__dict__, "version": version})
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if stored is None:
            current = self.get(record.name)
            assert current is not None
            return current, False
        return stored, True

    def put_lint(self, name: str, etag: str, warnings: list[LintWarning]) -> None:
        with self._guard(write=True):
            self._db.execute(
                "UPDATE vocabs SET lint = ? WHERE name = ? AND etag = ?", (warnings_to_json(warnings), name, etag)
            )

    def delete(self, name: str) -> bool:
        with self._guard(write=True):
            return self._db.execute("DELETE FROM vocabs WHERE name = ?", (name,)).rowcount > 0

    def names(self) -> list[str]:
        with self._guard():
            return [r[0] for r in self._db.execute("SELECT name FROM vocabs ORDER BY name")]

    def summaries(self) -> list[VocabSummary]:
        # rows of the matrix = its bytes / (4 * dim): SQLite reads a blob's length from the record
        # header. No column stored after the matrix is read (updated_at would walk its overflow pages).
        with self._guard():
            rows = self._db.execute(
                "SELECT name, version, etag, text_model, length(matrix) / (4 * dim) FROM vocabs ORDER BY name"
            ).fetchall()
        return [VocabSummary(*row) for row in rows]

    def get_embeddings(self, text_model: str, prompts: Iterable[str]) -> dict[str, np.ndarray]:
        wanted = list(dict.fromkeys(prompts))
        found: dict[str, np.ndarray] = {}
        with self._guard(write=True):  # it marks what it found as used
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT prompt, vec FROM embeddings WHERE text_model = ? AND prompt IN ({marks})",
                    (text_model, *chunk),
                )
                found.update((p, vector(v)) for p, v in rows)
            now = time.time()
            hits = list(found)
            for i in range(0, len(hits), 500):  # used now (rows touched within the hour are not written)
                chunk = hits[i : i + 500]
                self._db.execute(
                    f"UPDATE embeddings SET used_at = ? WHERE text_model = ? AND used_at < ? "
                    f"AND prompt IN ({','.join('?' * len(chunk))})",
                    (now, text_model, now - base.TOUCH_EVERY_S, *chunk),
                )
        return found

    def put_embeddings(self, text_model: str, embeddings: dict[str, np.ndarray]) -> None:
        now = time.time()
        with self._guard(write=True):
            # one transaction: in autocommit each row was a commit (and an fsync) of its own, 5,000
            # of them under the store's lock, and every read waited (23.9 s with a slow disk)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO embeddings (text_model, prompt, vec, used_at) VALUES (?, ?, ?, ?)",
                    [(text_model, p, np.asarray(v, dtype=np.float32).tobytes(), now) for p, v in embeddings.items()],
                )
                query = "SELECT count(*) FROM embeddings WHERE text_model = ?"
                (count,) = self._db.execute(query, (text_model,)).fetchone()
                if count > self.max_prompts:  # the least recently used out
                    self._db.execute(
                        "DELETE FROM embeddings WHERE rowid IN (SELECT rowid FROM embeddings WHERE text_model = ? "
                        "ORDER BY used_at LIMIT ?)",
                        (text_model, count - self.max_prompts),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._guard():
            self._db.close()
