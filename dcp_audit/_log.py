"""Opening the log for auditing: read-only, on one snapshot, on either backend.

A path opens the SQLite file; a postgresql:// URL opens the PostgreSQL log (dcp_events.opener's
rule) through `PgReadConnection`, which answers the few sqlite3 calls the audit makes
(`execute` with `?` placeholders, `fetchone`, `fetchall`, `close`), so every check runs
unchanged on either log.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from dcp_audit.errors import AuditError
from dcp_events.errors import DcpError
from dcp_events.opener import is_postgres, postgres_url, redact

# SQLite's `CAST(col AS BLOB)` (a text column's UTF-8 bytes, uncopied): PostgreSQL's
# convert_to (a CAST to bytea would read backslashes in the JSON as escapes).
_AS_BLOB = re.compile(r"CAST\((\w+) AS BLOB\)", re.IGNORECASE)


def _to_postgres(sql: str) -> str:
    """The audit's SQL, portable but for its placeholders and reading text as bytes, for
    psycopg. None of it holds a literal ? or %."""
    return _AS_BLOB.sub(r"convert_to(\1, 'UTF8')", sql).replace("?", "%s")


class PgReadConnection:
    """A read-only PostgreSQL session with the face of the sqlite3 connection the audit reads
    through. `snapshot()` makes its reads one REPEATABLE READ transaction (one consistent
    point, as SQLite's read transaction is)."""

    def __init__(self, conn: Any, shown: str) -> None:
        self._conn = conn
        self._shown = shown

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        import psycopg

        try:
            return self._conn.execute(_to_postgres(sql), params)
        except psycopg.Error as e:
            # Also where a log has no read-model tables (a replay): say which and where.
            raise AuditError(f"cannot read {self._shown}: {str(e).splitlines()[0]}") from e

    def begin(self) -> None:
        self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def close(self) -> None:
        self._conn.close()


def _open_postgres(url: str) -> PgReadConnection:
    import psycopg
    from psycopg.adapt import Loader

    class IntegerNumeric(Loader):
        # sum() of a bigint column is numeric in PostgreSQL; the audit deals only in integer
        # halala and compares with Python ints, as SQLite returns them.
        def load(self, data: Any) -> Any:
            d = Decimal(bytes(data).decode())
            return int(d) if d == d.to_integral_value() else d

    try:
        conn = psycopg.connect(postgres_url(url), autocommit=True, connect_timeout=10)
    except psycopg.Error as e:
        raise AuditError(f"cannot read {redact(url)}: {e}") from e
    try:
        conn.adapters.register_loader("numeric", IntegerNumeric)
        # Read-only at the server: an audit can never create, migrate or change the log.
        conn.execute("SET default_transaction_read_only = on")
        row = conn.execute("SELECT to_regclass('events') IS NOT NULL").fetchone()
    except psycopg.Error as e:
        conn.close()
        raise AuditError(f"cannot read {redact(url)}: {e}") from e
    if not (row and row[0]):
        conn.close()
        raise AuditError(f"{redact(url)} is not a DCP event log (no events table)")
    return PgReadConnection(conn, redact(url))


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A connection that can only read the log at `path`: a SQLite file, or a postgresql://
    URL (a PgReadConnection, which answers every call the audit makes of a sqlite3 one).

    Raises AuditError if the log does not exist or holds no `events` table. Opening read-only
    means an audit can never create, migrate or change the log it checks.
    """
    try:
        postgres = is_postgres(path)
    except DcpError as e:
        raise AuditError(str(e)) from e
    if postgres:
        # Duck-typed: the audit's functions are annotated with the sqlite3 connection.
        return cast(sqlite3.Connection, _open_postgres(str(path)))
    p = Path(path)
    if not p.is_file():
        raise AuditError(f"no event log at {p}")
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA query_only=ON")
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        ).fetchone()
    except sqlite3.Error as e:
        raise AuditError(f"cannot read {p}: {e}") from e
    if found is None:
        conn.close()
        raise AuditError(f"{p} is not a DCP event log (no events table)")
    return conn


@contextlib.contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read transaction: every read inside sees the same committed state, so the log and
    the read models written in the same transactions are compared at one point."""
    if isinstance(conn, PgReadConnection):
        conn.begin()
    else:
        conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


def file_of(conn: sqlite3.Connection) -> str | None:
    """The file behind `conn`'s main database, or None when it is in memory or not SQLite."""
    if isinstance(conn, PgReadConnection):
        return None
    for _, name, file in conn.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return str(file) or None
    return None


def head(conn: sqlite3.Connection) -> tuple[int, str] | None:
    """The last (seq, hash) stored, or None for an empty log."""
    row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else None


def seq_as_of(conn: sqlite3.Connection, as_of_us: int) -> int:
    """The last sequence of the log as it stood at `as_of_us`: the prefix before the first
    event recorded after that instant (0 if none was recorded by then).

    An event's successors were committed after it, so once one event is stamped later than
    `as_of_us` every later one was too, even if the clock stepped back in between.
    """
    row = conn.execute(
        "SELECT min(seq) FROM events WHERE recorded_at_us > ?", (as_of_us,)
    ).fetchone()
    if row[0] is not None:
        return int(row[0]) - 1
    last = head(conn)
    return last[0] if last else 0
