"""The contract every sink keeps, run against each implementation on the real PostgreSQL:
PostgresSink directly, and SupabaseSink through supabase-py into the PostgREST stand-in
(pgrest.FakePostgrest, because no PostgREST can run here) executing PostgREST's SQL."""

from __future__ import annotations

import contextlib

import httpx
import psycopg
import pytest

from dcp_replicator.checkpoint import CheckpointStore
from dcp_replicator.errors import CheckpointConflict
from dcp_replicator.postgres_sink import PostgresSink, migration_files
from dcp_replicator.source import SqliteSource
from dcp_replicator.supabase_sink import SupabaseSink
from dcp_replicator.tables import MIRRORED

from .conftest import assert_mirrored, head_seq, target_rows
from .pgrest import FakePostgrest


@pytest.fixture(params=["postgres", "supabase"])
async def sink(request, pg_dsn, tmp_path):
    if request.param == "postgres":
        s = await PostgresSink.connect(pg_dsn)
    else:
        with psycopg.connect(pg_dsn) as conn:
            for f in migration_files():
                conn.execute(f.read_text())
        http = httpx.AsyncClient(transport=FakePostgrest(pg_dsn).transport(), timeout=5.0)
        s = await SupabaseSink.create(
            "http://localhost:54321", "key", CheckpointStore(tmp_path / "cp"), http=http
        )
    yield s
    await s.close()


async def test_starts_at_zero(sink):
    """A sink that never acknowledged anything is at checkpoint 0."""
    assert await sink.checkpoint() == 0


async def test_batches_in_order_mirror_the_source(sink, ledger_db, pg_dsn):
    """Applying consecutive batches moves the checkpoint to each batch's end and leaves the
    target equal to the source."""
    source = await SqliteSource.open(ledger_db)
    cp = 0
    while (batch := await source.read_batch(cp, 400)).upto_seq > cp:
        await sink.apply(batch)
        cp = batch.upto_seq
        assert await sink.checkpoint() == cp
    await source.close()
    assert cp == head_seq(ledger_db)
    assert_mirrored(ledger_db, pg_dsn)


async def test_an_old_batch_again_changes_nothing(sink, ledger_db, pg_dsn):
    """Re-applying an earlier batch (a replay after a lost acknowledgement, a restart from an
    older checkpoint) is refused or is a no-op: rows and checkpoint stay as they were."""
    source = await SqliteSource.open(ledger_db)
    first = await source.read_batch(0, 400)
    await sink.apply(first)
    rest = await source.read_batch(first.upto_seq, 1_000_000)
    await sink.apply(rest)
    await source.close()
    before = {t.target: target_rows(pg_dsn, t) for t in MIRRORED}
    with contextlib.suppress(CheckpointConflict):
        await sink.apply(first)
    assert await sink.checkpoint() == rest.upto_seq
    assert {t.target: target_rows(pg_dsn, t) for t in MIRRORED} == before
    assert_mirrored(ledger_db, pg_dsn)
