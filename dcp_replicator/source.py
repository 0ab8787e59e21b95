"""Reading the local read models: bounded batches of rows past a checkpoint, and the lag.

The source is the ledger's own database, named as everywhere (dcp_events.opener): a SQLite
file (`SqliteSource`) or a postgresql:// URL (`PostgresSource`); `open_source` picks.

The replicator reads through its own read-only connection. In WAL mode a SQLite reader never
blocks the writer; on PostgreSQL a reader never blocks anyone. Each batch is read in one short
read transaction (one consistent snapshot: REPEATABLE READ on PostgreSQL) that ends before
anything is sent, so the WAL can always be checkpointed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any, cast

import msgspec
import psycopg

from dcp_events.errors import DcpError
from dcp_events.opener import is_postgres, postgres_url, redact
from dcp_replicator.errors import SourceError
from dcp_replicator.tables import MIRRORED, TableSpec

Row = tuple[Any, ...]
# What a read of either database raises when it fails.
_DB_ERRORS = (sqlite3.Error, psycopg.Error)


class Batch(msgspec.Struct, frozen=True):
    """Rows changed by events after_seq < seq <= upto_seq, per table (local column order).

    Applying every row of a batch moves a sink's checkpoint from `after_seq` to `upto_seq`.
    Each row is the row's current state in one snapshot of the source, whose head was
    `head_seq`; a row changed again later is simply sent again by a later batch.
    """

    after_seq: int
    upto_seq: int
    head_seq: int
    rows: dict[str, list[Row]]

    @property
    def row_count(self) -> int:
        """Rows in the batch, all tables together."""
        return sum(len(r) for r in self.rows.values())


class Lag(msgspec.Struct, frozen=True):
    """How far a checkpoint is behind the source's head."""

    head_seq: int
    checkpoint_seq: int
    events_behind: int
    seconds_behind: float


class SqliteSource:
    """The local SQLite file, read only. Use `await SqliteSource.open(path)`."""

    def __init__(self, conn: sqlite3.Connection, tables: tuple[TableSpec, ...]) -> None:
        self._conn = conn
        self._tables = tables
        self._lock = asyncio.Lock()  # one connection, used by one thread at a time

    @classmethod
    async def open(cls, path: str | Path, tables: tuple[TableSpec, ...] = MIRRORED) -> SqliteSource:
        """Open `path` read only; raises SourceError if it is missing or not a DCP database."""
        return cls(await asyncio.to_thread(_connect, Path(path), tables), tables)

    async def close(self) -> None:
        """Release the connection."""
        async with self._lock:
            await asyncio.to_thread(self._conn.close)

    async def read_batch(self, after_seq: int, max_rows: int) -> Batch:
        """Rows with after_seq < last_seq <= U, for the largest U that keeps the batch at most
        `max_rows` rows (or one event's rows, if a single event changed more)."""
        if max_rows < 1:
            raise ValueError("max_rows must be positive")
        async with self._lock:
            return await asyncio.to_thread(self._read_batch, after_seq, max_rows)

    async def lag(self, checkpoint_seq: int, now_s: float | None = None) -> Lag:
        """Events and seconds the checkpoint is behind (seconds: the age of the oldest event
        not yet mirrored; 0 when caught up)."""
        async with self._lock:
            head, first_us = await asyncio.to_thread(self._lag_inputs, checkpoint_seq)
        now = time.time() if now_s is None else now_s
        behind = max(0, head - checkpoint_seq)
        seconds = max(0.0, now - first_us / 1e6) if behind and first_us is not None else 0.0
        return Lag(
            head_seq=head,
            checkpoint_seq=checkpoint_seq,
            events_behind=behind,
            seconds_behind=round(seconds, 3),
        )

    async def head(self) -> int:
        """The last event whose effects are in the read models."""
        async with self._lock:
            return await asyncio.to_thread(self._head_in_tx)

    # -- in the worker thread -----------------------------------------------------------------

    def _head(self) -> int:
        # The read models are written in the same transaction as the events, so the log head
        # is their head. Should projections ever lag the log, projection_state says how far
        # each got, and the slowest one bounds what may be mirrored.
        (events_head,) = self._conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        row = self._conn.execute("SELECT min(last_seq) FROM projection_state").fetchone()
        if row is not None and row[0] is not None:
            return min(int(events_head), int(row[0]))
        return int(events_head)

    def _head_in_tx(self) -> int:
        try:
            return self._head()
        except _DB_ERRORS as e:
            raise SourceError(f"reading the head: {e}") from e

    def _lag_inputs(self, checkpoint_seq: int) -> tuple[int, int | None]:
        try:
            self._conn.execute("BEGIN")
            try:
                head = self._head()
                row = self._conn.execute(
                    "SELECT recorded_at_us FROM events WHERE seq > ? ORDER BY seq LIMIT 1",
                    (checkpoint_seq,),
                ).fetchone()
            finally:
                self._conn.execute("COMMIT")
        except _DB_ERRORS as e:
            raise SourceError(f"reading the lag: {e}") from e
        return head, (row[0] if row else None)

    def _read_batch(self, after_seq: int, max_rows: int) -> Batch:
        try:
            self._conn.execute("BEGIN")  # one snapshot for the head and every table
            try:
                return self._read_snapshot(after_seq, max_rows)
            finally:
                self._conn.execute("COMMIT")
        except _DB_ERRORS as e:
            raise SourceError(f"reading a batch after seq {after_seq}: {e}") from e

    def _read_snapshot(self, after_seq: int, max_rows: int) -> Batch:
        head = self._head()
        if head <= after_seq:
            return Batch(after_seq=after_seq, upto_seq=after_seq, head_seq=head, rows={})
        upto = head
        fetched: dict[str, list[Row]] = {}
        for t in self._tables:
            rows = self._select(t, after_seq, upto, max_rows + 1)
            if len(rows) > max_rows:
                # Sorted by seq: every row with seq < the first row left out was fetched.
                cut = rows[max_rows][-1] - 1
                if cut <= after_seq:
                    # One event changed more than max_rows rows of this table: take that
                    # event whole (an event touches a bounded number of rows).
                    cut = after_seq + 1
                    rows = self._select(t, after_seq, cut, None)
                upto = min(upto, cut)
            fetched[t.target] = rows
        # Bound the whole batch, not only each table: the seqs of all rows, in order.
        seqs = sorted(r[-1] for rows in fetched.values() for r in rows if r[-1] <= upto)
        if len(seqs) > max_rows:
            upto = max(seqs[max_rows] - 1, after_seq + 1)
        out = {name: [r[:-1] for r in rows if r[-1] <= upto] for name, rows in fetched.items()}
        return Batch(
            after_seq=after_seq,
            upto_seq=upto,
            head_seq=head,
            rows={k: v for k, v in out.items() if v},
        )

    def _select(self, t: TableSpec, after: int, upto: int, limit: int | None) -> list[Row]:
        # Rows seeded without an event (the default price) carry last_seq 0: the first batch
        # takes them too.
        if after <= 0:
            after = -(2**62)
        cols = ", ".join(c.local for c in t.columns)
        sql = (
            f"SELECT {cols}, {t.seq_expr} FROM {t.local}"  # names are constants
            f" WHERE {t.seq_expr} > ? AND {t.seq_expr} <= ? ORDER BY {t.seq_expr}"
        )
        if limit is None:
            return self._conn.execute(sql, (after, upto)).fetchall()
        return self._conn.execute(sql + " LIMIT ?", (after, upto, limit)).fetchall()


