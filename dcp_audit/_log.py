"""Opening the log for auditing: read-only, on one snapshot."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from dcp_audit.errors import AuditError


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A stdlib connection that can only read the log at `path`.

    Raises AuditError if the file does not exist or holds no `events` table. Opening read-only
    means an audit can never create, migrate or change the file it checks.
    """
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
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


def file_of(conn: sqlite3.Connection) -> str | None:
    """The file behind `conn`'s main database, or None when it is in memory."""
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
