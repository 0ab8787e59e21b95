"""The read side behind its interface (dcp_app.readside), on both backends: the schema equals
the table specs, every query answers, read models behind the log are caught up."""

import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from dcp_app import readmodel, readmodel_pg
from dcp_app.read_sides import open_read_side
from dcp_app.readmodel import SqliteReadModels
from dcp_app.readmodel_pg import PostgresReadModels
from dcp_app.readside import (
    ALL_TABLES,
    PROJECTION,
    SCHEMA_ROW,
    to_dialect,
)
from dcp_events._append import COLUMNS
from dcp_events.catalogue import GpuInfo
from dcp_events.errors import StoreError
from dcp_events.postgres_store import PostgresEventStore
from dcp_projections import tables
from tests.dcp_app.conftest import IMAGE, SETTINGS, Env, read_model_contents
from tests.pg import create_database, drop_database


def _spec_columns(dialect: tables.Dialect) -> dict[str, list[tuple[str, str, bool]]]:
    return {
        t.name: [(c.name, tables.column_type(c.kind, dialect), c.nullable) for c in t.columns]
        for t in tables.ALL
    }


def _sqlite_columns(path: Path) -> dict[str, list[tuple[str, str, bool]]]:
    conn = sqlite3.connect(path)
    try:
        return {
            t.name: [
                (name, type_, not notnull)
                for _, name, type_, notnull, _, _ in conn.execute(f"PRAGMA table_info({t.name})")
            ]
            for t in tables.ALL
        }
    finally:
        conn.close()


def _sqlite_keys(path: Path) -> dict[str, tuple[str, ...]]:
    conn = sqlite3.connect(path)
    try:
        out = {}
        for t in tables.ALL:
            info = conn.execute(f"PRAGMA table_info({t.name})").fetchall()
            out[t.name] = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
        return out
    finally:
        conn.close()


