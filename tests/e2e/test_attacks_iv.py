"""Reliability, fourth pass, against a real `t4v serve` (issue 33): a JSON body that never arrives
is cut at its pace (it held its connection for ever), a request without a key is refused before
its body is awaited, and connections past the bounds are refused at once with a 503."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

from tests.e2e.test_slow_clients import _status
from tests.server_helpers import serve

KEY = "k-attack"


def _json_head(url: str, method: str, path: str, length: int, key: str | None = None) -> socket.socket:
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port))
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    sock.sendall(
        f"{method} {path} HTTP/1.1\r\nHost: t4v\r\nContent-Type: application/json\r\n{auth}"
        f"Content-Length: {length}\r\n\r\n".encode()
    )
    return sock


def test_bodies_that_never_arrive_keys_first_and_connection_bounds(tmp_path: Path, tiny_clip_path: Path) -> None:
    extra = ("--upload-timeout-s", "2", "--api-key", KEY, "--auth-classify", "--max-connections-per-client", "40")
    with serve(tmp_path, tiny_clip_path, *extra) as url:
        # a complete head and then nothing (with a key: the body is what it waits for): 408 at the pace
        t0 = time.monotonic()
        waiting = [
            _json_head(url, "PUT", "/vocab/x", 100, KEY),
            _json_head(url, "POST", "/archive/labels", 100, KEY),
            _json_head(url, "POST", "/archive/labels", 100, KEY),
        ]
        waiting[2].sendall(b'{"labels": ["a",')  # part of it, then nothing
        # without a key: 401 at once, the body never awaited
        keyless = _json_head(url, "PUT", "/vocab/x", 100)
        status, body = _status(keyless, timeout_s=2)
        assert status == 401 and "API key" in body, (status, body)
        assert time.monotonic() - t0 < 1.5
        for sock in waiting:
            status, body = _status(sock, timeout_s=6)
            assert status == 408 and "arrived too slowly" in body, (status, body)
            assert sock.recv(1) == b"", "the connection is closed after the 408"
        assert time.monotonic() - t0 < 5
        # a whole body still works
        r = httpx.put(f"{url}/vocab/x", json={"labels": ["a", "b"]}, headers={"X-API-Key": KEY}, timeout=30)
        assert r.status_code == 201, r.text

        # connections past the per-client bound: 503 and closed at once; the server goes on answering
        u = urlparse(url)
        held = [socket.create_connection((u.hostname, u.port)) for _ in range(40)]
        time.sleep(0.3)
        extra_sock = socket.create_connection((u.hostname, u.port))
        status, body = _status(extra_sock, timeout_s=2)
        assert status == 503 and "max_connections_per_client" in body, (status, body)
        for sock in held:
            sock.close()
        time.sleep(0.3)
        assert httpx.get(f"{url}/health/live", timeout=2).status_code == 200
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        assert "t4v_connections_refused 1.0" in metrics, metrics


def test_prompt_bombs_are_refused_and_an_unread_stream_lets_go_of_its_socket(
    tmp_path: Path, tiny_clip_path: Path
) -> None:
    """Ad-hoc labels x templates past max_ad_hoc_prompts (and a vocabulary past max_prompts) are a
    422 in a moment (one such request ran two minutes); a client that asks /archive/labels for
    every label of a large vocabulary and reads nothing is cut at the stall limit and its
    connection is gone at once (it stayed ESTABLISHED with megabytes unsent, and the answer's
    whole memory with it)."""
    from tests.media import joined_parts

    video, _ = joined_parts(tmp_path)
    extra = (
        *("--request-timeout-s", "4", "--max-queue-wait-s", "2", "--decode-budget-s", "4", "--upload-timeout-s", "2"),
        *("--max-ad-hoc-prompts", "1000", "--max-prompts", "6000"),
    )
    with serve(tmp_path, tiny_clip_path, *extra) as url:
        labels = [f"action number {i}" for i in range(3000)]
        t0 = time.monotonic()
        bomb = httpx.post(
            f"{url}/archive/labels", json={"labels": labels[:500], "templates": ["a {}.", "b {}.", "c {}."]}
        )
        assert bomb.status_code == 422 and "max_ad_hoc_prompts" in bomb.json()["detail"], bomb.text
        big = httpx.put(f"{url}/vocab/big", json={"labels": labels, "templates": ["a {}.", "b {}.", "c {}."]})
        assert big.status_code == 422 and "9000 prompts" in big.json()["detail"], big.text
        assert time.monotonic() - t0 < 2
        assert httpx.put(f"{url}/vocab/big", json={"labels": labels}, timeout=120).status_code == 201
        stored = httpx.post(
            f"{url}/archive/videos",
            files={"file": (video.name, video.read_bytes(), "video/mp4")},
            data={"window_s": "0.5"},
            timeout=60,
        )
        assert stored.status_code == 200, stored.text

        body = b'{"vocab": "big", "top_k": 0, "kind": "all"}'
        u = urlparse(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((u.hostname, u.port))
        sock.sendall(
            f"POST /archive/labels HTTP/1.1\r\nHost: t4v\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        t0 = time.monotonic()
        open_now = None
        while time.monotonic() - t0 < 15:
            time.sleep(0.5)
            metrics = httpx.get(f"{url}/metrics", timeout=5).text
            working = float(metrics.split('t4v_requests_in_progress{stage="working"} ')[1].split()[0])
            open_now = float(metrics.split("\nt4v_connections_open ")[1].split()[0])
            if time.monotonic() - t0 > 1 and working == 0 and open_now <= 1:  # the /metrics request itself
                break
        took = time.monotonic() - t0
        sock.close()
        assert open_now is not None and open_now <= 1, f"{open_now} connections still open after the cut"
        assert took < 10, took
