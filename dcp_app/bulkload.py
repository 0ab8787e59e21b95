"""Bulk-loading read models for a rebuild (dcp_app.readmodel.rebuild): the postings copied
out of the log by SQLite itself, beside the fold, and a fresh file built whole before it is
put in place.

Postings. Every posting row is a field of its event (`dcp_projections.rows.posting_rows`):
seq, index in the event's `postings`, account, amount, the event's type, its `job_id`, its
recording time. For events at their type's current schema version or a newer one (all of
them, until a money event's schema changes) one `INSERT ... SELECT` over `json_each` writes
them, in SQLite's C code: no Python object per row, and the statement runs with the GIL
released, so a thread runs it while the main thread folds (the fold validates every event it
copies: a payload that does not decode fails the rebuild, and nothing is kept). An event at
an older version is upcast and taken through `posting_rows` here, in Python. Measured: the
copy costs about 2.3 CPU s on the 1M-event log (587k postings), in its own thread; on the
100k log callgrind counts 1.3% more instructions for the whole rebuild than collecting the
rows in the fold and binding them one by one (the copy scans every event for the money
ones), but they are off the fold's thread, which is the rebuild's critical path when a core
is free.

A fresh file. `fresh_file(into)` builds the read models in a scratch file beside `into` with
the settings of a bulk load (no rollback journal, no fsync per transaction: nobody reads the
file until it is complete), fsyncs it once complete and renames it into place; a rebuild that
fails or is interrupted leaves `into` as it was (absent) and removes the scratch file, and a
crash leaves at most a `.partial` file beside it, never a half-built `into`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from dcp_events.codec import Codec
from dcp_projections.rows import POSTING_COLUMNS, posting_rows

T = TypeVar("T")

# The order `posting_rows` builds and the postings table holds (a test keeps them equal).
_COLUMNS = ("seq", "idx", "account_id", "amount_halala", "event_type", "job_id", "recorded_at_us")
CACHE_KIB = 262_144  # the scratch file's page cache: the indexes are built in memory


def _money_types(codec: Codec) -> tuple[dict[str, int], list[str]]:
    """(type -> current schema version) of the events that carry postings, and those of them
    that have a `job_id` field."""
    money = {
        t: cls.schema_version
        for t, cls in codec.types.items()
        if "postings" in cls.__struct_fields__
    }
    with_job = [t for t in money if "job_id" in codec.types[t].__struct_fields__]
    return money, with_job


def insert_postings(conn: sqlite3.Connection, events: str, until_seq: int, codec: Codec) -> int:
    """Insert into `conn`'s `postings` the posting rows of the events 1..until_seq of the
    table `events` (a schema-qualified name: `main.events`, `src.events`); the rows inserted.
    Runs inside the caller's transaction."""
    assert POSTING_COLUMNS == _COLUMNS, "the SELECT below lists the postings columns in order"
    money, with_job = _money_types(codec)
    if not money:
        return 0
    # The codec decodes an event at its type's current version or a newer one (a newer
    # release's: unknown fields ignored) as it stands, and upcasts an older one. Per current
    # version: (version >= ? AND type IN (...)), an integer comparison and a look-up in a
    # short list for each of the log's events.
    by_version: dict[int, list[str]] = {}
    for t, v in money.items():
        by_version.setdefault(v, []).append(t)
    current = " OR ".join(
        f"(schema_version >= ? AND type IN ({', '.join('?' * len(ts))}))"
        for ts in by_version.values()
    )
    current_params = [x for v, ts in by_version.items() for x in (v, *ts)]
    jobs = ", ".join("?" * len(with_job)) or "NULL"
    # The payloads are parsed once each (the CTE is materialised), their postings arrays
    # walked by json_each.
    sql = (
        "WITH e AS MATERIALIZED (SELECT seq, type, recorded_at_us,"
        " json_extract(CAST(payload AS TEXT), '$.postings') AS p,"
        f" CASE WHEN type IN ({jobs}) THEN json_extract(CAST(payload AS TEXT), '$.job_id') END"
        f" AS job FROM {events} WHERE seq <= ? AND ({current}))"
        f" INSERT INTO postings ({', '.join(_COLUMNS)})"
        " SELECT e.seq, j.key, json_extract(j.value, '$.account'),"
        " json_extract(j.value, '$.amount_halala'), e.type, e.job, e.recorded_at_us"
        " FROM e, json_each(e.p) AS j"
    )
    params = [*with_job, until_seq, *current_params]
    n = conn.execute(sql, params).rowcount
    # Events of an older schema version, upcast by the codec: their rows built in Python.
    # Only a type past its first version can have them (a second pass over the log then).
    older = {v: ts for v, ts in by_version.items() if v > 1}
    rows = []
    if older:
        rows = conn.execute(
            "SELECT seq, type, schema_version, CAST(payload AS BLOB), recorded_at_us"
            f" FROM {events} WHERE seq <= ? AND ("
            + " OR ".join(
                f"(schema_version < ? AND type IN ({', '.join('?' * len(ts))}))"
                for ts in older.values()
            )
            + ") ORDER BY seq",
            [until_seq, *(x for v, ts in older.items() for x in (v, *ts))],
        ).fetchall()
    built: list[tuple[Any, ...]] = []
    for seq, type_, version, payload, at_us in rows:
        built.extend(posting_rows(seq, codec.decode_payload(type_, version, payload), at_us))
    if built:
        conn.executemany(
            f"INSERT INTO postings ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * 7)})", built
        )
    return n + len(built)


class Beside(Generic[T]):
    """`fn()` running in a thread of its own (SQLite releases the GIL while a statement
    runs). `result()` waits and returns its value or raises its error."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = fn()
            except BaseException as e:  # handed to result()
                self._error = e

        self._thread = threading.Thread(target=run, name="dcp-bulkload", daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set when no error


def is_fresh(into: str | Path) -> bool:
    """Whether `into` names no database yet (nor the journal of one), so a rebuild may build
    it whole in a scratch file and rename it into place."""
    p = str(into)
    return not any(os.path.lexists(p + s) for s in ("", "-wal", "-journal"))


def open_scratch(path: Path) -> sqlite3.Connection:
    """A connection to a scratch file with the settings of a bulk load."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@contextlib.contextmanager
def fresh_file(into: str | Path) -> Iterator[Path]:
    """A scratch file beside `into` for the block to fill (and close); when the block ends
    normally the file is flushed to disk and renamed to `into` (then the directory is
    flushed), otherwise it is removed and `into` stays absent."""
    target = Path(into)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(fd)
    scratch = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(scratch, 0o666 & ~umask)  # as a file sqlite3 creates, not mkstemp's 0600
    try:
        yield scratch
        fd = os.open(scratch, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(scratch, target)
        _fsync_dir(target.parent)
    finally:
        for leftover in (scratch, Path(f"{scratch}-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform opens a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
