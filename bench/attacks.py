"""Reliability figures against a real ``t4v serve`` (random weights, the tiny model, one decode
process, loopback): what a client that misbehaves costs the others.

    PYTHONPATH=. python bench/attacks.py [--never-sent 20000] [--bombs 6] [--unread 4] [--trickle 300]

1. never-sent: N connections send a complete JSON request head and no body; /health/live's
   slowest answer while they are open (probed from 127.0.0.2, as a load balancer's check comes
   from elsewhere), how many were answered (408 at the pace, 503 past the connection bounds) and
   the server's open descriptors after.
2. bombs: /classify of a small clip (a stored vocabulary), median of 5, alone and while B
   requests each send 8,192 new ad-hoc prompts (the per-request cap) to /archive/labels; the
   ratio, interleaved in one run.
3. unread: U clients ask /archive/labels for every label of a 5,000-label vocabulary over the
   stored rows and never read; the server's RSS before, at most during, 5 s after the cut, and
   its ESTABLISHED sockets then.
4. trickle: T connections upload at 1 byte/s, reconnecting after each refusal; how many of 20
   normal /classify requests were served, and their median latency against the same requests
   alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.media import generated_videos, joined_parts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(data: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    cmd = [sys.executable, "-m", "text4vis.server.cli", "serve", "--model", "t4v-tiny-vit", "--random-init"]
    cmd += ["--port", str(port), "--data-dir", str(data / str(port)), "--decode-workers", "1", *extra]
    log = (data / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            time.sleep(0.3)
        if proc.poll() is not None:
            raise RuntimeError(f"the server did not start: {(data / f'serve-{port}.log').read_text()[-2000:]}")
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def established(port: int) -> int:
    out = subprocess.run(["ss", "-tnH", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True)
    return len([line for line in out.stdout.splitlines() if line.strip()])


def descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def _head(url: str, method: str, path: str, length: int, content_type: str = "application/json") -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = f"{method} {path} HTTP/1.1\r\nHost: t4v\r\nContent-Type: {content_type}\r\n"
    sock.sendall(f"{head}Content-Length: {length}\r\n\r\n".encode())
    return sock


def classify_s(url: str, clip: bytes) -> float:
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/classify", files={"file": ("c.mp4", clip, "video/mp4")}, data={"vocab": "small"}, timeout=60)
    r.raise_for_status()
    return time.perf_counter() - t0


def _sweep(socks: list[socket.socket], answers: dict[int, int]) -> list[socket.socket]:
    """Close the sockets the server answered (counting each status); the others."""
    waiting = []
    for sock in socks:
        try:
            data = sock.recv(64, socket.MSG_DONTWAIT)
        except BlockingIOError:
            waiting.append(sock)
            continue
        except OSError:
            data = b""
        try:
            status = int(data.split()[1])
        except (IndexError, ValueError):
            status = -1  # closed without an answer
        answers[status] = answers.get(status, 0) + 1
        sock.close()
    return waiting


def never_sent(tmp: Path, n: int) -> None:
    with serve(tmp, "--upload-timeout-s", "10") as (url, proc):
        socks: list[socket.socket] = []
        refused, answers = 0, {}
        t0 = time.monotonic()
        for i in range(n):
            try:
                socks.append(_head(url, "PUT", "/vocab/x", 100))
            except OSError:
                refused += 1
            if i % 500 == 499:  # read what was answered already (503s past the bound) and let go of it
                socks = _sweep(socks, answers)
        opened = time.monotonic() - t0
        live = []
        # the probe comes from another address (127.0.0.2, loopback too), as a load balancer's would:
        # the flood's own address is held at max_connections_per_client
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=5) as probe:
            for _ in range(10):
                t1 = time.perf_counter()
                probe.get(f"{url}/health/live").raise_for_status()
                live.append(time.perf_counter() - t1)
                time.sleep(0.3)
        held = len(socks)
        time.sleep(12)
        socks = _sweep(socks, answers)
        answers[0] = len(socks)  # never answered
        for sock in socks:
            sock.close()
        print(
            f"never-sent: {n} heads opened in {opened:.1f} s ({refused} connects failed); /health/live slowest "
            f"{max(live) * 1e3:.0f} ms, median {statistics.median(live) * 1e3:.0f} ms; answers {answers} "
            f"(0: none read); held open by the server at the end of the flood: {held}; server descriptors after: "
            f"{descriptors(proc.pid)}"
        )


def bombs(tmp: Path, count: int) -> None:
    clip = generated_videos()["clip_a.mp4"].read_bytes()
    with serve(tmp) as (url, _):
        httpx.put(f"{url}/vocab/small", json={"labels": ["yoga", "surfing", "cooking"]}, timeout=60).raise_for_status()
        httpx.post(f"{url}/archive/videos", files={"file": ("c.mp4", clip, "video/mp4")}, timeout=60)
        alone = [classify_s(url, clip) for _ in range(5)]
        statuses: list[int] = []

        def bomb(i: int) -> None:
            labels = [f"bomb {i} label {j}" for j in range(2048)]
            body = {"labels": labels, "templates": ["a {}.", "b {}.", "c {}.", "d {}."], "top_k": 1}
            statuses.append(httpx.post(f"{url}/archive/labels", json=body, timeout=600).status_code)

        threads = [threading.Thread(target=bomb, args=(i,)) for i in range(count)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        under = [classify_s(url, clip) for _ in range(5)]
        for t in threads:
            t.join()
        print(
            f"bombs: {count} x 8,192 ad-hoc prompts (answers {sorted(statuses)}); /classify median alone "
            f"{statistics.median(alone) * 1e3:.0f} ms, under the bombs {statistics.median(under) * 1e3:.0f} ms "
            f"(x{statistics.median(under) / statistics.median(alone):.2f})"
        )


def unread(tmp: Path, count: int) -> None:
    video, _ = joined_parts(tmp)
    timeouts = ("--request-timeout-s", "10", "--decode-budget-s", "10", "--max-queue-wait-s", "10")
    with serve(tmp, *timeouts) as (url, proc):
        labels = [f"action number {i}" for i in range(5000)]
        httpx.put(f"{url}/vocab/big", json={"labels": labels}, timeout=600).raise_for_status()
        httpx.post(
            f"{url}/archive/videos",
            files={"file": (video.name, video.read_bytes(), "video/mp4")},
            data={"window_s": "0.1"},
            timeout=120,
        ).raise_for_status()
        before = rss_mb(proc.pid)
        body = json.dumps({"vocab": "big", "top_k": 0, "kind": "all"}).encode()
        socks = []
        for _ in range(count):
            sock = _head(url, "POST", "/archive/labels", len(body))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(body)
            socks.append(sock)
        peak, t0 = before, time.monotonic()
        while time.monotonic() - t0 < 16:
            peak = max(peak, rss_mb(proc.pid))
            time.sleep(0.2)
        port = int(url.rsplit(":", 1)[1])
        print(
            f"unread: {count} clients; RSS before {before:.0f} MB, peak {peak:.0f} MB (+{peak - before:.0f}), "
            f"16 s later {rss_mb(proc.pid):.0f} MB; ESTABLISHED server sockets then: {established(port)}"
        )
        for sock in socks:
            sock.close()


def trickle(tmp: Path, count: int) -> None:
    clip = generated_videos()["clip_a.mp4"].read_bytes()
    with serve(tmp) as (url, _):
        httpx.put(f"{url}/vocab/small", json={"labels": ["yoga", "surfing", "cooking"]}, timeout=60).raise_for_status()
        alone = [classify_s(url, clip) for _ in range(5)]
        stop = threading.Event()

        def trickler() -> None:
            while not stop.is_set():
                try:
                    sock = _head(url, "POST", "/classify", 100_000, "multipart/form-data; boundary=b")
                    sock.settimeout(1.0)
                    while not stop.is_set():
                        sock.sendall(b"x")
                        with contextlib.suppress(TimeoutError):
                            if sock.recv(1) is not None:
                                break  # answered (408 or 503): reconnect
                except OSError:
                    time.sleep(0.2)

        threads = [threading.Thread(target=trickler, daemon=True) for _ in range(count)]
        for t in threads:
            t.start()
        time.sleep(5)
        served, times = 0, []
        for _ in range(20):
            try:
                times.append(classify_s(url, clip))
                served += 1
            except httpx.HTTPError:
                time.sleep(0.5)
        stop.set()
        median = statistics.median(times) if times else float("nan")
        print(
            f"trickle: {count} connections at 1 B/s; {served}/20 normal requests served, median {median * 1e3:.0f} ms "
            f"(alone {statistics.median(alone) * 1e3:.0f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--never-sent", type=int, default=20_000)
    parser.add_argument("--bombs", type=int, default=6)
    parser.add_argument("--unread", type=int, default=4)
    parser.add_argument("--trickle", type=int, default=300)
    parser.add_argument("--only", choices=["never-sent", "bombs", "unread", "trickle"])
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in (("never-sent", never_sent), ("bombs", bombs), ("unread", unread), ("trickle", trickle)):
            if args.only in (None, name):
                run(Path(tmp), getattr(args, name.replace("-", "_")))


if __name__ == "__main__":
    main()
