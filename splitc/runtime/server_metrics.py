"""Prometheus metrics of the cloud server (one registry per server, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServerMetrics:
    """Request counts, latency histograms, bytes in/out and errors."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, cpu seconds, open fds
        self.requests = Counter("splitc_requests", "Inference requests by plan and HTTP status",
                                ["plan", "status"], registry=self.registry)
        self.errors = Counter("splitc_errors", "Rejected or failed requests by error code", ["code"],
                              registry=self.registry)
        self.latency = Histogram("splitc_request_seconds", "Server time per inference request (body read to reply)",
                                 ["plan"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.cloud = Histogram("splitc_cloud_seconds", "Time in the cloud half per request", ["plan"],
                               buckets=LATENCY_BUCKETS, registry=self.registry)
        self.bytes_in = Counter("splitc_bytes_in", "Request body bytes received", registry=self.registry)
        self.bytes_out = Counter("splitc_bytes_out", "Response body bytes sent", registry=self.registry)

    def served(self, plan: str, seconds: float, cloud_ms: float, size_in: int, size_out: int) -> None:
        self.requests.labels(plan, "200").inc()
        self.latency.labels(plan).observe(seconds)
        self.cloud.labels(plan).observe(cloud_ms / 1e3)
        self.bytes_in.inc(size_in)
        self.bytes_out.inc(size_out)

    def failed(self, status: int, code: str, size_in: int = 0) -> None:
        self.requests.labels("", str(status)).inc()
        self.errors.labels(code).inc()
        self.bytes_in.inc(size_in)

    def render(self) -> bytes:
        return generate_latest(self.registry)
