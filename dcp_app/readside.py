"""The read side behind an interface: `ReadModels` (written in the store's transaction, caught
up and rebuilt from the log) and `Reads` (the async query executor `dcp_app.queries` runs on),
with a SQLite implementation (dcp_app.readmodel) and a PostgreSQL one (dcp_app.readmodel_pg).

Open the read side of a ledger named by a string with `dcp_app.read_sides.open_read_side(db)`:
a path is SQLite, a `postgresql://` URL is PostgreSQL (the same string that names the store).

The SQL is written once, with `?` placeholders; `to_dialect` translates it for psycopg. What
differs between the backends and cannot be written once (reading a field of an event's JSON
payload) is a method of `Reads`, in one place per backend.

The tx hook (`batch_writer`) is the same for both stores: the SQLite store calls it with a
`sqlite3.Connection` in its writer thread (it writes synchronously), the PostgreSQL store with
its writer's psycopg AsyncConnection (it returns a coroutine the store awaits). Either way the
rows, the postings and the checkpoint commit or roll back with the batch's events.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Awaitable, Sequence
from typing import Any, Literal, Protocol

import msgspec

from dcp_events.event import Event
from dcp_events.store import RecordedEvent, TxHook
from dcp_projections import tables
from dcp_projections.errors import InvariantError
from dcp_projections.rows import POSTING_COLUMNS, TABLES, Row, RowChanges, posting_rows

Dialect = Literal["sqlite", "postgres"]

PROJECTION = "read_models"
# The projection_state row whose last_seq is `tables_fingerprint()` of the tables written.
SCHEMA_ROW = "read_models_tables"
ALL_TABLES = (*TABLES, "postings")


def to_dialect(sql: str, dialect: Dialect) -> str:
    """`sql` written with `?` placeholders, for `dialect` (psycopg: `%s`, and `%` doubled)."""
    if dialect == "sqlite":
        return sql
    return sql.replace("%", "%%").replace("?", "%s")


# --- the writes, one SQL text for both backends -------------------------------------------------


def _upsert(table: str, key: str, cols: tuple[str, ...]) -> str:
    # ON CONFLICT DO UPDATE rewrites a row in place (an index is touched only when its
    # columns change), where INSERT OR REPLACE deletes and re-inserts through every index.
    sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c != key)
    return (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        f" ON CONFLICT ({key}) DO UPDATE SET {sets}"
    )


UPSERT = {t: _upsert(t, key, cols) for t, (key, cols) in TABLES.items()}
INSERT = {
    t: f"INSERT INTO {t} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    for t, (_, cols) in TABLES.items()
}
DELETE = {t: f"DELETE FROM {t} WHERE {key} = ?" for t, (key, _) in TABLES.items()}
INSERT_POSTING = (
    f"INSERT INTO postings ({', '.join(POSTING_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(POSTING_COLUMNS))})"
)
SET_SEQ = (
    "INSERT INTO projection_state (name, last_seq) VALUES (?, ?)"
    " ON CONFLICT (name) DO UPDATE SET last_seq = excluded.last_seq"
)
# Moves the checkpoint over one batch, and only from the event just before it.
ADVANCE_SEQ = "UPDATE projection_state SET last_seq = ? WHERE name = ? AND last_seq = ?"


# Every statement the tx hook runs, translated for psycopg once.
_PG = {
    sql: to_dialect(sql, "postgres")
    for sql in (*UPSERT.values(), *DELETE.values(), INSERT_POSTING, SET_SEQ, ADVANCE_SEQ)
}


def tables_fingerprint() -> int:
    """A number naming the read-model tables and their columns: a release that adds a table or
    a column changes it, and its first start rebuilds them (an integer, as projection_state
    holds). 56 bits of a SHA-256."""
    spec = repr((sorted(TABLES.items()), POSTING_COLUMNS)).encode()
    return int.from_bytes(hashlib.sha256(spec).digest()[:7], "big")


def tuples(rows: list[Row]) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) for r in rows]


Statements = list[tuple[str, list[tuple[Any, ...]]]]


def change_statements(changes: RowChanges) -> Statements:
    """(SQL, parameter rows) that apply `changes`: deletes first, then upserts."""
    out: Statements = []
    for table, keys in changes.deletes.items():
        if keys:
            out.append((DELETE[table], [(k,) for k in keys]))
    for table, rows in changes.upserts.items():
        if rows:
            out.append((UPSERT[table], tuples(rows)))
    return out


def _batch_statements(
    events: Sequence[Event],
    tags: list[str],
    first_seq: int,
    changes: RowChanges,
    recorded: Sequence[RecordedEvent],
) -> tuple[Statements, int, int]:
    if len(recorded) != len(events) or recorded[0].seq != first_seq:
        raise InvariantError(
            f"batch folded as seq {first_seq}+{len(events)}, "
            f"stored as {recorded[0].seq}+{len(recorded)}"
        )
    postings: list[tuple[Any, ...]] = []
    for rec, event, tag in zip(recorded, events, tags, strict=True):
        if rec.type != tag:
            raise InvariantError(f"seq {rec.seq} stored as {rec.type}, folded as {tag}")
        postings.extend(posting_rows(rec.seq, event, rec.recorded_at_us))
    statements = change_statements(changes)
    if postings:
        statements.append((INSERT_POSTING, postings))
    return statements, recorded[-1].seq, recorded[0].seq - 1


def batch_writer(events: Sequence[Event], first_seq: int, changes: RowChanges) -> TxHook:
    """The tx hook for one batch, for either store: check the store gave the events the
    sequences the state assumed, then write the batch's rows and postings and move
    projection_state.

    Everything it writes was computed before the append, so the hook only reads immutable
    data while it runs in the store's writer.
    """
    tags = [str(e.__struct_config__.tag) for e in events]

    def hook(conn: Any, recorded: Sequence[RecordedEvent]) -> Awaitable[None] | None:
        statements, last, before = _batch_statements(events, tags, first_seq, changes, recorded)
        if before == 0:  # the log's first batch: its rows are written for today's tables
            statements.append((SET_SEQ, [(PROJECTION, last), (SCHEMA_ROW, tables_fingerprint())]))
        else:
            statements.append((ADVANCE_SEQ, [(last, PROJECTION, before)]))
        if isinstance(conn, sqlite3.Connection):
            for sql, rows in statements:
                conn.executemany(sql, rows)
            return None
        return _write_pg(conn, statements)

    return hook  # type: ignore[return-value]  # TxHook's result is ignored or awaited


async def _write_pg(conn: Any, statements: Statements) -> None:
    # One pipeline: every statement goes in one round trip (the batch holds the log's head
    # lock meanwhile, so each round trip saved is one every other node waits less).
    async with conn.pipeline(), conn.cursor() as cur:
        for sql, rows in statements:
            await cur.executemany(_PG[sql], rows)


def missing_columns(present: dict[str, set[str]], dialect: Dialect) -> list[str]:
    """The ALTER TABLE statements that add to existing tables the columns their specs name and
    `present` (table -> column names in the database) lacks. The DDL files create today's
    tables in a fresh database; a column added to a spec reaches an existing one this way, at
    its next catch-up, which then rebuilds every table (the fingerprint changed)."""
    return [
        tables.add_column(t, c, dialect)
        for t in tables.ALL
        if t.name in present
        for c in t.columns
        if c.name not in present[t.name]
    ]


def missing_tables(present: set[str], dialect: Dialect) -> list[str]:
    """CREATE TABLE for each read-model table `present` (the tables in the database) lacks:
    a table added to the specs after a PostgreSQL database got its DDL file (applied once)
    reaches it this way, at its next catch-up, which then rebuilds every table from the log
    (the fingerprint changed), so the new table is filled as if it had always been there."""
    return [tables.create_table(t, dialect) for t in tables.ALL if t.name not in present]


# --- the interface -----------------------------------------------------------------------------


class RebuildReport(msgspec.Struct, frozen=True):
    """What a rebuild did: events folded, the last sequence, rows written, its wall time and
    the CPU time of the process (every thread) meanwhile."""

    events: int
    last_seq: int
    rows: int
    seconds: float
    cpu_seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


class Reads(Protocol):
    """An async, read-only query executor over the read models (and the log's table).

    SQL is written with `?` placeholders; rows come back as dicts keyed by column name."""

    dialect: Dialect

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    async def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None: ...

    def json_text(self, column: str, key: str) -> str:
        """SQL for the text of top-level field `key` of the JSON text in `column`."""
        ...

    def json_int(self, column: str, key: str) -> str:
        """SQL for the integer top-level field `key` of the JSON text in `column`."""
        ...

    async def close(self) -> None: ...


class ReadModels(Protocol):
    """The read models of one ledger."""

    db: str

    def batch_writer(
        self, events: Sequence[Event], first_seq: int, changes: RowChanges
    ) -> TxHook: ...

    async def behind(self) -> str | None:
        """Why the read models must be rebuilt before they are served, or None."""
        ...

    async def catch_up(self) -> RebuildReport | None:
        """Rebuild the read models if `behind` says so; None when they are current."""
        ...

    async def rebuild(self, until_seq: int | None = None) -> RebuildReport:
        """Rebuild every read model from the log (as of `until_seq`), in one transaction."""
        ...

    async def reads(self) -> Reads:
        """A new query executor over these read models (the caller closes it)."""
        ...

    async def close(self) -> None: ...


def contents_sql(table: str) -> str:
    """Every row of a read-model table, its columns named in the spec's order: a table that got
    a column by ALTER TABLE (at the end) compares equal to one created with it (in place)."""
    spec = next(t for t in tables.ALL if t.name == table)
    return f"SELECT {', '.join(spec.column_names)} FROM {table}"
