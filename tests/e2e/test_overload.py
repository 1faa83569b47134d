"""Admission happens before an upload is read: a full server answers 503 at once."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

from tests.media import generated_videos
from tests.server_helpers import serve


def test_a_full_server_refuses_before_reading_the_upload(tmp_path: Path, tiny_clip_path: Path) -> None:
    clip = generated_videos()["clip_a.mp4"]
    with serve(tmp_path, tiny_clip_path, "--max-decode-queue", "1") as url:
        httpx.put(f"{url}/vocab/o", json={"labels": ["yoga", "surfing"]}, timeout=30).raise_for_status()
        where = urlparse(url)
        slow = socket.create_connection((where.hostname, where.port), timeout=10)
        try:  # an upload that arrives slowly holds the only slot
            boundary = "b0undary"
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="vocab"\r\n\r\no\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.mp4"\r\n'
                "Content-Type: video/mp4\r\n\r\n"
            ).encode()
            request = (
                f"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary="
                f"{boundary}\r\nContent-Length: {len(head) + 10_000_000}\r\n\r\n"
            ).encode()
            slow.sendall(request + head + b"\0" * 1000)
            time.sleep(0.5)
            t0 = time.monotonic()
            refused = httpx.post(
                f"{url}/classify",
                files={"file": (clip.name, clip.read_bytes(), "video/mp4")},
                data={"vocab": "o"},
                timeout=30,
            )
            took = time.monotonic() - t0
            assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
            assert "in progress" in refused.json()["detail"] and took < 2.0
        finally:
            slow.close()
        time.sleep(0.5)
        ok = httpx.post(
            f"{url}/classify",
            files={"file": (clip.name, clip.read_bytes(), "video/mp4")},
            data={"vocab": "o"},
            timeout=30,
        )
        assert ok.status_code == 200, ok.text
