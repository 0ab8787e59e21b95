"""Read models in PostgreSQL beside the log (schemas/postgres/002_projections.sql, generated
from dcp_projections.tables): the PostgreSQL implementation of the read side's interface
(dcp_app.readside).

Live: the same tx hook as SQLite's (`readside.batch_writer`), which the PostgreSQL store awaits
inside the batch's transaction, after the batch's events are inserted and before COMMIT.

Rebuild and catch-up run in one transaction that first locks the log's head row
(`events_head ... FOR UPDATE`, the row every append locks before it numbers its events): no
node appends meanwhile, so the tables are rebuilt as of a head that cannot move, and a node
that starts while another rebuilds waits, then finds the read models current and rebuilds
nothing. Rows go in by COPY; the tables are emptied with TRUNCATE (read models only: the
events table refuses it).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from dcp_app import foldlog
from dcp_app.readside import (
    ALL_TABLES,
    PROJECTION,
    SCHEMA_ROW,
    Dialect,
    Reads,
    RebuildReport,
    batch_writer,
    contents_sql,
    missing_columns,
    missing_tables,
    tables_fingerprint,
    to_dialect,
)
from dcp_events.codec import Codec, default_codec
from dcp_events.errors import StoreError
from dcp_events.event import Event
from dcp_events.store import TxHook
from dcp_projections import tables
from dcp_projections.fold import check_all
from dcp_projections.rows import POSTING_COLUMNS, TABLES, RowChanges, all_rows, posting_rows
from dcp_projections.state import State

READ_BATCH = 10_000  # events per read while rebuilding
CONNECT_TIMEOUT_S = 10

log = structlog.get_logger("dcp_app.readmodel_pg")

_HEAD_LOCK = "SELECT seq FROM events_head WHERE one FOR UPDATE"
_EVENTS = (
    "SELECT seq, type, schema_version, payload, recorded_at_us FROM events"
    " WHERE seq > %s AND seq <= %s ORDER BY seq LIMIT %s"
)


async def _connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
    )


async def _copy(
    conn: psycopg.AsyncConnection[Any],
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> None:
    async with (
        conn.cursor() as cur,
        cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        for row in rows:
            await copy.write_row(row)


async def _marks(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    cur = await conn.execute("SELECT name, last_seq FROM projection_state")
    return {name: seq for name, seq in await cur.fetchall()}


def _why_behind(head: int, marks: dict[str, int]) -> str | None:
    if head == 0:
        return None
    if marks.get(SCHEMA_ROW) != tables_fingerprint():
        return "written for other tables"
    if marks.get(PROJECTION, 0) != head:
        return f"at {marks.get(PROJECTION, 0)} of {head} events"
    return None


async def _missing_columns(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """The CREATE TABLE statements of the tables the specs name and the database lacks
    (readside.missing_tables), then the ALTER TABLE statements that would add the columns the
    specs name and the tables lack (readside.missing_columns)."""
    cur = await conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema()"
    )
    present: dict[str, set[str]] = {}
    for table, column in await cur.fetchall():
        present.setdefault(table, set()).add(column)
    wanted = {t.name for t in tables.ALL}
    have = {t: c for t, c in present.items() if t in wanted}
    return missing_tables(set(have), "postgres") + missing_columns(have, "postgres")


async def _add_missing_columns(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """Add them, inside the caller's transaction; the statements run."""
    statements = await _missing_columns(conn)
    for sql in statements:
        await conn.execute(sql)
    return statements


async def behind(dsn: str) -> str | None:
    """Why the read models at `dsn` must be rebuilt before they are served, or None."""
    async with await _connect(dsn) as conn:
        cur = await conn.execute("SELECT seq FROM events_head WHERE one")
        row = await cur.fetchone()
        return _why_behind(row[0] if row else 0, await _marks(conn))


PostingSink = Callable[[list[tuple[Any, ...]]], Awaitable[None]]


async def fold_log(
    conn: psycopg.AsyncConnection[Any],
    until_seq: int,
    codec: Codec | None = None,
    sink: PostingSink | None = None,
) -> State:
    """A state folded from the log read through `conn`, up to `until_seq` (inclusive); `sink`,
    when given, receives the posting rows of each batch of events as it is folded. The one
    fold loop (dcp_app.foldlog.fold_rows) over batches read through a psycopg connection.
    Raises InvariantError on a fault, DecodeError on an event that does not fit its schema."""
    codec = codec or default_codec()
    state = State()
    postings: list[tuple[Any, ...]] = []

    def collect(seq: int, event: Event, recorded_at_us: int) -> None:
        postings.extend(posting_rows(seq, event, recorded_at_us))

    after = 0
    while True:
        cur = await conn.execute(_EVENTS, (after, until_seq, READ_BATCH))
        rows = await cur.fetchall()
        if not rows:
            break
        try:
            foldlog.fold_rows(state, rows, codec, collect if sink is not None else None)
        except foldlog.FoldFault as f:
            raise f.error from None
        if sink is not None and postings:
            await sink(postings[:])
            postings.clear()
        after = rows[-1][0]
    return state


