"""Where vocabularies and text embeddings live: SQLite (embedded default) or Redis (shared).

Both stores implement :class:`VocabStore` and run the same test suite. A version bump is atomic
(an SQLite write transaction, a Redis Lua script); a PUT whose content equals the stored one
changes nothing; ``if_match`` guards against lost updates.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from text4vis.engine.errors import PreconditionFailed, StoreUnavailable
from text4vis.engine.vocab.classifier import AbstainDefaults
from text4vis.engine.vocab.lint import LintWarning, warnings_from_json, warnings_to_json
from text4vis.engine.vocab.validation import STORED_PROMPTS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VocabRecord:
    name: str
    version: int
    etag: str
    text_model: str
    labels: tuple[str, ...]
    templates: tuple[str, ...]
    matrix: np.ndarray  # float32 [C, D]
    updated_at: float
    clean_labels: bool = False  # prompts from cleaned-up labels (opt-in; labels as written by default)
    abstain: AbstainDefaults | None = None  # the default for "none of these" (None: off unless asked)
    lint: tuple[LintWarning, ...] | None = None  # computed once per version, then stored with it (None: not yet)


@dataclass(frozen=True)
class VocabSummary:
    """What a listing shows, read without the labels or the matrix."""

    name: str
    version: int
    etag: str
    text_model: str
    num_labels: int


TOUCH_EVERY_S = 3600.0  # a read marks an embedding used at most this often (reads stay reads)


class VocabStore(ABC):
    """Storage only: validation and encoding live in the registry.

    The text-embedding cache (prompt -> embedding, per text model) is bounded: past
    ``max_prompts`` the least recently used are dropped (they are a cache: a vocabulary keeps its
    whole matrix, and a dropped prompt is encoded again if a later PUT needs it)."""

    def health(self) -> str | None:
        """What fails now, for ``/health/ready`` (None: nothing known to fail). May block briefly."""
        return None

    @abstractmethod
    def get(self, name: str) -> VocabRecord | None: ...

    @abstractmethod
    def head(self, name: str) -> tuple[int, str] | None:
        """``(version, etag)`` without the matrix: the cheap check made on every read."""

    @abstractmethod
    def put(self, record: VocabRecord, if_match: str | None = None) -> tuple[VocabRecord, bool]:
        """Store ``record`` as the next version; ``(stored, changed)``. ``record.version`` is ignored.

        Same etag as stored: nothing changes, the stored record comes back with ``changed=False``.
        """

    @abstractmethod
    def put_lint(self, name: str, etag: str, warnings: list[LintWarning]) -> None:
        """Keep a version's lint with it (nothing if ``name`` is no longer at ``etag``)."""

    @abstractmethod
    def delete(self, name: str) -> bool: ...

    @abstractmethod
    def names(self) -> list[str]: ...

    @abstractmethod
    def summaries(self) -> list[VocabSummary]:
        """Every vocabulary, sorted by name, in one query that reads no matrix."""

    @abstractmethod
    def get_embeddings(self, text_model: str, prompts: Iterable[str]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def put_embeddings(self, text_model: str, embeddings: dict[str, np.ndarray]) -> None: ...

    def subscribe(self, on_change: Callable[[str], None]) -> None:  # noqa: B027 - optional
        """Call ``on_change(name)`` when another replica changes a vocabulary (where supported)."""

    def close(self) -> None:  # noqa: B027 - optional
        pass


def _vec(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float32).copy()


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
                "abstain, lint FROM vocabs WHERE name = ?",
                (name,),
            ).fetchone()
        return None if row is None else self._record(row)

    @staticmethod
    def _record(row: tuple) -> VocabRecord:  # type: ignore[type-arg]
        name, version, etag, text_model, labels, templates, dim, matrix, updated_at, clean, abstain, lint = row
        return VocabRecord(
            name,
            version,
            etag,
            text_model,
            tuple(json.loads(labels)),
            tuple(json.loads(templates)),
            _vec(matrix).reshape(-1, dim),
            updated_at,
            bool(clean),
            AbstainDefaults.from_json(abstain),
            warnings_from_json(lint),
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
                        "matrix, updated_at, clean_labels, abstain, lint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                found.update((p, _vec(v)) for p, v in rows)
            now = time.time()
            hits = list(found)
            for i in range(0, len(hits), 500):  # used now (rows touched within the hour are not written)
                chunk = hits[i : i + 500]
                self._db.execute(
                    f"UPDATE embeddings SET used_at = ? WHERE text_model = ? AND used_at < ? "
                    f"AND prompt IN ({','.join('?' * len(chunk))})",
                    (now, text_model, now - TOUCH_EVERY_S, *chunk),
                )
        return found

    def put_embeddings(self, text_model: str, embeddings: dict[str, np.ndarray]) -> None:
        now = time.time()
        with self._guard(write=True):
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

    def close(self) -> None:
        with self._guard():
            self._db.close()


_PUT_SCRIPT = """
local cur = redis.call('HGET', KEYS[1], 'etag')
if ARGV[1] ~= '' and cur ~= ARGV[1] then return {-1, 0} end
if cur == ARGV[2] then return {0, tonumber(redis.call('HGET', KEYS[1], 'version'))} end
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'etag', ARGV[2], 'text_model', ARGV[3], 'labels', ARGV[4], 'templates', ARGV[5],
           'dim', ARGV[6], 'matrix', ARGV[7], 'updated_at', ARGV[8], 'clean_labels', ARGV[11], 'abstain', ARGV[12],
           'lint', ARGV[13])
redis.call('SADD', KEYS[2], ARGV[9])
redis.call('PUBLISH', ARGV[10], ARGV[9])
return {1, v}
"""

_PUT_LINT_SCRIPT = """
if redis.call('HGET', KEYS[1], 'etag') == ARGV[1] then redis.call('HSET', KEYS[1], 'lint', ARGV[2]) end
return 0
"""

_DELETE_SCRIPT = """
local n = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if n > 0 then redis.call('PUBLISH', ARGV[2], ARGV[1]) end
return n
"""


class _Outage:
    """Redis reachable or not, logged once per change (one line when it goes, one when it is
    back), never a traceback per request; every Redis error becomes :class:`StoreUnavailable`."""

    def __init__(self, url: str) -> None:
        self.where = _redacted(url)
        self.down = False
        self._lock = threading.Lock()

    @contextmanager
    def guard(self) -> Iterator[None]:
        import redis

        try:
            yield
        except (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.BusyLoadingError,
        ) as exc:
            self.failed(exc)
            raise StoreUnavailable(
                f"the vocabulary store (Redis at {self.where}) is unreachable; retry shortly"
            ) from None
        self.recovered()

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            if self.down:
                return
            self.down = True
        log.warning(
            "Redis at %s is unreachable (%s): serving the vocabularies held in memory; "
            "changes are refused until it is back",
            self.where,
            exc,
        )

    def recovered(self) -> None:
        if not self.down:  # the common case: no lock
            return
        with self._lock:
            if not self.down:
                return
            self.down = False
        log.info("Redis at %s is reachable again", self.where)


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


class RedisStore(VocabStore):
    """Shared by every replica: vocabularies as hashes, embeddings in one hash per text model.

    Every call raises :class:`StoreUnavailable` while Redis cannot be reached (the registry then
    serves what it holds in memory); the change listener reconnects with backoff."""

    def __init__(self, url: str, prefix: str = "t4v", max_prompts: int = STORED_PROMPTS) -> None:
        import redis

        self.max_prompts = max_prompts

        self._redis: Any = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)  # bytes replies
        self.outage = _Outage(url)
        try:
            self._redis.ping()
        except (redis.exceptions.RedisError, OSError) as exc:
            raise StoreUnavailable(f"cannot reach Redis at {self.outage.where} ({exc})") from None
        self._prefix = prefix
        self._channel = f"{prefix}:changes"
        self._put = self._redis.register_script(_PUT_SCRIPT)
        self._delete = self._redis.register_script(_DELETE_SCRIPT)
        self._put_lint = self._redis.register_script(_PUT_LINT_SCRIPT)
        self._pubsub_thread: Any = None
        self._pubsub: Any = None

    def _key(self, name: str) -> str:
        return f"{self._prefix}:vocab:{name}"

    @property
    def _names_key(self) -> str:
        return f"{self._prefix}:vocabs"

    def get(self, name: str) -> VocabRecord | None:
        with self.outage.guard():
            h = self._redis.hgetall(self._key(name))
            if not h:
                return None
            dim = int(h[b"dim"])
            return VocabRecord(
                name,
                int(h[b"version"]),
                h[b"etag"].decode(),
                h[b"text_model"].decode(),
                tuple(json.loads(h[b"labels"])),
                tuple(json.loads(h[b"templates"])),
                _vec(h[b"matrix"]).reshape(-1, dim),
                float(h[b"updated_at"]),
                h.get(b"clean_labels") == b"1",
                AbstainDefaults.from_json(h.get(b"abstain")),
                warnings_from_json(h.get(b"lint")),
            )

    def head(self, name: str) -> tuple[int, str] | None:
        with self.outage.guard():
            version, etag = self._redis.hmget(self._key(name), ["version", "etag"])
            return None if version is None or etag is None else (int(version), etag.decode())

    def put(self, record: VocabRecord, if_match: str | None = None) -> tuple[VocabRecord, bool]:
        with self.outage.guard():
            status, version = self._put(
                keys=[self._key(record.name), self._names_key],
                args=[
                    if_match or "",
                    record.etag,
                    record.text_model,
                    json.dumps(record.labels),
                    json.dumps(record.templates),
                    record.matrix.shape[1],
                    np.ascontiguousarray(record.matrix, dtype=np.float32).tobytes(),
                    record.updated_at,
                    record.name,
                    self._channel,
                    "1" if record.clean_labels else "0",
                    record.abstain.to_json() if record.abstain else "",
                    "" if record.lint is None else warnings_to_json(list(record.lint)),
                ],
            )
            if status == -1:
                raise PreconditionFailed(f"vocabulary {record.name!r} is not at ETag {if_match}")
            if status == 0:
                current = self.get(record.name)
                assert current is not None
                return current, False
            return VocabRecord(**{**record.__dict__, "version": int(version)}), True

    def put_lint(self, name: str, etag: str, warnings: list[LintWarning]) -> None:
        with self.outage.guard():
            self._put_lint(keys=[self._key(name)], args=[etag, warnings_to_json(warnings)])

    def delete(self, name: str) -> bool:
        with self.outage.guard():
            return bool(self._delete(keys=[self._key(name), self._names_key], args=[name, self._channel]))

    def names(self) -> list[str]:
        with self.outage.guard():
            return sorted(n.decode() for n in self._redis.smembers(self._names_key))

    def summaries(self) -> list[VocabSummary]:
        with self.outage.guard():
            names = self.names()
            pipe = self._redis.pipeline(transaction=False)
            for name in names:  # HSTRLEN: the matrix's size, not its bytes
                pipe.hmget(self._key(name), ["version", "etag", "text_model", "dim"])
                pipe.hstrlen(self._key(name), "matrix")
            replies = pipe.execute()
            out = []
            for name, fields, nbytes in zip(names, replies[::2], replies[1::2], strict=True):
                version, etag, text_model, dim = fields
                if version is None:  # deleted between SMEMBERS and HMGET
                    continue
                out.append(
                    VocabSummary(name, int(version), etag.decode(), text_model.decode(), int(nbytes) // (4 * int(dim)))
                )
            return out

    def get_embeddings(self, text_model: str, prompts: Iterable[str]) -> dict[str, np.ndarray]:
        with self.outage.guard():
            wanted = list(dict.fromkeys(prompts))
            if not wanted:
                return {}
            values = self._redis.hmget(f"{self._prefix}:emb:{text_model}", wanted)
            found = {p: _vec(v) for p, v in zip(wanted, values, strict=True) if v is not None}
            if found:  # used now: GT keeps the later of two replicas' times
                now = time.time()
                self._redis.zadd(f"{self._prefix}:emb-used:{text_model}", dict.fromkeys(found, now), xx=True, gt=True)
            return found

    def put_embeddings(self, text_model: str, embeddings: dict[str, np.ndarray]) -> None:
        with self.outage.guard():
            if not embeddings:
                return
            key, used = f"{self._prefix}:emb:{text_model}", f"{self._prefix}:emb-used:{text_model}"
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(key, mapping={p: np.asarray(v, dtype=np.float32).tobytes() for p, v in embeddings.items()})
            pipe.zadd(used, dict.fromkeys(embeddings, time.time()))
            pipe.zcard(used)
            count = pipe.execute()[-1]
            if count > self.max_prompts:  # the least recently used out (two replicas may both trim: no harm)
                oldest = self._redis.zrange(used, 0, count - self.max_prompts - 1)
                if oldest:
                    pipe = self._redis.pipeline(transaction=True)
                    pipe.hdel(key, *oldest)
                    pipe.zrem(used, *oldest)
                    pipe.execute()

    def subscribe(self, on_change: Callable[[str], None]) -> None:
        """Change notices from other replicas, on a thread that outlives outages: while Redis is
        away it retries with backoff (0.5 s doubling to 10 s), then resubscribes."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(**{self._channel: lambda message: on_change(message["data"].decode())})
        self._pubsub = pubsub
        backoff = {"s": 0.5, "last": 0.0}

        def on_error(exc: BaseException, pubsub: Any, thread: Any) -> None:
            self.outage.failed(exc)
            now = time.monotonic()
            if now - backoff["last"] > 30:  # a new outage: start again from 0.5 s
                backoff["s"] = 0.5
            backoff["last"] = now
            time.sleep(backoff["s"])  # the next read reconnects and resubscribes
            backoff["s"] = min(10.0, backoff["s"] * 2)

        self._pubsub_thread = pubsub.run_in_thread(sleep_time=0.2, daemon=True, exception_handler=on_error)

    def close(self) -> None:
        if self._pubsub_thread is not None:
            self._pubsub_thread.stop()
            self._pubsub_thread.join(timeout=2)
            self._pubsub.close()
            self._pubsub_thread = None
        self._redis.close()
