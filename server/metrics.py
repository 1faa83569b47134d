"""Prometheus metrics, one registry per app (tests run several apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("t4v_http_requests", "HTTP requests", ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "t4v_http_request_seconds",
            "HTTP request latency",
            ["route", "method"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.batch_frames = Histogram(
            "t4v_batch_frames", "Frames per encoder call", registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
        )
        self.batch_requests = Histogram(
            "t4v_batch_requests", "Requests per encoder call", registry=r, buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
        )
        self.queue_frames = Gauge("t4v_queue_frames", "Frames waiting for the encoder", registry=r)
        self.decode_pending = Gauge("t4v_decode_pending", "Uploads waiting for or in a decode worker", registry=r)
        self.prompts_encoded = Counter(
            "t4v_prompts_encoded",
            "Prompts encoded by the text encoder (PUT /vocab, ad-hoc labels): watch it grow during a long PUT",
            registry=r,
        )
        self.decode_workers = Gauge("t4v_decode_workers", "Decode worker processes alive", registry=r)
        self.in_progress = Gauge(
            "t4v_requests_in_progress",
            "Admitted classify requests: uploading, stalled (an upload silent for 2 s), "
            "or working (decode, encode, score)",
            ["stage"],
            registry=r,
        )
        self.predicted_wait = Gauge(
            "t4v_predicted_wait_seconds",
            "The wait admission predicts for a request arriving now (0: no estimate)",
            registry=r,
        )
        self.workers_replaced = Counter(
            "t4v_decode_workers_replaced",
            "Decode workers replaced: timeout (silent past the per-file budget), crash (its decoder crashed on a "
            "file) or killed (from outside: the OOM killer, an operator)",
            ["reason"],
            registry=r,
        )
        self.embedding_cache = Counter(
            "t4v_text_embedding_cache", "Text-embedding cache lookups", ["result"], registry=r
        )
        self.archive_kept = Gauge(
            "t4v_archive_rows_kept",
            "index=true rows the archive could not take, kept in memory and tried again every 5 s",
            registry=r,
        )
        self.archive_dropped = Gauge(
            "t4v_archive_rows_dropped", "Kept rows dropped since start (more than 50,000 waited)", registry=r
        )
        self.connections = Gauge("t4v_connections_open", "Open HTTP connections (t4v serve)", registry=r)
        self.connections_refused = Gauge(
            "t4v_connections_refused",
            "Connections refused with a 503 since start: max_connections or max_connections_per_client",
            registry=r,
        )
        self.decode_seconds = Histogram(
            "t4v_decode_seconds",
            "Decode + resize + crop time per request",
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

    def on_batch(self, requests: int, frames: int) -> None:
        self.batch_frames.observe(frames)
        self.batch_requests.observe(requests)

    def on_worker_replaced(self, reason: str) -> None:
        self.workers_replaced.labels(reason).inc()

    def on_embedding_cache(self, hits: int, misses: int) -> None:
        self.embedding_cache.labels("hit").inc(hits)
        self.embedding_cache.labels("miss").inc(misses)
