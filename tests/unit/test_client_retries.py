"""The client's retry policy and error mapping, on a scripted transport (no server needed)."""

import subprocess
import sys
import time

import httpx
import pytest

from t4v_client import Client, InvalidInput, NotFound, Unavailable


def scripted(*responses: httpx.Response) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0)

    return httpx.MockTransport(handler), seen


VOCAB = {"name": "v", "version": 1, "labels": ["a"], "templates": ["{}"], "text_model": "m", "etag": "e"}


def test_retries_503_honouring_retry_after() -> None:
    transport, seen = scripted(
        httpx.Response(503, json={"detail": "busy"}, headers={"Retry-After": "0.2"}),
        httpx.Response(429, json={"detail": "busy"}, headers={"Retry-After": "0.1"}),
        httpx.Response(200, json=VOCAB),
    )
    t0 = time.monotonic()
    with Client(transport=transport, retries=3) as c:
        assert c.get_vocab("v").version == 1
    assert len(seen) == 3 and 0.3 <= time.monotonic() - t0 < 2


def test_gives_up_with_the_servers_message_and_bounded_waits() -> None:
    busy = httpx.Response(503, json={"detail": "queue full"}, headers={"Retry-After": "999"})
    transport, seen = scripted(busy, busy, busy)
    t0 = time.monotonic()
    with Client(transport=transport, retries=2, max_wait_s=0.05) as c, pytest.raises(Unavailable, match="queue full"):
        c.list_vocabs()
    assert len(seen) == 3 and time.monotonic() - t0 < 1


def test_errors_are_typed_and_not_retried() -> None:
    transport, seen = scripted(
        httpx.Response(404, json={"detail": "no vocabulary named 'x'"}),
        httpx.Response(422, json={"detail": [{"loc": ["body", "labels"], "msg": "Field required"}]}),
    )
    with Client(transport=transport) as c:
        with pytest.raises(NotFound, match="no vocabulary named 'x'") as info:
            c.get_vocab("x")
        assert info.value.status == 404
        with pytest.raises(InvalidInput, match="body.labels: Field required"):
            c.put_vocab("x", ["a"])
    assert len(seen) == 2


def test_client_package_does_not_import_torch() -> None:
    code = "import sys, t4v_client, t4v_client.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_t4v_client_waits_as_retry_after_tells_it() -> None:
    """The command line (a real process, a real socket) waits what Retry-After says before it retries."""
    from tests.http_stub import stub_server

    def answer(n: int, path: str) -> tuple[int, dict[str, str], object]:
        return (503, {"Retry-After": "2"}, {"detail": "busy"}) if n == 1 else (200, {}, {"vocabularies": []})

    with stub_server(answer) as (url, seen):
        proc = subprocess.run(
            [sys.executable, "-m", "t4v_client.cli", "vocab", "list", "--url", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    assert len(seen) == 2 and 2.0 <= seen[1][0] - seen[0][0] < 4.0, seen
