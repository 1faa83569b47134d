"""Real uvicorn processes (t4v serve), a real redis-server, real uploads over TCP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.media import generated_videos
from tests.redis_server import free_port
from tests.server_helpers import serve, serve_process
from text4vis.models.clip_loader import TINY_ARCH
from text4vis.server.auth import key_digest


@pytest.mark.slow
def test_two_replicas_share_vocabularies_through_redis(tmp_path: Path, tiny_clip_path: Path, redis_url: str) -> None:
    clip = generated_videos()["clip_a.mp4"]
    with (
        serve(tmp_path, tiny_clip_path, "--redis-url", redis_url) as a,
        serve(tmp_path, tiny_clip_path, "--redis-url", redis_url) as b,
    ):
        r = httpx.put(f"{a}/vocab/e2e", json={"labels": ["yoga", "surfing"]}, timeout=30)
        assert r.status_code == 201, r.text
        with clip.open("rb") as f:
            got = httpx.post(
                f"{b}/classify", files={"file": (clip.name, f, "video/mp4")}, data={"vocab": "e2e"}, timeout=60
            )
        assert got.status_code == 200, got.text
        assert got.json()["vocab"] == {"name": "e2e", "version": 1}
        grown = httpx.put(f"{a}/vocab/e2e", json={"labels": ["yoga", "surfing", "skiing"]}, timeout=30)
        assert grown.status_code == 200
        with clip.open("rb") as f:
            again = httpx.post(
                f"{b}/classify",
                files={"file": (clip.name, f, "video/mp4")},
                data={"vocab": "e2e", "top_k": "0"},
                timeout=60,
            )
        assert again.json()["vocab"]["version"] == 2
        assert {p["label"] for p in again.json()["predictions"]} == {"yoga", "surfing", "skiing"}
        assert (httpx.get(f"{b}/vocab/e2e", timeout=10)).json()["version"] == 2


def test_serve_fails_fast_on_a_checkpoint_that_does_not_fit(tiny_clip_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "text4vis.server.cli",
            "serve",
            "--model",
            "ViT-B-32",
            "--clip-checkpoint",
            str(tiny_clip_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "does not fit the model" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_rejects_unsafe_settings() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "text4vis.server.cli",
            "serve",
            "--random-init",
            "--max-batch-frames",
            "64",
            "--max-queue-frames",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "max_queue_frames must be at least max_batch_frames" in proc.stderr


def _serve_fails(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "text4vis.server.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_serve_refuses_keys_configured_but_empty(tmp_path: Path) -> None:
    """Auth fails closed: each of these left the server open (and logged nothing)."""
    revoked = tmp_path / "keys.txt"
    revoked.write_text("# all revoked\n")
    cases = [
        ((), {"T4V_API_KEYS": " , "}, "T4V_API_KEYS (--api-key) is set but holds no key"),
        (("--api-key-file", str(revoked), "--auth-classify"), {}, "holds no active key digest"),
        (("--auth-classify", "--auth-metrics"), {}, "need API keys (T4V_API_KEYS or T4V_API_KEY_FILE)"),
    ]
    for args, env, message in cases:
        proc = _serve_fails("--random-init", "--port", str(free_port()), *args, env=env)
        assert proc.returncode == 2, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last, proc.stderr
        assert "Traceback" not in proc.stderr


def test_sighup_reads_the_key_file_again(tmp_path: Path, tiny_clip_path: Path) -> None:
    """A revoked digest takes effect at SIGHUP, at once (and the server lives on: SIGHUP's default
    action would end it)."""
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"{key_digest('k1')}\n{key_digest('k2')}\n")
    with serve_process(tmp_path, tiny_clip_path, "--api-key-file", str(key_file)) as (url, proc):

        def put(key: str) -> int:
            return httpx.put(f"{url}/vocab/v", json={"labels": ["a", "b"]}, headers={"X-API-Key": key}).status_code

        assert put("k1") in (200, 201)
        key_file.write_text(f"{key_digest('k2')}\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 0.5  # well under the 1 s stat check: the signal did it
        while put("k1") != 401:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        assert put("k2") == 200 and proc.poll() is None


def test_serve_on_a_busy_port_fails_before_loading_a_model(tiny_clip_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve_fails("--model", TINY_ARCH, "--clip-checkpoint", str(tiny_clip_path), "--port", str(port))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (--port, T4V_PORT)"
    )
    assert "model t4v-tiny-vit" not in proc.stderr  # nothing was loaded


def test_serve_with_an_unreachable_redis_exits_with_one_line(tiny_clip_path: Path) -> None:
    proc = _serve_fails(
        "--model",
        TINY_ARCH,
        "--clip-checkpoint",
        str(tiny_clip_path),
        "--port",
        str(free_port()),
        "--redis-url",
        f"redis://127.0.0.1:{free_port()}/0",
    )
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach Redis at redis://127.0.0.1:") and "Traceback" not in proc.stderr
    assert "model t4v-tiny-vit" not in proc.stderr


def test_serve_refuses_an_unknown_preset_at_once() -> None:
    proc = _serve_fails("--random-init", "--preset", "ucf101")
    assert proc.returncode == 2 and "unknown label preset 'ucf101'; known: kinetics400" in proc.stderr


def test_serve_with_an_archive_it_cannot_open_exits_with_one_line(tiny_clip_path: Path, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "archive"
    not_a_dir.write_text("not a LanceDB directory")
    proc = _serve_fails(
        "--model",
        TINY_ARCH,
        "--clip-checkpoint",
        str(tiny_clip_path),
        "--port",
        str(free_port()),
        "--archive-uri",
        str(not_a_dir),
    )
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the archive {not_a_dir} cannot be opened") and "Traceback" not in proc.stderr


def test_serve_exits_with_one_line_on_a_data_dir_it_cannot_use(tmp_path: Path) -> None:
    """A data dir that is a file, a vocab.db that is no database, and a read-only data dir whose
    vocab.db opens (and reads) fine: each stayed up answering 503 (or 500 at the first PUT)."""
    a_file = tmp_path / "data-file"
    a_file.write_text("not a directory")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "vocab.db").write_bytes(os.urandom(8192))
    cases = [
        (a_file, f"error: the data directory {a_file} is not writable: "),
        (corrupt, f"error: the vocabulary store {corrupt / 'vocab.db'} cannot be opened for writing: file is not"),
    ]
    for data_dir, start in cases:
        proc = _serve_fails("--random-init", "--port", str(free_port()), "--data-dir", str(data_dir))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith(start), proc.stderr
        assert "Traceback" not in proc.stderr


def test_serve_exits_with_one_line_on_a_read_only_data_dir() -> None:
    """Permissions do not bind root: the server runs as an unprivileged user (setpriv) when the
    tests run as root."""
    from text4vis.engine.vocab.stores.sqlite import SQLiteStore

    top = Path(tempfile.mkdtemp(prefix="t4v-ro-"))
    try:
        read_only = top / "data"
        (read_only / "uploads").mkdir(parents=True)
        store = SQLiteStore(read_only / "vocab.db")
        store.close()
        for path in (top, read_only / "uploads"):
            path.chmod(0o777)
        (read_only / "vocab.db").chmod(0o444)
        read_only.chmod(0o555)
        command = [sys.executable, "-m", "text4vis.server.cli", "serve", "--random-init"]
        command += ["--port", str(free_port()), "--data-dir", str(read_only)]
        if os.geteuid() == 0:
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(top)}
        )
        assert proc.returncode == 2, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: the vocabulary store {read_only / 'vocab.db'} cannot be opened for writing"), (
            proc.stderr
        )
    finally:
        read_only.chmod(0o755)
        shutil.rmtree(top)
