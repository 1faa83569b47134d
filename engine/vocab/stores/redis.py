"""The shared store: Redis (``T4V_REDIS_URL``), for every replica. A version bump is one Lua
script; changes are published so that other replicas drop what they hold; an outage is logged
once and every call answers :class:`StoreUnavailable` meanwhile (the registry then serves what it
holds in memory)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from text4vis.engine.errors import PreconditionFailed, StoreUnavailable
from text4vis.engine.request import AbstainDefaults
from text4vis.engine.vocab.few_shot import FewShot
from text4vis.engine.vocab.record import LintWarning, VocabRecord, VocabSummary, warnings_from_json, warnings_to_json
from text4vis.engine.vocab.stores.base import VocabStore, vector
from text4vis.engine.vocab.validation import STORED_PROMPTS

log = logging.getLogger(__name__)


_PUT_SCRIPT = """
local cur = redis.call('HGET', KEYS[1], 'etag')
if ARGV[1] ~= '' and cur ~= ARGV[1] then return {-1, 0} end
if cur == ARGV[2] then return {0, tonumber(redis.call('HGET', KEYS[1], 'version'))} end
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'etag', ARGV[2], 'text_model', ARGV[3], 'labels', ARGV[4], 'templates', ARGV[5],
           'dim', ARGV[6], 'matrix', ARGV[7], 'updated_at', ARGV[8], 'clean_labels', ARGV[11], 'abstain', ARGV[12],
           'lint', ARGV[13], 'few_shot', ARGV[14])
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
                vector(h[b"matrix"]).reshape(-1, dim),
                float(h[b"updated_at"]),
                h.get(b"clean_labels") == b"1",
                AbstainDefaults.from_json(h.get(b"abstain")),
                warnings_from_json(h.get(b"lint")),
                FewShot.from_bytes(h.get(b"few_shot")),
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
                    b"" if record.few_shot is None else record.few_shot.to_bytes(),
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
            found = {p: vector(v) for p, v in zip(wanted, values, strict=True) if v is not None}
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
