"""Servers for tests: in-process apps (a tiny model, the real batcher and registry, httpx over
ASGI) and real `t4v serve` processes (uvicorn on a free port)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from tests.processes import alive, children_of
from tests.redis_server import free_port
from text4vis.engine.facade import ClassifyResult
from text4vis.engine.offline import classify_files
from text4vis.engine.options import ModelOptions
from text4vis.engine.request import ClassifyRequest, ClipSpec, RequestLimits
from text4vis.engine.runtime.build import Runtime, build_runtime
from text4vis.engine.vocab.registry import VocabRegistry
from text4vis.engine.vocab.stores.sqlite import SQLiteStore
from text4vis.models.clip_loader import TINY_ARCH
from text4vis.server.app import create_app
from text4vis.server.settings import Settings


def classify_offline(
    runtime: Runtime,
    labels: list[str],
    paths: list[Path],
    *,
    top_k: int = 5,
    frames: int = 8,
    views: str = "1x1",
    on_done: Callable[[], None] | None = None,
) -> list[ClassifyResult | BaseException]:
    """``t4v classify``'s flow (classify_files) on ad-hoc labels, offline."""
    registry = VocabRegistry(SQLiteStore(Path(":memory:")), runtime.text_encoder)
    request = ClassifyRequest(labels=tuple(labels), clip=ClipSpec(frames, views), top_k=top_k)
    limits = RequestLimits(max_frames=64, max_views="16x3")
    return classify_files(runtime, registry, request, paths, limits=limits, on_done=on_done)


def tiny_runtime(checkpoint: Path) -> Runtime:
    return build_runtime(ModelOptions(model=TINY_ARCH, clip_checkpoint=checkpoint, device="cpu"))


def settings(data_dir: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {"data_dir": data_dir, "decode_workers": 0, "max_delay_ms": 20.0}
    return Settings(**{**base, **overrides})


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Lifespan started, warm-up awaited, a client bound to the app."""
    async with app.router.lifespan_context(app):
        await app.state.server.wait_ready()
        assert app.state.server.ready, app.state.server.error
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t4v") as client:
            yield client


def make_app(data_dir: Path, runtime: Runtime, **overrides: object) -> FastAPI:
    return create_app(settings(data_dir, **overrides), runtime)


@contextmanager
def serve(tmp: Path, checkpoint: Path, *extra: str) -> Iterator[str]:
    """A real `t4v serve` (tiny weights, one decode process unless ``extra`` says otherwise): its URL."""
    with serve_process(tmp, checkpoint, *extra) as (url, _):
        yield url


@contextmanager
def serve_process(tmp: Path, checkpoint: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`serve`, with the server's process. On exit: SIGTERM, a graceful shutdown, and no
    process of the server (decode workers) left running."""
    port = free_port()
    log = (tmp / f"serve-{port}.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "text4vis.server.cli",
            "serve",
            "--model",
            TINY_ARCH,
            "--clip-checkpoint",
            str(checkpoint),
            "--port",
            str(port),
            "--data-dir",
            str(tmp / f"data-{port}"),
            "--decode-workers",
            "1",
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{(tmp / f'serve-{port}.log').read_text()}")
            time.sleep(0.2)
        workers = children_of(proc.pid)  # started before readiness
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        log.close()
        assert not alive(workers), f"processes of the server outlived it: {alive(workers)}"
        # uvicorn finishes its graceful shutdown, then re-raises the signal it caught
        assert code in (0, -signal.SIGTERM), (tmp / f"serve-{port}.log").read_text()
        assert "Application shutdown complete" in (tmp / f"serve-{port}.log").read_text()
