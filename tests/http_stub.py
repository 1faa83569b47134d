"""A tiny HTTP server on the loopback for client tests: each GET is answered by a function of the
requests seen so far (status, headers, JSON body)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Answer = tuple[int, dict[str, str], object]


@contextmanager
def stub_server(answer: Callable[[int, str], Answer]) -> Iterator[tuple[str, list[tuple[float, str]]]]:
    """Its URL and the requests it saw (monotonic time, path); ``answer(n, path)`` for the n-th."""
    import time

    seen: list[tuple[float, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append((time.monotonic(), self.path))
            status, headers, payload = answer(len(seen), self.path)
            body = json.dumps(payload).encode()
            self.send_response(status)
            for name, value in {
                **headers,
                "Content-Type": "application/json",
                "Content-Length": str(len(body)),
            }.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
