"""``t4v serve`` and ``t4v keys``: the HTTP server, and the API keys it checks."""

from __future__ import annotations

import logging
import signal
import socket
import tempfile
from typing import Any

import typer

from text4vis.models.cli_options import with_options
from text4vis.models.errors import T4VError
from text4vis.server.cli_common import fail, validated
from text4vis.server.settings import Settings


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.command()(serve)


keys_app = typer.Typer(no_args_is_help=True, help="API keys.")


@keys_app.command("new")
def keys_new() -> None:
    """A new random API key and its SHA-256 digest: give the key to the client, put the digest
    in the file T4V_API_KEY_FILE names (one per line; the server never stores the key)."""
    import secrets

    from text4vis.server.auth import key_digest

    key = "t4v_" + secrets.token_urlsafe(32)
    typer.echo(f"key:    {key}")
    typer.echo(f"digest: {key_digest(key)}")


@with_options(Settings, env=True)
def serve(options: dict[str, Any] | None = None) -> None:
    """Start the HTTP server. Options override the T4V_* environment; every one is in docs/configuration.md."""
    import uvicorn

    from text4vis.engine.runtime.build import build_runtime
    from text4vis.server.app import create_app

    logging.getLogger().setLevel(logging.INFO)  # a server's log says what it loads and runs
    for name in Settings.unknown_variables():
        logging.getLogger(__name__).warning("%s is set but is no setting of t4v serve: ignored", name)
    try:
        settings = validated(Settings, options or {})
        _check_port(settings.host, settings.port)  # a busy port fails in a second, not after the model loads
        from text4vis.engine.archive.store import open_archive

        if settings.redis_url:
            _check_redis(settings.redis_url)
        _check_data_dir(settings)
        open_archive(settings.archive_location())  # an archive that cannot be opened: one line, before the model loads
        runtime = build_runtime(settings.model_options(), settings.max_batch_frames)
    except (T4VError, ValueError, OSError) as exc:
        fail(exc)
    app = create_app(settings, runtime)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:  # SIGTERM, SIGINT
            app.state.server.begin_shutdown()  # streamed answers end with an error line
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    from text4vis.server.connections import ConnectionLimits, RateLimitedRecords, bounded_protocol

    _fit_descriptors(settings.max_connections)
    # asyncio logs each failed accept (out of file descriptors) with a traceback: a line per 10 s
    logging.getLogger("asyncio").addFilter(RateLimitedRecords())
    limits = ConnectionLimits(settings.max_connections, settings.max_connections_per_client)
    app.state.server.connections = limits  # /metrics reads what it refused
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # h11, with a deadline for each request's head and a bound on the open connections
        http=bounded_protocol(settings.header_timeout_s, limits),
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        log_level="info",
    )
    if hasattr(signal, "SIGHUP"):  # read the API key file again (a revoked key), as nginx reloads
        signal.signal(signal.SIGHUP, lambda _sig, _frame: app.state.server.reload_keys())
    Server(config).run()


SPARE_DESCRIPTORS = 512  # files the server opens beside its connections: spool files, the stores, workers' pipes


def _fit_descriptors(max_connections: int) -> None:
    """Raise the soft file-descriptor limit to hold ``max_connections`` and the server's own files
    (as nginx's ``worker_rlimit_nofile``); a hard limit below that is said at start."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_connections + SPARE_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            logging.getLogger(__name__).warning(
                "the file-descriptor limit (%d) is below max_connections + %d: lower max_connections or raise "
                "the hard limit (ulimit -Hn)",
                new,
                SPARE_DESCRIPTORS,
            )


def _check_port(host: str, port: int) -> None:
    """Bind ``host:port`` once and let go: taken now, it fails before the model loads (uvicorn
    binds it again once the model is loaded)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (--port, T4V_PORT)") from None


def _check_data_dir(settings: Settings) -> None:
    """The upload spool and the SQLite store can be written (a read-only data dir, a corrupt
    vocab.db): one line now, not a server that answers 503 to everything after the model loads."""
    spool = settings.data_dir / "uploads"
    try:
        spool.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=spool, prefix=".probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or exc
        raise OSError(f"the data directory {settings.data_dir} is not writable: {reason} (--data-dir)") from None
    if not settings.redis_url:
        from text4vis.engine.vocab.stores.sqlite import SQLiteStore

        SQLiteStore(settings.data_dir / "vocab.db").close()


def _check_redis(url: str) -> None:
    """Reach Redis before loading a model: an unreachable --redis-url fails in seconds, in one line."""
    from text4vis.engine.vocab.stores.redis import RedisStore

    RedisStore(url).close()
