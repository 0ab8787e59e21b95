"""The replication loop: read a bounded batch past the checkpoint, apply it, repeat.

Runs at its own pace beside the API: short read transactions on its own connection, a pause
when caught up, and exponential backoff (bounded) while the sink is unavailable; afterwards it
catches up in bounded batches. Lag (events and seconds behind) goes into its log lines and
`status()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import msgspec
import structlog

from dcp_replicator.backoff import backoff_s
from dcp_replicator.checkpoint import CheckpointStore
from dcp_replicator.errors import (
    CheckpointConflict,
    SinkRejected,
    SinkUnavailable,
    SourceError,
)
from dcp_replicator.sink import Sink
from dcp_replicator.source import Lag, SqliteSource

log = structlog.get_logger("dcp_replicator")

# How often the PostgreSQL sink's checkpoint is copied to the local file (only for `status`
# while the target is away; the target holds the real one).
CACHE_INTERVAL_S = 2.0


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Knobs of the loop, with defaults for a production run."""

    batch_rows: int = 2000  # rows per batch, all tables together
    poll_interval_s: float = 0.5  # pause when caught up
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    lag_log_interval_s: float = 10.0  # a replication_lag line at least this often
    once_max_failures: int = 8  # --once gives up after this many failures in a row


class RunResult(msgspec.Struct, frozen=True):
    """What one run did."""

    checkpoint_seq: int
    batches: int
    rows: int
    failures: int


class Replicator:
    """Mirrors `source` into `sink`. `cache` (optional) records the checkpoint locally after
    each batch, for `status` while the sink is away."""

    def __init__(
        self,
        source: SqliteSource,
        sink: Sink,
        settings: Settings | None = None,
        *,
        cache: CheckpointStore | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.source = source
        self.sink = sink
        self.settings = settings or Settings()
        self._cache = cache
        self._sleep = sleep
        self._on_batch = on_batch
        # The sink's checkpoint as last read or advanced (None: not known yet), for metrics.
        self.checkpoint_seq: int | None = None

    async def run(self, *, once: bool = False, stop: asyncio.Event | None = None) -> RunResult:
        """Replicate until `stop` is set, or with `once` until the head seen at the start is
        mirrored. Raises SinkRejected (with `once`, or never without), or SinkUnavailable with
        `once` after `once_max_failures` failures in a row."""
        s = self.settings
        stop = stop or asyncio.Event()
        target = await self.source.head() if once else None
        checkpoint: int | None = None
        batches = rows = failures = total_failures = 0
        last_lag_log = last_cache_put = 0.0
        log.info("replicator_started", sink=self.sink.name, once=once, batch_rows=s.batch_rows)
        while not stop.is_set():
            try:
                if checkpoint is None:
                    checkpoint = self.checkpoint_seq = await self.sink.checkpoint()
                if target is not None and checkpoint >= target:
                    break
                batch = await self.source.read_batch(checkpoint, s.batch_rows)
                if batch.upto_seq == checkpoint:  # caught up
                    if time.monotonic() - last_lag_log >= s.lag_log_interval_s:
                        await self._log_lag("replication_lag", checkpoint)
                        last_lag_log = time.monotonic()
                    await _wait(stop, s.poll_interval_s, self._sleep)
                    continue
                t0 = time.perf_counter()
                await self.sink.apply(batch)
            except SourceError as e:
                # The local file is briefly unreadable (locked, being replaced): never a
                # reason to stop a continuous replicator.
                if once:
                    raise
                failures += 1
                total_failures += 1
                delay = backoff_s(failures, s.backoff_base_s, s.backoff_max_s)
                log.warning("source_unavailable", error=str(e), retry_in_s=round(delay, 3))
                await _wait(stop, delay, self._sleep)
                continue
            except CheckpointConflict as e:
                log.warning("checkpoint_conflict", sink=self.sink.name, error=str(e))
                checkpoint = None
                continue
            except (SinkUnavailable, SinkRejected) as e:
                failures += 1
                total_failures += 1
                rejected = isinstance(e, SinkRejected)
                if once and (rejected or failures >= s.once_max_failures):
                    log.error("replicator_gave_up", sink=self.sink.name, error=str(e))
                    raise
                delay = (
                    s.backoff_max_s
                    if rejected
                    else backoff_s(failures, s.backoff_base_s, s.backoff_max_s)
                )
                lag = await self._lag(checkpoint)
                (log.error if rejected else log.warning)(
                    "sink_rejected" if rejected else "sink_unavailable",
                    sink=self.sink.name,
                    error=str(e),
                    failures=failures,
                    retry_in_s=round(delay, 3),
                    **_lag_fields(lag),
                )
                checkpoint = None  # read it again: the transaction may have committed
                await _wait(stop, delay, self._sleep)
                continue
            checkpoint = self.checkpoint_seq = batch.upto_seq
            batches += 1
            rows += batch.row_count
            if failures:
                log.info("sink_recovered", sink=self.sink.name, after_failures=failures)
                failures = 0
            now = time.monotonic()
            if self._cache is not None and now - last_cache_put >= CACHE_INTERVAL_S:
                await self._cache.put(self.sink.name, checkpoint)
                last_cache_put = now
            if self._on_batch is not None:
                self._on_batch(checkpoint, batch.row_count)
            if now - last_lag_log >= s.lag_log_interval_s:
                last_lag_log = now
                await self._log_lag(
                    "replication_lag",
                    checkpoint,
                    batch_rows=batch.row_count,
                    batch_ms=round((time.perf_counter() - t0) * 1000, 1),
                )
            if checkpoint >= batch.head_seq and target is None:
                # Caught up with the head of that snapshot: pause rather than chase every few
                # new events with a batch of their own (the writer needs the CPU more).
                await _wait(stop, s.poll_interval_s, self._sleep)
        final = checkpoint if checkpoint is not None else await self.sink.checkpoint()
        if self._cache is not None:
            await self._cache.put(self.sink.name, final)
        await self._log_lag("replicator_stopped", final, batches=batches, rows=rows)
        return RunResult(checkpoint_seq=final, batches=batches, rows=rows, failures=total_failures)

    async def _lag(self, checkpoint: int | None) -> Lag | None:
        if checkpoint is None:
            cp = await self._cache.get(self.sink.name) if self._cache else None
            checkpoint = cp.last_seq if cp else None
        if checkpoint is None:
            return None
        return await self.source.lag(checkpoint)

    async def _log_lag(self, event: str, checkpoint: int, **fields: object) -> None:
        lag = await self.source.lag(checkpoint)
        log.info(event, sink=self.sink.name, **_lag_fields(lag), **fields)


def _lag_fields(lag: Lag | None) -> dict[str, object]:
    if lag is None:
        return {}
    return {
        "checkpoint_seq": lag.checkpoint_seq,
        "head_seq": lag.head_seq,
        "events_behind": lag.events_behind,
        "seconds_behind": lag.seconds_behind,
    }


async def _wait(
    stop: asyncio.Event, delay_s: float, sleep: Callable[[float], Awaitable[None]]
) -> None:
    """Sleep `delay_s`, or less if `stop` is set meanwhile."""
    if sleep is not asyncio.sleep:
        await sleep(delay_s)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay_s)


async def status(
    source: SqliteSource, sink_name: str, checkpoint_seq: int | None
) -> dict[str, object]:
    """The lag of one sink as a JSON-able dict (checkpoint None: never replicated)."""
    lag = await source.lag(checkpoint_seq or 0)
    return {"sink": sink_name, "replicated": checkpoint_seq is not None, **_lag_fields(lag)}
