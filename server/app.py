"""The FastAPI application: routes, error mapping, limits, metrics, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from text4vis.engine.runtime.build import Runtime
from text4vis.server import errors
from text4vis.server.deps import KEY_GUARDS
from text4vis.server.middleware import AllowedHosts, BodyLimit, KeyFirst, RelativeRedirects, RequestMetrics
from text4vis.server.routes import archive, classify, health, timeline, vocab
from text4vis.server.settings import Settings
from text4vis.server.state import ServerState

STATIC = Path(__file__).parent / "static"
JSON_BODY_LIMIT = 8 * 2**20  # vocabularies are JSON; only the upload routes take large bodies
UPLOAD_PATHS = frozenset({"/classify", "/classify/timeline", "/archive/videos"})


def _uploads(path: str) -> bool:
    """Whether ``path`` takes a video upload (the large body limit)."""
    return path in UPLOAD_PATHS or (path.startswith("/vocab/") and path.endswith("/examples"))


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. ``runtime`` may be given already loaded (``t4v serve`` loads it first to
    fail fast); otherwise it loads in the background after start-up."""
    settings = settings or Settings()
    service = ServerState(settings, runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPIOffline(  # FastAPI whose /docs and /redoc load their assets from this server, not a CDN
        title="text4vis-serve",
        favicon_url="/static/favicon.svg",
        version="0.1.0",
        description="Video and image classification against vocabularies of plain-text class names.",
        lifespan=lifespan,
    )
    app.state.server = service
    errors.install(app)
    app.include_router(classify.router)
    app.include_router(timeline.router)
    app.include_router(vocab.router)
    app.include_router(archive.router)
    app.include_router(health.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:  # browsers ask for it whatever the page's <link rel=icon> says
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    limit, pace = settings.max_upload_bytes, settings.upload_pace()
    app.add_middleware(
        BodyLimit,
        limit_for=lambda path: limit if _uploads(path) else JSON_BODY_LIMIT,
        pace_for=lambda path: None if _uploads(path) else pace,  # an upload's pace is kept as it is parsed
    )
    app.add_middleware(KeyFirst, router=app.router, guards=KEY_GUARDS, state=service)
    app.add_middleware(RelativeRedirects)
    if "*" not in settings.allowed_hosts:
        app.add_middleware(AllowedHosts, hosts=settings.allowed_hosts)
    app.add_middleware(RequestMetrics, metrics=service.metrics)
    return app
