"""Read models in SQLite beside the log (schemas/002_projections.sql): the SQLite
implementation of the read side's interface (dcp_app.readside: `SqliteReadModels`,
`SqliteReads`).

Live: the service computes the rows a batch changed (`dcp_projections.rows.changed_rows`)
before it appends, and `batch_writer` returns the store's tx hook that writes them, with the
batch's postings and `projection_state`, inside the same transaction as the events: read
models and log commit or roll back together.

Rebuild: `rebuild(db_path, until_seq=None, into=None)` folds the log from an empty state and
writes every table from scratch, in one transaction; a new `into` file is built whole beside
it and renamed into place (dcp_app.bulkload). `compare(a, b)` tells whether two databases hold
the same read models (a rebuild must equal the live tables).

Catch-up: the read models are current only when `projection_state` says they include the log's
last event and were written for today's tables (`tables_fingerprint`). `catch_up(db_path)`,
run before a service serves, rebuilds them when either is not so: an events-only copy of a
ledger, a read side left behind, or a release that added a table or a column. A batch moves the
checkpoint only from the event just before it, so it never marks as written an event whose rows
are not (the next start then catches up).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from dcp_app import bulkload, foldlog
from dcp_app.readside import (
    ALL_TABLES,
    INSERT,
    INSERT_POSTING,
    SET_SEQ,
    Dialect,
    Reads,
    change_statements,
    contents_sql,
    missing_columns,
    tuples,
)
from dcp_app.readside import PROJECTION as PROJECTION  # re-exported: callers name them here
from dcp_app.readside import SCHEMA_ROW as SCHEMA_ROW
from dcp_app.readside import RebuildReport as RebuildReport
from dcp_app.readside import batch_writer as batch_writer
from dcp_app.readside import tables_fingerprint as tables_fingerprint
from dcp_events.codec import Codec, default_codec
from dcp_events.event import Event
from dcp_events.sqlite_store import apply_schema, open_connection
from dcp_events.store import TxHook
from dcp_projections import tables
from dcp_projections.fold import check_all
from dcp_projections.rows import RowChanges, all_tuples, posting_rows
from dcp_projections.state import State

READ_BATCH = 10_000  # events per read while rebuilding
# The SQL is written once for both backends (dcp_app.readside); the rebuild below names it so.
_INSERT = INSERT
_INSERT_POSTING = INSERT_POSTING
_SET_SEQ = SET_SEQ
_tuples = tuples

log = structlog.get_logger("dcp_app.readmodel")


def write_changes(conn: sqlite3.Connection, changes: RowChanges) -> None:
    """Apply upserts and deletes to the read-model tables (inside the caller's transaction)."""
    for sql, rows in change_statements(changes):
        conn.executemany(sql, rows)


PostingRows = list[tuple[Any, ...]]


def fold_log(
    conn: sqlite3.Connection,
    until_seq: int | None = None,
    codec: Codec | None = None,
    sink: Callable[[PostingRows], None] | None = None,
    path: str | None = None,
) -> State:
    """A state folded from the log read through `conn`, up to `until_seq` (inclusive), by the
    one fold loop (dcp_app.foldlog).

    `sink`, when given, receives the posting rows of each batch of events as it is folded.
    Raises InvariantError on a fault, DecodeError on an event that does not fit its schema.
    Reads only the columns a fold needs (the hash chain is `dcp audit verify`'s business), in
    bounded batches; with `path` (the file behind `conn`) a second process reads them
    (dcp_app.foldlog.piped_batches) while this one folds.
    """
    state = State()
    postings: PostingRows = []

    def collect(seq: int, event: Event, recorded_at_us: int) -> None:
        postings.extend(posting_rows(seq, event, recorded_at_us))

    def flush(_rows: object) -> bool:
        if sink is not None and postings:
            sink(postings[:])
            postings.clear()
        return False

    if path is not None:
        last = until_seq if until_seq is not None else _head(conn)
        batches = foldlog.piped_batches(conn, path, last, batch_size=READ_BATCH)
    else:
        batches = foldlog.sqlite_batches(conn, until_seq, batch_size=READ_BATCH)
    try:
        foldlog.fold_batches(
            state,
            batches,
            codec or default_codec(),
            collect if sink is not None else None,
            flush if sink is not None else None,
        )
    except foldlog.FoldFault as f:
        raise f.error from None
    finally:
        batches.close()
    return state


def _head(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])


