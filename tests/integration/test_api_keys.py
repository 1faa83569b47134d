"""API keys: PUT/DELETE /vocab need one when keys are set; /classify and /metrics when asked to;
/health always open; keys compared by digest, never logged; the client SDK sends them."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from starlette.requests import Request

from tests.media import generated_videos
from tests.server_helpers import make_app, running
from text4vis.engine.runtime.build import Runtime
from text4vis.server.auth import CHECK_EVERY_S, ApiKeys, Unauthorized, key_digest
from text4vis.server.settings import Settings

KEY = "s3cret-key-for-tests"


def _upload() -> dict[str, tuple[str, bytes, str]]:
    clip = generated_videos()["clip_a.mp4"]
    return {"file": (clip.name, clip.read_bytes(), "video/mp4")}


def test_changes_need_a_key_and_reads_do_not(
    tmp_path: Path, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def go() -> None:
        async with running(make_app(tmp_path, runtime, api_keys=[KEY, "another"])) as c:
            missing = await c.put("/vocab/k", json={"labels": ["a", "b"]})
            assert missing.status_code == 401 and missing.headers["www-authenticate"] == 'Bearer realm="t4v"'
            assert missing.json() == {"detail": "this endpoint needs an API key: send Authorization: Bearer <key>"}
            wrong = await c.put("/vocab/k", json={"labels": ["a", "b"]}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.json()["detail"] == "the API key is not valid"
            bad_body = await c.put("/vocab/k", json={"labels": []})
            assert bad_body.status_code == 401  # who you are before what you sent
            ok = await c.put("/vocab/k", json={"labels": ["a", "b"]}, headers={"Authorization": f"Bearer {KEY}"})
            assert ok.status_code == 201, ok.text
            assert (
                await c.put("/vocab/k", json={"labels": ["a", "b", "c"]}, headers={"X-API-Key": "another"})
            ).status_code == 200
            assert (await c.get("/vocab")).status_code == 200 and (await c.get("/vocab/k")).status_code == 200
            assert (await c.post("/classify", files=_upload(), data={"vocab": "k"})).status_code == 200
            assert (await c.get("/metrics")).status_code == 200
            assert (await c.get("/health/ready")).status_code == 200
            assert (await c.delete("/vocab/k")).status_code == 401
            assert (await c.delete("/vocab/k", headers={"Authorization": f"bearer {KEY}"})).status_code == 204

    asyncio.run(go())
    assert KEY not in caplog.text


def test_classify_and_metrics_can_require_a_key(tmp_path: Path, runtime: Runtime) -> None:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"# the team's key\n{digest}  # added 2026-11-30\n")

    async def go() -> None:
        app = make_app(tmp_path, runtime, api_key_file=key_file, auth_classify=True, auth_metrics=True)
        async with running(app) as c:
            assert (await c.post("/classify", files=_upload(), data={"labels": '["a", "b"]'})).status_code == 401
            authed = await c.post(
                "/classify", files=_upload(), data={"labels": '["a", "b"]'}, headers={"Authorization": f"Bearer {KEY}"}
            )
            assert authed.status_code == 200, authed.text
            assert (await c.get("/metrics")).status_code == 401
            assert (await c.get("/metrics", headers={"X-API-Key": KEY})).status_code == 200
            assert (await c.get("/health/live")).status_code == 200

    asyncio.run(go())


def test_a_key_file_holds_digests_only(tmp_path: Path) -> None:
    bad = tmp_path / "keys.txt"
    bad.write_text("not-a-digest\n")
    with pytest.raises(ValueError, match="line 1: every line must be a SHA-256 hex digest"):
        ApiKeys(key_file=bad)
    assert not ApiKeys().enabled and ApiKeys(["k"]).enabled


def test_keys_configured_but_empty_refuse_to_start(tmp_path: Path) -> None:
    """Auth fails closed: a setting that names keys but holds none is an error, never an open server."""
    revoked = tmp_path / "keys.txt"
    revoked.write_text(f"# all revoked\n# {'0' * 64}\n\n")
    with pytest.raises(ValidationError, match="T4V_API_KEYS .* is set but holds no key"):
        Settings(api_keys=" , ")
    with pytest.raises(ValidationError, match="holds no active key digest"):
        Settings(api_key_file=revoked)
    with pytest.raises(ValidationError, match="--auth-classify / --auth-metrics need API keys"):
        Settings(auth_metrics=True)
    assert Settings(api_keys="").api_keys == [] and Settings(api_keys=" a ,b").api_keys == ["a", "b"]


def test_the_key_file_is_read_again_when_it_changes(
    tmp_path: Path, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """A revoked digest takes effect without a restart; a key file broken while serving refuses
    every key (fail closed) and logs why, until it is fixed."""
    other = "the-other-key"
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"{key_digest(KEY)}\n{key_digest(other)}\n")

    async def put(c: httpx.AsyncClient, key: str) -> int:
        return (await c.put("/vocab/k", json={"labels": ["a", "b"]}, headers={"X-API-Key": key})).status_code

    async def go() -> None:
        async with running(make_app(tmp_path, runtime, api_key_file=key_file)) as c:
            assert await put(c, KEY) in (200, 201) and await put(c, other) == 200
            key_file.write_text(f"# {key_digest(KEY)}  revoked\n{key_digest(other)}\n")
            await asyncio.sleep(CHECK_EVERY_S + 0.1)
            assert await put(c, KEY) == 401 and await put(c, other) == 200
            key_file.write_text("# all revoked\n")
            await asyncio.sleep(CHECK_EVERY_S + 0.1)
            assert await put(c, KEY) == 401 and await put(c, other) == 401
            assert (await c.put("/vocab/k", json={"labels": ["a"]})).status_code == 401
            key_file.write_text(f"{key_digest(KEY)}\n")
            await asyncio.sleep(CHECK_EVERY_S + 0.1)
            assert await put(c, KEY) == 200 and await put(c, other) == 401

    caplog.set_level(logging.INFO)
    asyncio.run(go())
    assert "holds no active key digest" in caplog.text and "no key from that file is accepted" in caplog.text


def test_reload_reads_the_file_even_when_its_stat_looks_the_same(tmp_path: Path) -> None:
    """SIGHUP's path: ApiKeys.reload() reads the file whatever its size and mtime say."""
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"{key_digest('a')}\n")
    stat = key_file.stat()
    keys = ApiKeys(key_file=key_file, clock=lambda: 0.0)  # the clock never moves: no stat check
    key_file.write_text(f"{key_digest('b')}\n")  # the same size
    os.utime(key_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _accepts(keys, "a") and not _accepts(keys, "b")
    keys.reload()
    assert not _accepts(keys, "a") and _accepts(keys, "b")


def _accepts(keys: ApiKeys, key: str) -> bool:
    request = Request({"type": "http", "headers": [(b"x-api-key", key.encode())]})
    try:
        keys.check(request)
    except Unauthorized:
        return False
    return True


def test_the_client_sends_its_key(tmp_path: Path, runtime: Runtime) -> None:
    from t4v_client import AsyncClient, Unauthorized

    async def go() -> None:
        async with running(make_app(tmp_path, runtime, api_keys=[KEY])) as c:
            transport = httpx.ASGITransport(app=c._transport.app)  # type: ignore[attr-defined]
            anonymous = AsyncClient("http://t4v", transport=transport, retries=0)
            with pytest.raises(Unauthorized, match="needs an API key"):
                await anonymous.put_vocab("sdk", ["a", "b"])
            keyed = AsyncClient("http://t4v", transport=transport, retries=0, api_key=KEY)
            assert (await keyed.put_vocab("sdk", ["a", "b"])).version == 1
            await anonymous.close()
            await keyed.close()

    asyncio.run(go())


# Routes anyone may call whatever the settings: health, the model's description, the docs and the
# page, and vocabulary reads (their names and labels: what the page shows before any key is typed).
OPEN = {
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/models"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/"),
    ("GET", "/favicon.ico"),
    ("GET", "/vocab"),
    ("GET", "/vocab/{name}"),
    ("GET", "/vocab/{name}/similarity"),
}


