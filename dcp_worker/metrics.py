"""The worker's own metrics, served on a local port when `--metrics-port` is given.

A registry of its own (not prometheus_client's global one), so a process running several
workers (tests) keeps their figures apart. Labels are fixed sets (outcomes, API calls, error
kinds): never a job id.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0)


class WorkerMetrics:
    """Heartbeat spacing, container start latency, jobs by outcome, spool depth, API errors."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.heartbeat_interval = Histogram(
            "dcp_worker_heartbeat_interval_seconds",
            "Time between two successive heartbeats the API accepted",
            buckets=_SECONDS,
            registry=r,
        )
        self.heartbeats = Counter(
            "dcp_worker_heartbeats_total", "Heartbeats the API accepted", registry=r
        )
        self.container_start = Histogram(
            "dcp_worker_container_start_seconds",
            "From taking a job to its container running (image check, create, attach, start)",
            buckets=_SECONDS,
            registry=r,
        )
        self.jobs = Counter(
            "dcp_worker_jobs_total", "Jobs this worker ended, by outcome", ("outcome",), registry=r
        )
        self.running = Gauge("dcp_worker_running_jobs", "Jobs running now", registry=r)
        self.spool_depth = Gauge(
            "dcp_worker_spool_depth",
            "Results written to the spool and not yet delivered",
            registry=r,
        )
        self.api_errors = Counter(
            "dcp_worker_api_errors_total",
            "Failed calls to the platform's API, by call and kind (unavailable or the status)",
            ("call", "kind"),
            registry=r,
        )
        self.ready = Gauge(
            "dcp_worker_ready", "1 when Docker, disk and GPUs passed the last check", registry=r
        )

    def watch(self, spool_depth: Callable[[], int], running: Callable[[], int]) -> None:
        """Read the spool depth and running jobs at each scrape."""
        self.spool_depth.set_function(spool_depth)
        self.running.set_function(running)

    def api_error(self, call: str, kind: str) -> None:
        self.api_errors.labels(call, kind).inc()

    def serve(self, port: int, addr: str = "127.0.0.1") -> tuple[WSGIServer, threading.Thread]:
        """Serve /metrics on `addr:port` from a daemon thread; `shutdown()` the server to stop."""
        return start_http_server(port, addr=addr, registry=self.registry)