async def _rebuild_locked(
    conn: psycopg.AsyncConnection[Any], head: int, until_seq: int | None
) -> tuple[int, int]:
    """Inside a transaction holding the head lock: replace every table. (events, rows)."""
    last = head if until_seq is None else min(until_seq, head)
    await conn.execute(f"TRUNCATE {', '.join(ALL_TABLES)}, projection_state")
    n_postings = 0

    async def sink(batch: list[tuple[Any, ...]]) -> None:
        nonlocal n_postings
        n_postings += len(batch)
        await _copy(conn, "postings", POSTING_COLUMNS, batch)

    state = await fold_log(conn, last, sink=sink)
    check_all(state)
    rows = all_rows(state)
    for table, table_rows in rows.items():
        if table_rows:
            await _copy(conn, table, TABLES[table][1], [tuple(r.values()) for r in table_rows])
    await _copy(
        conn,
        "projection_state",
        ("name", "last_seq"),
        [(PROJECTION, state.seq), (SCHEMA_ROW, tables_fingerprint())],
    )
    return state.seq, sum(len(r) for r in rows.values()) + n_postings


async def rebuild(
    dsn: str, until_seq: int | None = None, *, only_if_behind: bool = False
) -> RebuildReport | None:
    """Rebuild every read model at `dsn` from its log as of `until_seq` (default: all), in one
    transaction holding the log's head lock. With `only_if_behind`, first check (under the
    lock) that they are behind, and return None when they are not. Raises InvariantError if the
    log breaks a money rule, DecodeError if an event does not decode; nothing changes then."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    # Millions of objects that all live to the end (dcp_app.foldlog).
    with foldlog.no_gc():
        async with await _connect(dsn) as conn, conn.transaction():
            cur = await conn.execute(_HEAD_LOCK)
            row = await cur.fetchone()
            head = row[0] if row else 0
            added = await _add_missing_columns(conn)  # before any row names them
            if only_if_behind:
                marks = await _marks(conn)
                reason = (
                    f"added {len(added)} tables or columns" if added else _why_behind(head, marks)
                )
                if reason is None:
                    return None
                log.warning("read_models_rebuilding", reason=reason)
            events, n_rows = await _rebuild_locked(conn, head, until_seq)
    return RebuildReport(
        events=events,
        last_seq=events,
        rows=n_rows,
        seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - cpu0,
    )


async def catch_up(dsn: str) -> RebuildReport | None:
    """Rebuild the read models at `dsn` if they are behind its log or were written for other
    tables; None when they are current. Appends wait meanwhile (the head lock)."""
    if await behind(dsn) is None:  # the common case takes no lock at all
        async with await _connect(dsn) as conn:
            if not await _missing_columns(conn):
                return None
    report = await rebuild(dsn, only_if_behind=True)
    if report is not None:
        log.info(
            "read_models_rebuilt",
            events=report.events,
            rows=report.rows,
            seconds=round(report.seconds, 2),
            events_per_s=round(report.events_per_s),
        )
    return report


async def table_contents(dsn: str, table: str) -> list[tuple[Any, ...]]:
    """Every row of a read-model table, sorted, its columns in the spec's order (as
    dcp_app.readmodel.table_contents), for comparisons."""
    async with await _connect(dsn) as conn:
        cur = await conn.execute(contents_sql(table))
        return sorted(await cur.fetchall(), key=repr)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # The queries only read; a bug that tried to write would fail here, not change a table.
    await conn.execute("SET default_transaction_read_only = on")


class PostgresReads:
    """`Reads` over a psycopg pool of its own, read-only, rows as dicts."""

    dialect: Dialect = "postgres"

    def __init__(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str, max_connections: int = 8) -> PostgresReads:
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max(2, max_connections),
            kwargs={
                "autocommit": True,
                "connect_timeout": CONNECT_TIMEOUT_S,
                "row_factory": dict_row,
            },
            configure=_configure,
            timeout=CONNECT_TIMEOUT_S,
            open=False,
            name="dcp-reads",
        )
        await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        return cls(pool)

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(_pg(sql), tuple(params))
                return list(await cur.fetchall())
        except psycopg.Error as e:  # PoolTimeout (no connection in time) is one too
            # As the store does: a server away is StoreError (503 at the API), not a crash.
            raise StoreError(f"read models unavailable: {e}") from e

    async def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = await self.all(sql, params)
        return rows[0] if rows else None

    def json_text(self, column: str, key: str) -> str:
        return f"({column}::json ->> '{key}')"

    def json_int(self, column: str, key: str) -> str:
        return f"({column}::json ->> '{key}')::bigint"

    async def close(self) -> None:
        await self._pool.close()


_PG_SQL: dict[str, str] = {}


def _pg(sql: str) -> str:
    """`sql` translated for psycopg, cached: the queries are a few dozen fixed texts (and their
    variants by filter), so the cache stays small."""
    out = _PG_SQL.get(sql)
    if out is None:
        out = _PG_SQL[sql] = to_dialect(sql, "postgres")
    return out


class PostgresReadModels:
    """`ReadModels` of a PostgreSQL ledger at `db` (a postgresql:// URL)."""

    def __init__(self, db: str) -> None:
        self.db = db

    @classmethod
    async def open(cls, db: str) -> PostgresReadModels:
        return cls(db)

    def batch_writer(self, events: Sequence[Event], first_seq: int, changes: RowChanges) -> TxHook:
        return batch_writer(events, first_seq, changes)

    async def behind(self) -> str | None:
        return await behind(self.db)

    async def catch_up(self) -> RebuildReport | None:
        return await catch_up(self.db)

    async def rebuild(self, until_seq: int | None = None) -> RebuildReport:
        report = await rebuild(self.db, until_seq)
        assert report is not None
        return report

    async def reads(self) -> Reads:
        return await PostgresReads.open(self.db)

    async def close(self) -> None:
        return None