def test_every_route_needs_a_key_unless_it_is_listed_open(tmp_path: Path) -> None:
    """With keys, --auth-classify and --auth-metrics, every route of the app, enumerated (a route
    added later is checked too), answers 401 without a key, before its body is read and before
    the model is even loaded, unless it is in OPEN; the archive's reads among them (they answered
    200 with names, metadata and thumbnails)."""
    from fastapi.routing import iter_route_contexts

    from text4vis.server.app import create_app

    app = create_app(
        Settings(data_dir=tmp_path, api_keys=[KEY], auth_classify=True, auth_metrics=True, decode_workers=0)
    )
    routes = [
        (method, ctx.path)
        for ctx in iter_route_contexts(app.routes)
        for method in sorted(ctx.methods or ())
        if method != "HEAD"
    ]
    assert ("GET", "/archive/videos") in routes and ("GET", "/archive/stats") in routes

    async def go() -> dict[tuple[str, str], int]:
        transport = httpx.ASGITransport(app=app)  # no lifespan: nothing loads, the key comes first
        async with httpx.AsyncClient(transport=transport, base_url="http://t4v") as c:
            return {
                (method, path): (
                    await c.request(method, path.replace("{name}", "v").replace("{row_id}", "r"))
                ).status_code
                for method, path in routes
                if (method, path) not in OPEN
            }

    answered = asyncio.run(go())
    assert len(answered) >= 15
    assert {route: status for route, status in answered.items() if status != 401} == {}
