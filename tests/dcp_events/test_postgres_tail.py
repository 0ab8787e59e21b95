"""A tail never misses an event, whatever commits concurrently: several writer processes (each
its own node, its own group commits, clashing and retrying atomic appends) and several reader
processes tailing the same PostgreSQL log, fast and slow. Every reader must have seen every
event of the final log exactly once, in sequence order (docs/postgres.md, "Why a tail cannot
skip")."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from pathlib import Path

import pytest

from dcp_events.postgres_store import PostgresEventStore
from dcp_events.store import NewEvent

from ._log_check import check_log, read_log

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PROCS = Path(__file__).with_name("_tail_procs.py")
WRITERS, TASKS, APPENDS = 5, 6, 25
# (batch size, pause after each batch): a fast reader, a small-batch one, a slow one that lags.
READERS = [(1000, 0.0), (7, 0.0), (50, 0.02)]


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return await asyncio.create_subprocess_exec(sys.executable, str(PROCS), *args, env=env)


async def test_tails_in_other_processes_see_every_event_once_in_order(
    pg_dsn: str, tmp_path: Path
) -> None:
    store = await PostgresEventStore.open(pg_dsn)  # the schema, before anyone races for it
    outs = [tmp_path / f"reader-{r}.txt" for r in range(len(READERS))]
    readers = [
        await _spawn("read", pg_dsn, str(b), str(p), str(out))
        for (b, p), out in zip(READERS, outs, strict=True)
    ]
    writers = [
        await _spawn("write", pg_dsn, str(w), str(TASKS), str(APPENDS)) for w in range(WRITERS)
    ]
    codes = await asyncio.wait_for(asyncio.gather(*[p.wait() for p in writers]), 300)
    assert codes == [0] * WRITERS
    # The last event, after every writer is done: a reader stops once it has seen it.
    await store.append("stop", 0, [NewEvent("tail.stop", 1, b'{"type":"tail.stop"}')])
    codes = await asyncio.wait_for(asyncio.gather(*[p.wait() for p in readers]), 300)
    assert codes == [0] * len(READERS)
    await store.close()

    final = list(read_log(pg_dsn))
    streams = check_log(final)
    # Every writer task appended APPENDS times; about half also put one event on a shared stream.
    assert len(streams) == WRITERS * TASKS + WRITERS + 1
    assert len(final) > WRITERS * TASKS * APPENDS
    # The writers did run at once: their commits interleave in the log, not one after another.
    switches = sum(1 for a, b in itertools.pairwise(final) if a.actor != b.actor)
    assert switches > 4 * WRITERS
    expected = [f"{e.seq} {e.hash}" for e in final]
    for (batch_size, _), out in zip(READERS, outs, strict=True):
        seen = out.read_text().splitlines()
        assert len(seen) == len(expected), f"reader with batches of {batch_size}"
        assert seen == expected, f"reader with batches of {batch_size}"
