"""Reading the local read models: bounded batches that cover every row exactly, the lag, and a
read-only connection that never holds up the writer."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from dcp_events import catalogue as ev
from dcp_replicator.errors import SourceError
from dcp_replicator.source import SqliteSource
from dcp_replicator.tables import MIRRORED, NEVER_MIRRORED

from .conftest import head_seq, local_rows
from .ledger import Ledger

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "supabase"


@pytest.mark.parametrize("max_rows", [1, 37, 500, 100_000])
async def test_batches_cover_every_row_once(ledger_db, max_rows):
    """Walking the log in batches of at most max_rows rows yields every row exactly once,
    with checkpoints that only grow."""
    source = await SqliteSource.open(ledger_db)
    seen: dict[str, list] = {t.target: [] for t in MIRRORED}
    checkpoint, batches = 0, 0
    while True:
        batch = await source.read_batch(checkpoint, max_rows)
        if batch.upto_seq == checkpoint:
            break
        assert batch.upto_seq > checkpoint and batch.after_seq == checkpoint
        one_event = batch.upto_seq == checkpoint + 1
        assert batch.row_count <= max_rows or one_event
        for name, rows in batch.rows.items():
            seen[name].extend(rows)
        checkpoint, batches = batch.upto_seq, batches + 1
    await source.close()
    assert checkpoint == head_seq(ledger_db)
    for t in MIRRORED:
        # A row changed by several events is read once: in the batch of its last change.
        key = [t.target_columns.index(k) for k in t.target_key]
        got = sorted(seen[t.target], key=lambda r, key=key: tuple(r[i] for i in key))
        assert [_norm(t, r) for r in got] == local_rows(ledger_db, t), t.target
    if max_rows == 1:
        assert batches > 1000


def _norm(t, row):
    out = []
    for c, v in zip(t.columns, row, strict=True):
        if v is not None and c.kind == "bool":
            v = bool(v)
        elif v is not None and c.kind == "json":
            v = json.loads(v)
        out.append(v)
    return tuple(out)


async def test_one_big_event_is_taken_whole(tmp_path):
    """An event that changed more rows than the bound goes in one batch, not split: a
    heartbeat that renews the leases of 12 jobs changes 13 rows (the jobs and the provider)."""
    path = tmp_path / "dcp.db"
    async with await Ledger.open(path, renters=0, providers=0) as ledger:
        svc = ledger.svc
        await svc.register_renter("renter", "r@example.sa")
        await svc.register_provider("provider", "p@example.sa", "H100", 16, 80)
        (rid,), (pid,) = svc.state.renters, svc.state.providers
        await svc.credit(rid, 10_000_000, "seed")
        await svc.approve_provider(pid)
        await svc.allow_image("dcp/pytorch:2.3")
        spec = ev.ContainerSpec(image="dcp/pytorch:2.3", command=("python", "train.py"))
        for _ in range(12):
            await svc.submit_job(rid, spec, ev.GpuRequirements(gpu_type="H100"))
        await svc.heartbeat(pid)
        await svc.claim_jobs(pid)
        leased = sorted(svc.state.providers[pid].leased)
        assert len(leased) == 12
        before = ledger.head
        await svc.heartbeat(pid, running_job_ids=leased)
        assert ledger.head == before + 1
    source = await SqliteSource.open(path)
    first = await source.read_batch(before - 1, 10)
    second = await source.read_batch(first.upto_seq, 10)
    await source.close()
    assert (first.upto_seq, second.upto_seq) == (before, before + 1)
    assert second.row_count > 10 and len(second.rows["dcp_jobs"]) == 12


async def test_lag_in_events_and_seconds(ledger_db):
    """Events behind = head - checkpoint; seconds behind = age of the oldest unmirrored event."""
    head = head_seq(ledger_db)
    source = await SqliteSource.open(ledger_db)
    conn = sqlite3.connect(ledger_db)
    (t1,) = conn.execute("SELECT recorded_at_us FROM events WHERE seq = 1001").fetchone()
    conn.close()
    lag = await source.lag(1000, now_s=t1 / 1e6 + 12.5)
    caught_up = await source.lag(head)
    await source.close()
    assert (lag.head_seq, lag.events_behind, lag.seconds_behind) == (head, head - 1000, 12.5)
    assert (caught_up.events_behind, caught_up.seconds_behind) == (0, 0.0)


async def test_read_only_and_never_blocks_the_writer(ledger_db):
    """The replicator's connection cannot write, and a read snapshot held open does not stop
    the store from committing."""
    source = await SqliteSource.open(ledger_db)
    with pytest.raises(sqlite3.OperationalError):
        source._conn.execute("DELETE FROM accounts")
    source._conn.execute("BEGIN")
    source._conn.execute("SELECT count(*) FROM accounts").fetchone()  # snapshot taken
    before = head_seq(ledger_db)
    ledger = await Ledger.open(ledger_db, seed=3)
    t0 = time.perf_counter()
    head = await asyncio.wait_for(ledger.grow(200), 10)
    elapsed = time.perf_counter() - t0
    await ledger.close()
    source._conn.execute("COMMIT")
    assert head_seq(ledger_db) == head >= before + 200
    assert elapsed < 5.0
    assert (await source.read_batch(before, 100_000)).upto_seq == head
    await source.close()


async def test_refuses_what_is_not_a_dcp_database(tmp_path):
    """A missing file or one without the read models is a SourceError, not a crash later."""
    with pytest.raises(SourceError, match="no database"):
        await SqliteSource.open(tmp_path / "missing.db")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE x (y)").connection.close()
    with pytest.raises(SourceError, match="lacks tables"):
        await SqliteSource.open(other)


def test_secrets_and_outputs_are_never_mirrored():
    """No mirrored table is credentials or job_outputs, and no target column holds a key."""
    assert not {t.local for t in MIRRORED} & NEVER_MIRRORED
    ddl = "".join(f.read_text() for f in SCHEMA.glob("*.sql")).lower()
    ddl = re.sub(r"--[^\n]*", "", ddl)  # comments may name what is left out
    assert "key_hash" not in ddl and "api_key" not in ddl and "credentials (" not in ddl
    for t in MIRRORED:
        assert "last_seq" in t.target_columns, t.target


async def test_rows_seeded_without_an_event_go_in_the_first_batch(ledger_db, tmp_path):
    """A row with last_seq 0 (a ledger from before genesis events held its seeded default
    price so, without an event) is mirrored by the first batch. A new ledger's prices come from
    its genesis events, so the old shape is made on a copy."""
    old = tmp_path / "old.db"
    shutil.copy(ledger_db, old)
    conn = sqlite3.connect(old)
    with conn:
        conn.execute("UPDATE pricing SET last_seq = 0 WHERE gpu_model = 'default'")
    seeded = conn.execute("SELECT gpu_model FROM pricing WHERE last_seq = 0").fetchall()
    conn.close()
    assert seeded == [("default",)]
    source = await SqliteSource.open(old)
    first = await source.read_batch(0, 10)
    later = await source.read_batch(first.upto_seq, 100_000)
    await source.close()
    assert ("default", 33, 0) in first.rows["dcp_pricing"]
    assert all(r[0] != "default" for r in later.rows.get("dcp_pricing", []))
