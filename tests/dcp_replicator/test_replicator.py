"""The loop itself, with an in-memory sink: lag in its log lines, backoff during outages,
giving up only with --once, and bounded batches."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from dcp_replicator.errors import SinkRejected, SinkUnavailable
from dcp_replicator.replicator import Replicator, Settings, status
from dcp_replicator.source import Batch, SqliteSource

from .conftest import head_seq


class MemorySink:
    """Keeps the latest version of every row; fails on demand."""

    name = "memory"

    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.cp = 0
        self.rows: dict[tuple[str, object], tuple] = {}
        self.failures = list(failures or [])
        self.batch_sizes: list[int] = []

    async def checkpoint(self) -> int:
        return self.cp

    async def apply(self, batch: Batch) -> None:
        if self.failures:
            raise self.failures.pop(0)
        assert batch.after_seq == self.cp
        for table, rows in batch.rows.items():
            for r in rows:
                self.rows[(table, r[0] if table != "dcp_postings" else r[:2])] = r
        self.batch_sizes.append(batch.row_count)
        self.cp = batch.upto_seq

    async def close(self) -> None:
        pass


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)
        await asyncio.sleep(0)


async def test_lag_in_log_lines(ledger_db):
    """Outage and progress lines carry events_behind and seconds_behind."""
    sink = MemorySink([SinkUnavailable("down")])
    source = await SqliteSource.open(ledger_db)
    settings = Settings(batch_rows=250, lag_log_interval_s=0.0)
    with capture_logs() as logs:
        result = await Replicator(source, sink, settings, sleep=Sleeps()).run(once=True)
    await source.close()
    assert result.checkpoint_seq == sink.cp == head_seq(ledger_db)
    by_event = {}
    for line in logs:
        by_event.setdefault(line["event"], []).append(line)
    down = by_event["sink_unavailable"][0]
    assert down["events_behind"] == head_seq(ledger_db) and down["seconds_behind"] > 0
    progress = by_event["replication_lag"]
    assert len(progress) == result.batches
    assert progress[0]["events_behind"] > progress[-1]["events_behind"] == 0
    assert by_event["replicator_stopped"][0]["events_behind"] == 0
    assert max(sink.batch_sizes) <= 250


async def test_backoff_grows_then_recovers(ledger_db):
    """Consecutive outages wait longer each time, capped; success resets the count."""
    sink = MemorySink([SinkUnavailable("down")] * 6)
    sleeps = Sleeps()
    source = await SqliteSource.open(ledger_db)
    settings = Settings(backoff_base_s=1.0, backoff_max_s=8.0)
    with capture_logs() as logs:
        result = await Replicator(source, sink, settings, sleep=sleeps).run(once=True)
    await source.close()
    assert result.failures == 6 and sink.cp == head_seq(ledger_db)
    for delay, n in zip(sleeps.delays, range(1, 7), strict=False):
        assert 0.5 * min(8.0, 2 ** (n - 1)) <= delay <= min(8.0, 2 ** (n - 1))
    assert any(line["event"] == "sink_recovered" for line in logs)


async def test_once_gives_up_but_continuous_does_not(ledger_db):
    """--once stops at a rejection; the continuous loop waits the longest backoff and goes on."""
    source = await SqliteSource.open(ledger_db)
    with pytest.raises(SinkRejected):
        await Replicator(source, MemorySink([SinkRejected("bad")]), sleep=Sleeps()).run(once=True)
    with pytest.raises(SinkUnavailable):
        await Replicator(
            source, MemorySink([SinkUnavailable("x")] * 20), Settings(once_max_failures=3),
            sleep=Sleeps(),
        ).run(once=True)  # fmt: skip

    sink = MemorySink([SinkRejected("bad"), SinkRejected("bad")])
    sleeps = Sleeps()
    stop = asyncio.Event()
    task = asyncio.create_task(
        Replicator(source, sink, Settings(backoff_max_s=30.0), sleep=sleeps).run(stop=stop)
    )
    while sink.cp < head_seq(ledger_db):
        await asyncio.sleep(0.01)
    stop.set()
    result = await asyncio.wait_for(task, 5)
    await source.close()
    assert sleeps.delays[:2] == [30.0, 30.0]
    assert result.failures == 2 and result.checkpoint_seq == head_seq(ledger_db)


async def test_status_reports_lag(ledger_db):
    """status() names the sink and its lag; a sink that never replicated says so."""
    source = await SqliteSource.open(ledger_db)
    never = await status(source, "supabase", None)
    half = await status(source, "supabase", 1500)
    await source.close()
    assert never["replicated"] is False and never["events_behind"] == head_seq(ledger_db)
    assert half["events_behind"] == head_seq(ledger_db) - 1500 and half["seconds_behind"] > 0
