"""In-process app fixtures: a tiny model, the real batcher and registry, httpx over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from engine.runtime import ModelOptions, Runtime, build_runtime
from models.clip_loader import TINY_ARCH
from server.app import create_app
from server.settings import Settings


def tiny_runtime(checkpoint: Path) -> Runtime:
    return build_runtime(ModelOptions(arch=TINY_ARCH, clip_checkpoint=checkpoint, device="cpu"))


def settings(data_dir: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {"data_dir": data_dir, "decode_workers": 0, "max_delay_ms": 20.0}
    return Settings(**{**base, **overrides})


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Lifespan started, warm-up awaited, a client bound to the app."""
    async with app.router.lifespan_context(app):
        await app.state.service.wait_ready()
        assert app.state.service.ready, app.state.service.error
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t4v") as client:
            yield client


def make_app(data_dir: Path, runtime: Runtime, **overrides: object) -> FastAPI:
    return create_app(settings(data_dir, **overrides), runtime)