class _PgConnection:
    """A read-only psycopg session with the face of the sqlite3 connection SqliteSource reads
    through: `?` placeholders, and BEGIN opening one REPEATABLE READ snapshot."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        if sql == "BEGIN":
            sql = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        # The source's SQL is portable but for the placeholder; none of it holds a literal ?.
        return self._conn.execute(sql.replace("?", "%s"), params)

    def close(self) -> None:
        self._conn.close()


class PostgresSource(SqliteSource):
    """The read models of a PostgreSQL ledger, read only, with the same SQL and batches as the
    SQLite source. Use `await PostgresSource.open(url)`."""

    @classmethod
    async def open(cls, path: str | Path, tables: tuple[TableSpec, ...] = MIRRORED) -> SqliteSource:
        """Open the ledger at the URL `path`; SourceError if unreachable or not a DCP ledger."""
        conn = await asyncio.to_thread(_connect_pg, str(path), tables)
        # Duck-typed: it answers every call SqliteSource makes of its sqlite3 connection.
        return cls(cast(sqlite3.Connection, conn), tables)


async def open_source(db: str | Path, tables: tuple[TableSpec, ...] = MIRRORED) -> SqliteSource:
    """The source named by `db`: a SQLite file path, or a postgresql:// URL."""
    try:
        postgres = is_postgres(db)
    except DcpError as e:
        raise SourceError(str(e)) from e
    if postgres:
        return await PostgresSource.open(db, tables)
    return await SqliteSource.open(db, tables)


def _connect_pg(url: str, tables: tuple[TableSpec, ...]) -> _PgConnection:
    shown = redact(url)
    try:
        conn = psycopg.connect(postgres_url(url), autocommit=True, connect_timeout=10)
    except psycopg.Error as e:
        raise SourceError(f"cannot open {shown}: {e}") from e
    try:
        # Read-only at the server: the replicator never writes the ledger it reads.
        conn.execute("SET default_transaction_read_only = on")
        names = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        }
    except psycopg.Error as e:
        conn.close()
        raise SourceError(f"cannot read {shown}: {e}") from e
    missing = {"events", "projection_state", *(t.local for t in tables)} - names
    if missing:
        conn.close()
        raise SourceError(f"{shown} lacks tables {sorted(missing)}: not a DCP database?")
    return _PgConnection(conn)


def _connect(path: Path, tables: tuple[TableSpec, ...]) -> sqlite3.Connection:
    if not path.exists():
        raise SourceError(f"no database at {path}")
    try:
        conn = sqlite3.connect(
            f"file:{path.resolve()}?mode=ro",
            uri=True,
            isolation_level=None,  # explicit BEGIN/COMMIT around each snapshot
            check_same_thread=False,  # used from worker threads, one at a time (the lock)
            timeout=10.0,
        )
        conn.execute("PRAGMA query_only = 1")
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as e:
        raise SourceError(f"cannot open {path} read only: {e}") from e
    missing = {"events", "projection_state", *(t.local for t in tables)} - names
    if missing:
        conn.close()
        raise SourceError(f"{path} lacks tables {sorted(missing)}: not a DCP database?")
    return conn
