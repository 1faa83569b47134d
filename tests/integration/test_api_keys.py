"""API keys: PUT/DELETE /vocab need one when keys are set; /classify and /metrics when asked to;
/health always open; keys compared by digest, never logged; the client SDK sends them."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import httpx
import pytest

from tests.media import generated_videos
from tests.server_helpers import make_app, running, tiny_runtime
from text4vis.engine.runtime.build import Runtime
from text4vis.server.auth import ApiKeys

KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def runtime(tiny_clip_path: Path) -> Runtime:
    return tiny_runtime(tiny_clip_path)


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
    with pytest.raises(ValueError, match="SHA-256 hex digest"):
        ApiKeys(key_file=bad)
    assert not ApiKeys().enabled and ApiKeys(["k"]).enabled


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
