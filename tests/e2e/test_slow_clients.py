"""Slow and silent clients against a real `t4v serve` (issue 25): uploads that trickle in must not
hold the slots every other request needs, and a streamed answer nobody reads must end and free
what it held."""

from __future__ import annotations

import re
import select
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

from tests.media import generated_videos, joined_parts
from tests.server_helpers import serve

BOUNDARY = "t4vboundary"


def _multipart_head(fields: dict[str, str], filename: str) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    )
    return "".join(parts).encode()


def _open(url: str, path: str, body_length: int, rcvbuf: int | None = None) -> socket.socket:
    u = urlparse(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((u.hostname, u.port))
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: t4v\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {body_length}\r\n\r\n".encode()
    )
    return sock


def _status(sock: socket.socket, timeout_s: float) -> tuple[int, str]:
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


def test_stalled_uploads_hold_no_slot_and_are_cut_off(tmp_path: Path, tiny_clip_path: Path) -> None:
    """Four connections send a multipart header and then nothing, on a server whose cap is four:
    a normal request is still served (it got 503 until they closed), and each stalled upload is
    answered 408 once its pace runs out."""
    with serve(tmp_path, tiny_clip_path, "--max-decode-queue", "4", "--upload-timeout-s", "4") as url:
        head = _multipart_head({"labels": '["a", "b"]'}, "slow.mp4")
        stalled = []
        t0 = time.monotonic()
        for _ in range(4):
            sock = _open(url, "/classify", len(head) + 100_000)
            sock.sendall(head + b"\x00" * 10)
            stalled.append(sock)
        time.sleep(2.5)  # silent for longer than admission's 2 s: stalled
        r = httpx.post(
            f"{url}/classify",
            files={"file": ("clip.mp4", generated_videos()["clip_a.mp4"].read_bytes(), "video/mp4")},
            data={"labels": '["a", "b"]'},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        for sock in stalled:
            status, body = _status(sock, timeout_s=10)
            sock.close()
            assert status == 408, body
            assert "the upload arrived too slowly" in body
        assert time.monotonic() - t0 < 9  # cut at 4 s + 10 bytes' worth, not at the request deadline
        metrics = httpx.get(f"{url}/metrics").text
        assert 't4v_requests_in_progress{stage="stalled"} 0.0' in metrics


def test_a_streamed_timeline_nobody_reads_ends_and_frees_its_slot(tmp_path: Path, tiny_clip_path: Path) -> None:
    """A client that asks for a streamed timeline of every label of a large vocabulary and reads
    nothing: the answer fills every buffer on the way; past timeline_timeout_s the server cuts
    the stream and the request leaves the counts (it held its slot without limit)."""
    video, _ = joined_parts(tmp_path)
    labels = [f"action number {i}" for i in range(2000)]
    with serve(tmp_path, tiny_clip_path, "--timeline-timeout-s", "4") as url:
        r = httpx.put(f"{url}/vocab/big", json={"labels": labels}, timeout=120)
        assert r.status_code == 201, r.text
        data = video.read_bytes()
        head = _multipart_head({"vocab": "big", "top_k": "0", "window_s": "0.5", "stream": "true"}, "long.mp4")
        tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        sock = _open(url, "/classify/timeline", len(head) + len(data) + len(tail), rcvbuf=4096)
        sock.sendall(head + data + tail)
        t0 = time.monotonic()
        working = None
        while time.monotonic() - t0 < 20:
            metrics = httpx.get(f"{url}/metrics").text
            working = re.search(r't4v_requests_in_progress\{stage="working"\} (\S+)', metrics)
            if working and float(working.group(1)) == 0 and time.monotonic() - t0 > 1:
                break
            time.sleep(0.5)
        took = time.monotonic() - t0
        sock.close()
        assert working is not None and float(working.group(1)) == 0, "the unread stream still holds its slot"
        assert took < 12, took
        assert not any((tmp_path / next(iter(p.name for p in tmp_path.glob("data-*")))).glob("uploads/*"))


def test_a_request_head_that_never_completes_is_cut_off(tmp_path: Path, tiny_clip_path: Path) -> None:
    """Slowloris: a connection that sends nothing, or its headers a byte at a time, was held for
    ever (any byte cancelled uvicorn's keep-alive timer); each now gets a 408 and is closed at
    --header-timeout-s, on a fresh or a kept-alive connection, while a normal request is served."""
    with serve(tmp_path, tiny_clip_path, "--header-timeout-s", "2") as url:
        u = urlparse(url)
        silent = socket.create_connection((u.hostname, u.port))
        trickling = socket.create_connection((u.hostname, u.port))
        kept_alive = socket.create_connection((u.hostname, u.port))
        kept_alive.sendall(b"GET /health/live HTTP/1.1\r\nHost: t4v\r\n\r\n")
        assert _status(kept_alive, timeout_s=5)[0] == 200
        t0 = time.monotonic()
        head = b"GET /health/live HTTP/1.1\r\nHost: t4v\r\nX-Slow: " + b"a" * 100
        answered: set[socket.socket] = set()
        for i in range(len(head)):  # a byte every 0.1 s: 10 s for the head
            # stop sending once the server answered (a byte sent after its close would be reset)
            answered.update(select.select([trickling, kept_alive], [], [], 0)[0])
            if len(answered) == 2:
                break
            for sock in {trickling, kept_alive} - answered:
                sock.sendall(head[i : i + 1])
            time.sleep(0.1)
        assert httpx.get(f"{url}/health/live", timeout=5).status_code == 200
        for name, sock in (("silent", silent), ("trickling", trickling), ("kept_alive", kept_alive)):
            status, body = _status(sock, timeout_s=5)
            sock.close()
            assert status == 408 and "must arrive within 2 s" in body, (name, status, body)
        assert time.monotonic() - t0 < 8