def _pg_columns(url: str) -> dict[str, list[tuple[str, str, bool]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable = 'YES'"
            " FROM information_schema.columns WHERE table_schema = 'public'"
            " ORDER BY table_name, ordinal_position"
        ).fetchall()
    out: dict[str, list[tuple[str, str, bool]]] = {t.name: [] for t in tables.ALL}
    for table, column, type_, nullable in rows:
        if table in out:
            out[table].append((column, type_, nullable))
    return out


def _pg_keys(url: str) -> dict[str, tuple[str, ...]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname, a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
            " JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum"
            " WHERE i.indisprimary ORDER BY c.relname, k.n"
        ).fetchall()
    out: dict[str, tuple[str, ...]] = {}
    for table, column in rows:
        out[table] = (*out.get(table, ()), column)
    return {t.name: out.get(t.name, ()) for t in tables.ALL}


def _indexes(env: Env) -> dict[str, set[tuple[str, tuple[str, ...]]]]:
    out: dict[str, set[tuple[str, tuple[str, ...]]]] = {t.name: set() for t in tables.ALL}
    if env.backend == "sqlite":
        conn = sqlite3.connect(env.path)
        try:
            for t in tables.ALL:
                for _, name, _, origin, _ in conn.execute(f"PRAGMA index_list({t.name})"):
                    if origin == "c":  # CREATE INDEX, not the primary key's
                        cols = tuple(r[2] for r in conn.execute(f"PRAGMA index_info({name})"))
                        out[t.name].add((name, cols))
        finally:
            conn.close()
        return out
    with psycopg.connect(env.db) as conn:
        rows = conn.execute(
            "SELECT c.relname, ic.relname, a.attname FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid"
            " JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum"
            " WHERE NOT i.indisprimary ORDER BY ic.relname, k.n"
        ).fetchall()
    found: dict[tuple[str, str], tuple[str, ...]] = {}
    for table, index, column in rows:
        found[(table, index)] = (*found.get((table, index), ()), column)
    for (table, index), cols in found.items():
        if table in out:
            out[table].add((index, cols))
    return out


async def test_the_schema_of_each_backend_equals_the_table_specs(env: Env):
    """A fresh database of either backend has exactly the columns (name, type, nullability, in
    order), keys and indexes the specs define: the DDL files cannot drift from the one
    definition."""
    if env.backend == "sqlite":
        columns, keys = _sqlite_columns(env.path), _sqlite_keys(env.path)
    else:
        columns, keys = _pg_columns(env.db), _pg_keys(env.db)
    assert columns == _spec_columns("sqlite" if env.backend == "sqlite" else "postgres")
    assert keys == {t.name: t.key for t in tables.ALL}
    assert _indexes(env) == {t.name: set(t.indexes) for t in tables.ALL}


def test_the_ddl_files_are_the_specs_output():
    """schemas/002_projections.sql and schemas/postgres/002_projections.sql are what
    scripts/write_schemas.py writes from `tables.ddl` (adding a column: one spec edit, then
    the script)."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(root / "scripts" / "write_schemas.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for dialect, name in (
        ("sqlite", "002_projections.sql"),
        ("postgres", "postgres/002_projections.sql"),
    ):
        assert tables.ddl(dialect).lstrip("\n") in (root / "schemas" / name).read_text()


def test_sql_is_translated_for_psycopg():
    """`?` becomes %s and a literal % is doubled (psycopg's placeholders), for PostgreSQL only."""
    sql = "SELECT * FROM events WHERE type LIKE 'job.%' AND seq > ?"
    assert to_dialect(sql, "sqlite") == sql
    assert (
        to_dialect(sql, "postgres") == "SELECT * FROM events WHERE type LIKE 'job.%%' AND seq > %s"
    )


async def test_a_ledger_named_by_a_string_opens_its_read_side(env: Env):
    """A path opens the SQLite read side, a postgresql:// URL the PostgreSQL one."""
    side = await open_read_side(env.db)
    try:
        expected = SqliteReadModels if env.backend == "sqlite" else PostgresReadModels
        assert isinstance(side, expected)
        assert await side.behind() is None
        reads = await side.reads()
        try:
            assert reads.dialect == env.backend
            row = await reads.one(
                "SELECT last_seq FROM projection_state WHERE name = ?", (PROJECTION,)
            )
            assert row == {"last_seq": (await env.store.head())[0]}
        finally:
            await reads.close()
    finally:
        await side.close()


async def _scenario(env: Env) -> dict[str, str]:
    rid, pid = await env.renter(), await env.provider()
    await env.svc.heartbeat(pid, gpus=(GpuInfo(model="H100", vram_total_mb=81_920),))
    done = await env.submit(rid)
    env.clock.advance(1)  # the renter's list is newest first
    queued = await env.submit(rid)
    await env.svc.claim_jobs(pid)
    env.clock.advance(60)
    await env.svc.report_result(
        pid, done.job_id, 1, "completed", exit_code=0, runtime_seconds=60, stdout="hi"
    )
    await env.svc.heartbeat(pid, gpus=(GpuInfo(model="H100", vram_total_mb=81_920),))
    return {"rid": rid, "pid": pid, "done": done.job_id, "queued": queued.job_id}


async def test_every_query_answers_on_each_backend(env: Env):
    """Each query of dcp_app.queries runs on the backend's SQL and answers what the log says."""
    ids = await _scenario(env)
    q, now = env.queries, env.clock()
    rid, pid = ids["rid"], ids["pid"]
    assert await q.job_owner(ids["done"]) == rid and await q.job_owner("nope") is None
    queued = await q.job(ids["queued"], renter_id=rid)
    assert queued is not None and queued.queue_position == 1
    assert await q.job(ids["queued"], renter_id="someone-else") is None
    page = await q.jobs_of_renter(rid, limit=1)
    assert [j.job_id for j in page.jobs] == [ids["queued"]] and page.next_cursor
    rest = await q.jobs_of_renter(rid, cursor=page.next_cursor)
    assert [j.job_id for j in rest.jobs] == [ids["done"]] and rest.next_cursor is None
    assert [j.job_id for j in await q.jobs_of_provider(pid)] == [ids["done"]]
    assert (await q.job_output(ids["done"])).truncated is False
    assert (await q.renter(rid)).balance_halala == 100_000 - 12  # ceil(709 * 60 / 3600)
    assert len((await q.ledger(rid)).entries) >= 4
    provider = await q.provider(pid, now, SETTINGS)
    assert provider.state == "online" and provider.paused is False
    assert [(g.model, g.vram_total_mb) for g in provider.gpus] == [("H100", 81_920)]
    assert [p.provider_id for p in await q.marketplace(now, SETTINGS)] == [pid]
    assert await q.withdrawals() == [] and (await q.topups(renter_id=rid)).topups == []
    assert await q.topups_to_reconcile(now, (0, ""), 10) == []
    prices = {p.gpu_model: p.halala_per_gpu_hour for p in await q.pricing()}
    assert prices["H100"] == 709
    assert await q.images() == [IMAGE]
    recon = await q.reconciliation()
    assert recon.invariants_ok and recon.events == recon.head_seq > 0
    gauges = await q.gauges(now, SETTINGS)
    assert gauges["jobs"] == {"completed": 1, "queued": 1}
    assert gauges["renter_held_halala"] == 709 and gauges["sum_halala"] == 0
    assert isinstance(gauges["renter_available_halala"], int)  # a bigint sum, not a Decimal
    assert gauges["providers"] == [
        {"state": "online", "approval_status": "approved", "count": 1, "paused": 0, "suspended": 0}
    ]
    assert gauges["negative_accounts"] == 0 and gauges["head_seq"] == gauges["projection_seq"]
    assert await q.job_counts() == {"completed": 1, "queued": 1}
    assert [j.job_id for j in await q.jobs(status="queued")] == [ids["queued"]]
    assert [r.renter_id for r in await q.renters()] == [rid]
    assert [p.provider_id for p in await q.providers(now, SETTINGS)] == [pid]
    events = await q.job_events(rid, ids["done"])
    assert events[0].type == "job.submitted"
    assert events[-1].type == "job.completed" and events[-1].attempt == 1


async def _damage(env: Env, sql: list[tuple[str, tuple]]) -> None:
    if env.backend == "sqlite":
        conn = sqlite3.connect(env.path)
        try:
            for s, p in sql:
                conn.execute(s, p)
            conn.commit()
        finally:
            conn.close()
    else:
        with psycopg.connect(env.db, autocommit=True) as conn:
            for s, p in sql:
                conn.execute(to_dialect(s, "postgres"), p)


async def test_read_models_behind_the_log_are_caught_up(env: Env):
    """Rows lost with the checkpoint moved back, tables written for other columns, an
    events-only copy (every read-model table empty): catch-up rebuilds the same tables; current
    read models are left alone."""
    await _scenario(env)
    original = await read_model_contents(env.db)
    side = await open_read_side(env.db)
    head = (await env.store.head())[0]
    try:
        assert await side.catch_up() is None
        await _damage(
            env,
            [
                ("DELETE FROM jobs", ()),
                ("UPDATE projection_state SET last_seq = ? WHERE name = ?", (2, PROJECTION)),
            ],
        )
        assert await side.behind() == f"at 2 of {head} events"
        report = await side.catch_up()
        assert report is not None and report.events == head
        assert await read_model_contents(env.db) == original
        await _damage(
            env, [("UPDATE projection_state SET last_seq = 1 WHERE name = ?", (SCHEMA_ROW,))]
        )
        assert await side.behind() == "written for other tables"
        assert await side.catch_up() is not None
        assert await read_model_contents(env.db) == original
        await _damage(env, [(f"DELETE FROM {t}", ()) for t in (*ALL_TABLES, "projection_state")])
        assert await side.behind() is not None
        await side.catch_up()
        assert await read_model_contents(env.db) == original
        assert await side.behind() is None
    finally:
        await side.close()
    # The service goes on writing onto the caught-up tables.
    await env.renter()
    assert (await env.queries.reconciliation()).invariants_ok


async def test_a_rebuild_as_of_a_sequence_on_each_backend(env: Env):
    """A rebuild up to a sequence writes that point's tables and checkpoint."""
    ids = await _scenario(env)
    if env.backend == "sqlite":
        report = readmodel.rebuild(env.db, until_seq=3)
    else:
        report = await readmodel_pg.rebuild(env.db, until_seq=3)
    assert report is not None and report.last_seq == 3
    assert await env.queries.projection_seq() == 3
    assert (await env.queries.jobs_of_renter(ids["rid"])).jobs == []


def _copy_log_to_postgres(sqlite_path: Path, url: str) -> int:
    """Every event of a SQLite log into an empty PostgreSQL log (schema applied), as one
    batch; returns the head."""
    src = sqlite3.connect(sqlite_path)
    try:
        rows = src.execute(f"SELECT {COLUMNS} FROM events ORDER BY seq").fetchall()
    finally:
        src.close()
    with psycopg.connect(url) as conn:
        with conn.cursor().copy(f"COPY events ({COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute("UPDATE events_head SET seq = %s, hash = %s", (rows[-1][0], rows[-1][-1]))
    return int(rows[-1][0])


async def test_the_same_log_gives_the_same_read_models_on_both_backends(
    sqlite_env: Env, pg_server_dsn: str
):
    """A SQLite ledger's log copied into PostgreSQL and caught up there: every read-model
    table holds exactly the SQLite ledger's rows."""
    env = sqlite_env
    await _scenario(env)
    name, url = create_database(pg_server_dsn, "dcp_app")
    try:
        store = await PostgresEventStore.open(url)  # applies the schema
        await store.close()
        head = _copy_log_to_postgres(env.path, url)
        side = await open_read_side(url)
        assert await side.behind() == "written for other tables"  # nothing written yet
        report = await side.catch_up()
        assert report is not None and report.last_seq == head
        assert await read_model_contents(url) == await read_model_contents(env.db)
    finally:
        drop_database(pg_server_dsn, name)


async def test_a_column_added_to_a_spec_reaches_an_existing_database(env: Env):
    """A database written before a column existed (here: the column dropped) gets it at its
    next catch-up, from the spec, and every row's value from the rebuild that follows."""
    await _scenario(env)
    original = await read_model_contents(env.db)
    await _damage(env, [("ALTER TABLE job_outputs DROP COLUMN last_seq", ())])
    side = await open_read_side(env.db)
    try:
        report = await side.catch_up()
        assert report is not None
        assert await read_model_contents(env.db) == original
        assert await side.catch_up() is None
    finally:
        await side.close()
    sqlite = env.backend == "sqlite"
    columns = _sqlite_columns(env.path) if sqlite else _pg_columns(env.db)
    assert columns == _spec_columns("sqlite" if sqlite else "postgres")


async def test_a_failing_postgres_read_is_a_store_error(pg_server_dsn: str):
    """On PostgreSQL a read that fails (here: a table that is not there) raises StoreError, as
    the store's reads do (the API answers 503 store_unavailable), never psycopg's own error."""
    name, url = create_database(pg_server_dsn, "dcp_app")
    try:
        await (await PostgresEventStore.open(url)).close()  # the schema
        side = await open_read_side(url)
        reads = await side.reads()
        try:
            with pytest.raises(StoreError, match="read models unavailable"):
                await reads.all("SELECT * FROM no_such_table WHERE x = ?", (1,))
            assert await reads.one("SELECT 1 AS one", ()) == {"one": 1}  # the pool goes on
        finally:
            await reads.close()
            await side.close()
    finally:
        drop_database(pg_server_dsn, name)
