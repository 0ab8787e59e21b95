"""The Supabase sink at the wire, under faults, and with PostgREST's SQL on a real PostgreSQL.

No PostgREST or Supabase can run here, so `pgrest.FakePostgrest`, an httpx MockTransport
handler, stands in for it: supabase-py's real async client sends its real requests through the
injected httpx client into it, where they are recorded, faults are injected, and (given a DSN)
the upsert PostgREST would run is executed against the real PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import psycopg
import pytest

from dcp_replicator.checkpoint import CheckpointStore
from dcp_replicator.errors import SinkRejected, SinkUnavailable
from dcp_replicator.postgres_sink import migration_files
from dcp_replicator.replicator import Replicator, Settings
from dcp_replicator.source import Batch, SqliteSource
from dcp_replicator.supabase_sink import DEFAULT_TIMEOUT, SupabaseSink, to_json_row
from dcp_replicator.tables import ACCOUNTS, MIRRORED

from .conftest import assert_mirrored, head_seq, local_rows
from .pgrest import FakePostgrest, upsert_sql

URL = "https://project-ref.supabase.co"
KEY = "service-role-key-for-tests"
BY_TARGET = {t.target: t for t in MIRRORED}


class Sleeps:
    """A sleep that returns at once and remembers what it was asked."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)


async def make_sink(fake: FakePostgrest, cp_path: Path, **kwargs) -> SupabaseSink:
    http = httpx.AsyncClient(transport=fake.transport(), timeout=httpx.Timeout(5.0))
    kwargs.setdefault("sleep", Sleeps())
    return await SupabaseSink.create(URL, KEY, CheckpointStore(cp_path), http=http, **kwargs)