def rebuild(
    db_path: str | Path, until_seq: int | None = None, into: str | Path | None = None
) -> RebuildReport:
    """Rebuild every read model from the log of `db_path` as of `until_seq` (default: all).

    Writes into `into` (another SQLite file) or, by default, into `db_path`'s own tables,
    replacing them: do that only while no service writes to it. Raises InvariantError if the
    log breaks a money rule, DecodeError if an event does not decode; nothing is changed then.

    An `into` that does not exist yet is built whole in a scratch file beside it, with the
    settings of a bulk load, and renamed into place once complete (dcp_app.bulkload): a
    failed or interrupted rebuild leaves no `into`, never a half-built one. Otherwise
    everything is written in one transaction. Either way the postings are copied out of the
    log by SQLite in a second thread while the fold runs (dcp_app.bulkload.insert_postings),
    the tables are written once each from the final state, and the secondary indexes are built
    once at the end rather than row by row.
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    if into is None:  # (a new `into` file gets today's tables from the DDL)
        add_missing_columns(db_path)  # before any row names them
    with foldlog.no_gc():  # millions of objects that live to the end (dcp_app.foldlog)
        if into is not None and bulkload.is_fresh(into):
            with bulkload.fresh_file(into) as scratch:
                dst = bulkload.open_scratch(scratch)
                try:
                    state, n_rows = _rebuild(db_path, until_seq, dst, str(db_path))
                finally:
                    dst.close()
        else:
            other = into is not None and Path(into).resolve() != Path(db_path).resolve()
            dst = open_connection(into if into is not None else db_path)
            try:
                state, n_rows = _rebuild(db_path, until_seq, dst, str(db_path) if other else None)
            finally:
                dst.close()
    return RebuildReport(
        events=state.seq,
        last_seq=state.seq,
        rows=n_rows,
        seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - cpu0,
    )


def _rebuild(
    db_path: str | Path, until_seq: int | None, dst: sqlite3.Connection, attach: str | None
) -> tuple[State, int]:
    """Fold the log of `db_path` and write every read model through `dst`, in one
    transaction; the state and the rows written. `attach`: the log's file when `dst` is
    another database (attached as `src` for the postings' copy)."""
    src = open_connection(db_path)
    try:
        apply_schema(dst)
        if attach is not None:
            # By its path, not a read-only URI: SQLite reads URIs in ATTACH only where it was
            # built or opened to. Only read through (the postings' copy).
            dst.execute("ATTACH DATABASE ? AS src", (str(Path(attach).resolve()),))
        dst.execute("BEGIN IMMEDIATE")
        try:
            last = until_seq if until_seq is not None else _head(src)  # under the write lock
            for table in ALL_TABLES:
                dst.execute(f"DELETE FROM main.{table}")
            # Secondary indexes are built once at the end (a sort), not row by row.
            indexes = dst.execute(
                "SELECT name, sql, tbl_name FROM main.sqlite_master WHERE type = 'index'"
                f" AND sql IS NOT NULL AND tbl_name IN ({', '.join('?' * len(ALL_TABLES))})",
                ALL_TABLES,
            ).fetchall()
            for name, _, _ in indexes:
                dst.execute(f'DROP INDEX main."{name}"')
            events = "src.events" if attach is not None else "main.events"
            codec = default_codec()

            def copy_postings() -> int:
                n = bulkload.insert_postings(dst, events, last, codec)
                for _, sql, table in indexes:
                    if table == "postings":
                        dst.execute(sql)
                return n

            postings = bulkload.Beside(copy_postings)
            try:
                # A second process reads a big log while this one folds.
                piped = str(db_path) if last >= foldlog.PIPE_MIN_EVENTS else None
                state = fold_log(src, last, codec, path=piped)
                check_all(state)
            except BaseException:
                dst.interrupt()  # the copy is for nothing now: stop it, then roll back
                postings.join()
                raise
            n_postings = postings.result()
            rows = all_tuples(state)
            for table, table_rows in rows.items():
                if table_rows:  # the tables were emptied above: plain inserts
                    dst.executemany(_INSERT[table], table_rows)
            for _, sql, table in indexes:
                if table != "postings":
                    dst.execute(sql)
            dst.execute("DELETE FROM projection_state")
            dst.execute(_SET_SEQ, (PROJECTION, state.seq))
            dst.execute(_SET_SEQ, (SCHEMA_ROW, tables_fingerprint()))
            dst.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # none open after an interrupt
                dst.execute("ROLLBACK")
            raise
    finally:
        src.close()
    return state, sum(len(r) for r in rows.values()) + n_postings


def behind(db_path: str | Path) -> str | None:
    """Why the read models of `db_path` must be rebuilt before they are served, or None."""
    conn = open_connection(db_path)
    try:
        head = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        marks = dict(conn.execute("SELECT name, last_seq FROM projection_state").fetchall())
    finally:
        conn.close()
    if head == 0:
        return None
    if marks.get(SCHEMA_ROW) != tables_fingerprint():
        return _OTHER_TABLES
    if marks.get(PROJECTION, 0) != head:
        return f"at {marks.get(PROJECTION, 0)} of {head} events"
    return None


_OTHER_TABLES = "written for other tables"


def _drop_tables(db_path: str | Path) -> None:
    """Drop the read-model tables, so the rebuild creates them with today's columns: `CREATE
    TABLE IF NOT EXISTS` keeps an existing table as it is, and SQLite has no `ADD COLUMN IF
    NOT EXISTS` a rerun schema file could use. They hold nothing the log does not; until the
    rebuild commits, the old fingerprint says they must be rebuilt (a crash just rebuilds)."""
    conn = open_connection(db_path)
    try:
        for table in ALL_TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        conn.close()


def catch_up(db_path: str | Path) -> RebuildReport | None:
    """Rebuild the read models of `db_path` if they are behind its log or were written for
    other tables (see `behind`); None when they are current. Blocking: call it in a thread,
    before serving. Rebuilding holds the write lock, so no other process appends meanwhile."""
    added = add_missing_columns(db_path)
    reason = f"added {len(added)} columns" if added else behind(db_path)
    if reason is None:
        return None
    log.warning("read_models_rebuilding", reason=reason)
    if reason == _OTHER_TABLES:
        _drop_tables(db_path)
    report = rebuild(db_path)
    log.info(
        "read_models_rebuilt",
        events=report.events,
        rows=report.rows,
        seconds=round(report.seconds, 2),
        events_per_s=round(report.events_per_s),
    )
    return report


def add_missing_columns(db_path: str | Path) -> list[str]:
    """Add to the read-model tables of `db_path` the columns their specs name and the
    database lacks (dcp_app.readside.missing_columns); the statements run, [] when none."""
    conn = open_connection(db_path)
    try:
        present = {
            t.name: {r[1] for r in conn.execute(f"PRAGMA table_info({t.name})")} for t in tables.ALL
        }
        statements = missing_columns({t: c for t, c in present.items() if c}, "sqlite")
        if statements:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql in statements:
                    conn.execute(sql)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return statements
    finally:
        conn.close()


def table_contents(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    """Every row of a read-model table, sorted, for comparisons."""
    return sorted(conn.execute(contents_sql(table)).fetchall(), key=repr)


def compare(db_a: str | Path, db_b: str | Path) -> list[str]:
    """The read-model tables whose contents differ between two databases ([] when equal)."""
    a, b = open_connection(db_a), open_connection(db_b)
    try:
        return [
            t
            for t in (*ALL_TABLES, "projection_state")
            if table_contents(a, t) != table_contents(b, t)
        ]
    finally:
        a.close()
        b.close()


# --- the read side's interface (dcp_app.readside) on SQLite ------------------------------------


class SqliteReads:
    """`Reads` over an aiosqlite connection of its own, read-only."""

    dialect: Dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, db_path: str | Path) -> SqliteReads:
        conn = await aiosqlite.connect(str(db_path))
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA busy_timeout=10000")
        await conn.execute("PRAGMA query_only=ON")
        return cls(conn)

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        async with self._conn.execute(sql, tuple(params)) as cur:
            return [dict(r) for r in await cur.fetchall()]

    async def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        async with self._conn.execute(sql, tuple(params)) as cur:
            row = await cur.fetchone()
        return dict(row) if row is not None else None

    def json_text(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    def json_int(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    async def close(self) -> None:
        await self._conn.close()


class SqliteReadModels:
    """`ReadModels` of a SQLite ledger file: the module's functions, off the event loop."""

    def __init__(self, db: str) -> None:
        self.db = db

    def batch_writer(self, events: Sequence[Event], first_seq: int, changes: RowChanges) -> TxHook:
        return batch_writer(events, first_seq, changes)

    async def behind(self) -> str | None:
        return await asyncio.to_thread(behind, self.db)

    async def catch_up(self) -> RebuildReport | None:
        return await asyncio.to_thread(catch_up, self.db)

    async def rebuild(self, until_seq: int | None = None) -> RebuildReport:
        return await asyncio.to_thread(rebuild, self.db, until_seq)

    async def reads(self) -> Reads:
        return await SqliteReads.open(self.db)

    async def close(self) -> None:
        return None
