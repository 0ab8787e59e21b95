"""The replicator's metrics on a local port (`dcp replicate --metrics-port`): how far the
mirror is behind the log, in events and seconds, and what it has shipped.

The lag is measured on a timer of its own from the source and the replicator's checkpoint, not
in the replication loop, so a replicator stuck on its sink still shows its lag growing. Before
the sink's checkpoint is known (the sink never answered), the local cached checkpoint counts,
else 0: everything is behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from dcp_replicator.errors import ReplicatorError
from dcp_replicator.source import SqliteSource

LAG_INTERVAL_S = 1.0


class ReplicatorMetrics:
    """Lag in events and seconds, the checkpoint and head, rows and batches shipped."""

    def __init__(self, sink: str) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        labels = ("sink",)
        self.sink = sink
        self.lag_events = Gauge(
            "dcp_replicator_lag_events", "Events the mirror is behind the log", labels, registry=r
        ).labels(sink)
        self.lag_seconds = Gauge(
            "dcp_replicator_lag_seconds",
            "Age of the oldest event not yet mirrored (0 when caught up)",
            labels,
            registry=r,
        ).labels(sink)
        self.checkpoint = Gauge(
            "dcp_replicator_checkpoint_seq", "Last event mirrored", labels, registry=r
        ).labels(sink)
        self.head = Gauge(
            "dcp_replicator_source_head_seq", "Last event of the source log", labels, registry=r
        ).labels(sink)
        self.rows = Counter(
            "dcp_replicator_rows_total", "Rows written to the sink", labels, registry=r
        ).labels(sink)
        self.batches = Counter(
            "dcp_replicator_batches_total", "Batches written to the sink", labels, registry=r
        ).labels(sink)
        self.lag_errors = Counter(
            "dcp_replicator_lag_errors_total",
            "Lag measurements that failed (the source was unreadable)",
            labels,
            registry=r,
        ).labels(sink)

    def batch(self, checkpoint_seq: int, rows: int) -> None:
        """The replicator's `on_batch` hook."""
        self.rows.inc(rows)
        self.batches.inc()

    async def watch(
        self,
        source: SqliteSource,
        checkpoint: Callable[[], int | None],
        interval_s: float = LAG_INTERVAL_S,
    ) -> None:
        """Measure the lag every `interval_s`, forever (cancel to stop)."""
        while True:
            try:
                lag = await source.lag(checkpoint() or 0)
            except Exception:  # a locked or replaced file: measure again next time
                self.lag_errors.inc()
            else:
                self.lag_events.set(lag.events_behind)
                self.lag_seconds.set(lag.seconds_behind)
                self.checkpoint.set(lag.checkpoint_seq)
                self.head.set(lag.head_seq)
            await asyncio.sleep(interval_s)

    def serve(self, port: int, addr: str = "127.0.0.1") -> tuple[WSGIServer, threading.Thread]:
        """Serve /metrics on `addr:port` from a daemon thread."""
        return start_http_server(port, addr=addr, registry=self.registry)


@contextlib.asynccontextmanager
async def served(
    metrics: ReplicatorMetrics,
    port: int,
    source: SqliteSource,
    checkpoint: Callable[[], int | None],
) -> AsyncIterator[ReplicatorMetrics]:
    """Serve and measure while the block runs. Raises ReplicatorError if the port is taken."""
    try:
        server, _ = metrics.serve(port)
    except OSError as e:
        raise ReplicatorError(f"cannot serve metrics on 127.0.0.1:{port}: {e}") from e
    task = asyncio.create_task(metrics.watch(source, checkpoint))
    try:
        yield metrics
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.shutdown()
        server.server_close()