def migrate(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        for f in migration_files():
            conn.execute(f.read_text())


async def one_batch(db: Path, max_rows: int = 1_000_000) -> Batch:
    source = await SqliteSource.open(db)
    try:
        return await source.read_batch(0, max_rows)
    finally:
        await source.close()


async def test_wire_requests_are_bulk_upserts(ledger_db, tmp_path):
    """Each table goes as POST /rest/v1/<table>?on_conflict=<key>&columns=... with
    Prefer return=minimal and merge-duplicates, full uniform rows, then the state row."""
    fake = FakePostgrest()
    sink = await make_sink(fake, tmp_path / "cp")
    batch = await one_batch(ledger_db)
    await sink.apply(batch)
    await sink.close()

    *row_requests, state = fake.requests
    assert {r.table for r in row_requests} == {t.target for t in MIRRORED}
    for r in fake.requests:
        t = BY_TARGET.get(r.table)
        assert r.method == "POST"
        assert r.path == f"/rest/v1/{r.table}"
        assert r.headers["prefer"] == "return=minimal,resolution=merge-duplicates"
        assert r.headers["apikey"] == KEY
        assert r.headers["authorization"] == f"Bearer {KEY}"
        assert r.headers["content-type"] == "application/json"
        assert set(r.params) == {"on_conflict", "columns"}
        if t is None:
            continue
        assert r.params["on_conflict"] == ",".join(t.target_key)
        assert sorted(r.columns) == sorted(t.target_columns)
        assert all(list(row) == list(t.target_columns) for row in r.body), "uniform full rows"
    # The body is the local rows, converted: flags as booleans, JSON columns as JSON.
    sent = {r.table: [] for r in row_requests}
    for r in row_requests:
        sent[r.table].extend(r.body)
    for t in MIRRORED:
        expected = [
            dict(zip(t.target_columns, row, strict=True)) for row in local_rows(ledger_db, t)
        ]
        got = sorted(sent[t.target], key=lambda d: tuple(d[k] for k in t.target_key))
        assert got == expected, t.target
    provider = sent["dcp_providers"][0]
    assert isinstance(provider["paused"], bool) and isinstance(provider["gpus"], list)
    assert state.table == "dcp_replication_state"
    assert state.params["on_conflict"] == "sink"
    assert state.body[0]["sink"] == "supabase"
    assert state.body[0]["last_seq"] == batch.upto_seq == head_seq(ledger_db)
    assert await sink.checkpoint() == batch.upto_seq


async def test_rows_deduplicated_per_key(tmp_path):
    """Two versions of one row in a batch go as one row, the newer."""
    fake = FakePostgrest()
    sink = await make_sink(fake, tmp_path / "cp")
    rows = [("renter:a:available", 10, 3), ("renter:a:available", 25, 7), ("renter:b:held", 1, 5)]
    await sink.apply(Batch(after_seq=0, upto_seq=7, head_seq=7, rows={"dcp_accounts": rows}))
    body = fake.requests[0].body
    assert sorted(body, key=lambda r: r["account_id"]) == [
        {"account_id": "renter:a:available", "balance_halala": 25, "last_seq": 7},
        {"account_id": "renter:b:held", "balance_halala": 1, "last_seq": 5},
    ]


async def test_requests_bounded_by_rows_and_bytes(ledger_db, tmp_path):
    """No request carries more than max rows or (beyond a single row) max bytes."""
    fake = FakePostgrest()
    sink = await make_sink(
        fake, tmp_path / "cp", max_rows_per_request=50, max_bytes_per_request=8_000
    )
    batch = await one_batch(ledger_db)
    await sink.apply(batch)
    sizes = [len(json.dumps(r.body, separators=(",", ":")).encode()) for r in fake.requests]
    assert all(len(r.body) <= 50 for r in fake.requests)
    assert all(
        size <= 8_000 or len(r.body) == 1 for r, size in zip(fake.requests, sizes, strict=True)
    )
    assert sum(len(r.body) for r in fake.requests[:-1]) == batch.row_count
    assert len(fake.requests) > batch.row_count // 50


async def test_recovers_from_503_timeout_and_dropped_connections(ledger_db, tmp_path, pg_dsn):
    """Transient faults, even a lost acknowledgement after commit, are retried with backoff
    and the target ends equal to the source."""
    migrate(pg_dsn)
    fake = FakePostgrest(pg_dsn)
    fake.faults.extend(["503", "timeout", "drop", "503json", "drop_after_commit", None, "503"])
    sleeps = Sleeps()
    sink = await make_sink(fake, tmp_path / "cp", sleep=sleeps, max_rows_per_request=400)
    batch = await one_batch(ledger_db)
    await sink.apply(batch)
    assert sink.retries == 6
    # Attempts 1-5 of the first request, then attempt 1 of the next: 0.5 s doubling, jittered
    # down to half at most.
    for delay, attempt in zip(sleeps.delays, [1, 2, 3, 4, 5, 1], strict=True):
        assert 0.25 * 2 ** (attempt - 1) <= delay <= 0.5 * 2 ** (attempt - 1)
    assert await sink.checkpoint() == batch.upto_seq
    assert_mirrored(ledger_db, pg_dsn)


async def test_persistent_outage_leaves_the_checkpoint(ledger_db, tmp_path):
    """After max_attempts failures the batch fails as SinkUnavailable; nothing is checkpointed."""
    fake = FakePostgrest()
    fake.faults.extend(["503"] * 4)
    sink = await make_sink(fake, tmp_path / "cp", max_attempts=4)
    with pytest.raises(SinkUnavailable):
        await sink.apply(await one_batch(ledger_db))
    assert len(fake.requests) == 4
    assert await sink.checkpoint() == 0


async def test_refused_request_is_not_retried(ledger_db, tmp_path):
    """A 400 is permanent: SinkRejected at once, checkpoint unchanged."""
    fake = FakePostgrest()
    fake.faults.append("400")
    sink = await make_sink(fake, tmp_path / "cp")
    with pytest.raises(SinkRejected, match="PGRST204"):
        await sink.apply(await one_batch(ledger_db))
    assert len(fake.requests) == 1
    assert await sink.checkpoint() == 0


async def test_replicator_rides_out_an_outage_into_real_postgres(ledger_db, tmp_path, pg_dsn):
    """The loop backs off through an outage longer than one request's retries, then catches
    up; PostgREST's upsert SQL on the real server yields exactly the local read models."""
    migrate(pg_dsn)
    fake = FakePostgrest(pg_dsn)
    fake.faults.extend(["503"] * 7 + ["drop"] * 3)
    sleeps = Sleeps()
    sink = await make_sink(fake, tmp_path / "cp", max_attempts=3, sleep=sleeps)
    source = await SqliteSource.open(ledger_db)
    replicator = Replicator(source, sink, Settings(batch_rows=700), sleep=sleeps)
    result = await replicator.run(once=True)
    await source.close()
    assert result.failures == 3  # 10 faults, 3 attempts per request: 3 batch failures
    assert result.checkpoint_seq == head_seq(ledger_db)
    counts = assert_mirrored(ledger_db, pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        dup = conn.execute(
            "SELECT count(*) - count(DISTINCT (seq, idx)) FROM dcp_postings"
        ).fetchone()[0]
        state = conn.execute("SELECT last_seq FROM dcp_replication_state").fetchall()
    assert dup == 0 and counts["dcp_postings"] > 0
    assert state == [(head_seq(ledger_db),)]


async def test_postgrest_upsert_only_moves_rows_forward(pg_dsn):
    """PostgREST's upsert cannot say WHERE excluded.last_seq > t.last_seq; the target's
    trigger makes a stale row a no-op, and a newer one still lands."""
    migrate(pg_dsn)
    cols = list(ACCOUNTS.target_columns)
    with psycopg.connect(pg_dsn) as conn:
        types = {c: "bigint" if c != "account_id" else "text" for c in cols}
        stmt = upsert_sql("dcp_accounts", cols, types, ["account_id"])
        seen = []
        for balance, seq in [(100, 10), (50, 4), (70, 10), (120, 11)]:
            row = to_json_row(ACCOUNTS, ("platform:revenue", balance, seq))
            conn.execute(stmt, (json.dumps([row]),))
            seen.append(
                conn.execute("SELECT balance_halala, last_seq FROM dcp_accounts").fetchone()
            )
    assert seen == [(100, 10), (100, 10), (100, 10), (120, 11)]


async def test_default_client_has_timeouts(tmp_path):
    """Without an injected client the sink makes one with finite timeouts."""
    sink = await SupabaseSink.create(URL, KEY, CheckpointStore(tmp_path / "cp"))
    timeout = sink._http.timeout
    await sink.close()
    assert timeout == DEFAULT_TIMEOUT
    assert None not in (timeout.connect, timeout.read, timeout.write, timeout.pool)
