"""Everything a running server holds: the runtime, the registry, the archive and the engine over
them; start and stop."""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from starlette.requests import Request

from text4vis.engine.archive.store import open_archive
from text4vis.engine.facade import Engine
from text4vis.engine.flow.options import FlowHooks
from text4vis.engine.runtime.build import Runtime, build_runtime
from text4vis.engine.vocab.registry import VocabRegistry
from text4vis.engine.vocab.stores.base import VocabStore
from text4vis.engine.vocab.stores.redis import RedisStore
from text4vis.engine.vocab.stores.sqlite import SQLiteStore
from text4vis.engine.vocab.text_gate import TextGate
from text4vis.models.presets import preset_labels
from text4vis.server.auth import ApiKeys
from text4vis.server.connections import ConnectionLimits
from text4vis.server.metrics import Metrics
from text4vis.server.settings import Settings
from text4vis.server.uploads import Upload, admitted_upload

log = logging.getLogger(__name__)
BLOCKING_THREADS = 64


class ServerState:
    def __init__(self, settings: Settings, runtime: Runtime | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.runtime = runtime
        self.registry: VocabRegistry | None = None
        self.engine: Engine | None = None
        self.ready = False
        self.error: str | None = None
        self._startup: asyncio.Task[None] | None = None
        self.upload_dir = settings.data_dir / "uploads"
        self.api_keys = ApiKeys(settings.api_keys, settings.api_key_file)
        self.stopping = asyncio.Event()  # set at SIGTERM: streamed answers end with an error line
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connections: ConnectionLimits | None = None  # t4v serve's bounds (server/connections.py)

    def begin_shutdown(self) -> None:
        """The server was told to stop (callable from a signal handler)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.stopping.set)

    def reload_keys(self) -> None:
        """SIGHUP: read the API key file again (callable from a signal handler)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.api_keys.reload)

    async def start(self) -> None:
        """Begin loading in the background: /health/live answers at once, /health/ready when warm."""
        self._loop = asyncio.get_running_loop()
        # threads for the blocking calls (to_thread): asyncio's default of cores + 4 let six requests
        # waiting on the text encoder hold every one, and uploads, health checks and reads waited
        self._loop.set_default_executor(ThreadPoolExecutor(max_workers=BLOCKING_THREADS, thread_name_prefix="blocking"))
        s = self.settings
        if self.api_keys.enabled:
            needs = ["PUT/DELETE /vocab", "archive writes"]
            needs += ["/classify"] if s.auth_classify else []
            needs += ["/metrics"] if s.auth_metrics else []
            source = f" (key file {s.api_key_file}: read again when it changes or on SIGHUP)" if s.api_key_file else ""
            log.info("API keys: %d active%s; needed for %s", self.api_keys.count, source, ", ".join(needs))
        else:
            log.info("no API keys configured: every route is open (T4V_API_KEY_FILE to require keys)")
        self._startup = asyncio.create_task(self._load())

    async def _load(self) -> None:
        try:
            if self.runtime is None:
                options, batch = self.settings.model_options(), self.settings.max_batch_frames
                self.runtime = await asyncio.to_thread(build_runtime, options, batch)
            runtime = self.runtime
            self.upload_dir.mkdir(parents=True, exist_ok=True)
            store = await asyncio.to_thread(self._open_store)
            archive = await asyncio.to_thread(open_archive, self.settings.archive_location())
            self.registry = VocabRegistry(
                store,
                runtime.text_encoder,
                self.settings.max_labels,
                on_embedding_cache=self.metrics.on_embedding_cache,
                ad_hoc_cache_prompts=self.settings.ad_hoc_cache_prompts,
                on_prompts_encoded=self.metrics.prompts_encoded.inc,
                max_prompts=self.settings.max_prompts,
                max_ad_hoc_prompts=self.settings.max_ad_hoc_prompts,
                text_gate=TextGate(self.settings.max_queue_wait_s),
            )
            s, m = self.settings, self.metrics
            self.engine = Engine(
                runtime,
                self.registry,
                archive,
                options=s.flow_options(),
                limits=s.request_limits(),
                hooks=FlowHooks(
                    on_batch=m.on_batch, on_decoded=m.decode_seconds.observe, on_worker_replaced=m.on_worker_replaced
                ),
                max_scans=s.max_archive_scans,
                maintain_every_s=s.archive_maintain_s,
                search_in_memory=True,
            )
            log.info("starting the encoder (warm-up batch) and %d decode workers", s.decode_workers)
            await self.engine.start()
            await asyncio.to_thread(self._register_startup_vocabs)
            self.ready = True
            log.info("ready: %s on %s (%s)", runtime.info.model_id, runtime.info.device, runtime.info.backend)
        except Exception as exc:  # noqa: BLE001 - reported by /health/ready and the log
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("start-up failed")

    def admitted_upload(self, request: Request, engine: Engine) -> AbstractAsyncContextManager[Upload]:
        """Admission, then the upload at the server's pace (``server/uploads.py``)."""
        return admitted_upload(request, engine, self.upload_dir, self.settings.upload_pace())

    def time_left_s(self, upload: Upload) -> float:
        """What the upload left of the request's deadline."""
        return max(self.settings.request_timeout_s - upload.seconds, 1e-3)

    def _open_store(self) -> VocabStore:
        if self.settings.redis_url:
            return RedisStore(self.settings.redis_url, max_prompts=self.settings.stored_prompts)
        return SQLiteStore(self.settings.data_dir / "vocab.db", max_prompts=self.settings.stored_prompts)

    def _register_startup_vocabs(self) -> None:
        assert self.registry is not None
        for name in self.settings.presets:
            self.registry.put(name, preset_labels(name))
        if self.settings.vocab_file is not None:
            for name, spec in json.loads(Path(self.settings.vocab_file).read_text()).items():
                self.registry.put(name, spec["labels"], spec.get("templates"))

    async def wait_ready(self) -> None:
        if self._startup is not None:
            await self._startup

    async def stop(self) -> None:
        if self._startup is not None and not self._startup.done():
            self._startup.cancel()
        if self.engine is not None:
            await self.engine.stop()  # index=true rows still queued are committed
        if self.registry is not None:
            self.registry.store.close()
