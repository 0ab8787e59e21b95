"""Read models in SQLite beside the log (schemas/002_projections.sql).

Live: the service computes the rows a batch changed (`dcp_projections.rows.changed_rows`)
before it appends, and `batch_writer` returns the store's tx hook that writes them, with the
batch's postings and `projection_state`, inside the same transaction as the events: read
models and log commit or roll back together.

Rebuild: `rebuild(db_path, until_seq=None, into=None)` folds the log from an empty state and
writes every table from scratch, in one transaction. `compare(a, b)` tells whether two
databases hold the same read models (a rebuild must equal the live tables).

Catch-up: the read models are current only when `projection_state` says they include the log's
last event and were written for today's tables (`tables_fingerprint`). `catch_up(db_path)`,
run before a service serves, rebuilds them when either is not so: an events-only copy of a
ledger, a read side left behind, or a release that added a table or a column. A batch moves the
checkpoint only from the event just before it, so it never marks as written an event whose rows
are not (the next start then catches up).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import structlog

from dcp_app import foldlog
from dcp_events.codec import Codec, default_codec
from dcp_events.event import Event
from dcp_events.sqlite_store import apply_schema, open_connection
from dcp_events.store import RecordedEvent, TxHook
from dcp_projections.errors import InvariantError
from dcp_projections.fold import check_all
from dcp_projections.rows import POSTING_COLUMNS, TABLES, Row, RowChanges, all_rows, posting_rows
from dcp_projections.state import State

PROJECTION = "read_models"
# The projection_state row whose last_seq is `tables_fingerprint()` of the tables written.
SCHEMA_ROW = "read_models_tables"
READ_BATCH = 10_000  # events per read while rebuilding
ALL_TABLES = (*TABLES, "postings")


def _upsert(table: str, key: str, cols: tuple[str, ...]) -> str:
    # ON CONFLICT DO UPDATE rewrites a row in place (an index is touched only when its
    # columns change), where INSERT OR REPLACE deletes and re-inserts through every index.
    sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c != key)
    return (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        f" ON CONFLICT ({key}) DO UPDATE SET {sets}"
    )


_UPSERT = {t: _upsert(t, key, cols) for t, (key, cols) in TABLES.items()}
_INSERT = {
    t: f"INSERT INTO {t} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    for t, (_, cols) in TABLES.items()
}
_DELETE = {t: f"DELETE FROM {t} WHERE {key} = ?" for t, (key, _) in TABLES.items()}
_INSERT_POSTING = (
    f"INSERT INTO postings ({', '.join(POSTING_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(POSTING_COLUMNS))})"
)
_SET_SEQ = "INSERT OR REPLACE INTO projection_state (name, last_seq) VALUES (?, ?)"
# Moves the checkpoint over one batch, and only from the event just before it.
_ADVANCE_SEQ = "UPDATE projection_state SET last_seq = ? WHERE name = ? AND last_seq = ?"

log = structlog.get_logger("dcp_app.readmodel")


def tables_fingerprint() -> int:
    """A number naming the read-model tables and their columns: a release that adds a table or
    a column changes it, and its first start rebuilds them (an integer, as projection_state
    holds). 56 bits of a SHA-256."""
    spec = repr((sorted(TABLES.items()), POSTING_COLUMNS)).encode()
    return int.from_bytes(hashlib.sha256(spec).digest()[:7], "big")


def _tuples(rows: list[Row]) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) for r in rows]


def write_changes(conn: sqlite3.Connection, changes: RowChanges) -> None:
    """Apply upserts and deletes to the read-model tables (inside the caller's transaction)."""
    for table, keys in changes.deletes.items():
        if keys:
            conn.executemany(_DELETE[table], [(k,) for k in keys])
    for table, rows in changes.upserts.items():
        if rows:
            conn.executemany(_UPSERT[table], _tuples(rows))


def batch_writer(events: Sequence[Event], first_seq: int, changes: RowChanges) -> TxHook:
    """The tx hook for one batch: check the store gave the events the sequences the state
    assumed, then write the batch's rows and postings and move projection_state.

    Everything it writes was computed before the append, so the hook only reads immutable
    data while it runs in the store's writer thread.
    """
    tags = [e.__struct_config__.tag for e in events]

    def hook(conn: Any, recorded: Sequence[RecordedEvent]) -> None:
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
        write_changes(conn, changes)
        if postings:
            conn.executemany(_INSERT_POSTING, postings)
        last, before = recorded[-1].seq, recorded[0].seq - 1
        moved = conn.execute(_ADVANCE_SEQ, (last, PROJECTION, before)).rowcount
        if not moved and before == 0:  # the log's first batch
            conn.execute(_SET_SEQ, (PROJECTION, last))
            conn.execute(_SET_SEQ, (SCHEMA_ROW, tables_fingerprint()))

    return hook


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


PostingRows = list[tuple[Any, ...]]


def fold_log(
    conn: sqlite3.Connection,
    until_seq: int | None = None,
    codec: Codec | None = None,
    sink: Callable[[PostingRows], None] | None = None,
) -> State:
    """A state folded from the log read through `conn`, up to `until_seq` (inclusive), by the
    one fold loop (dcp_app.foldlog).

    `sink`, when given, receives the posting rows of each batch of events as it is folded.
    Raises InvariantError on a fault, DecodeError on an event that does not fit its schema.
    Reads only the columns a fold needs (the hash chain is `dcp audit verify`'s business), in
    bounded batches.
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

    try:
        foldlog.fold_batches(
            state,
            foldlog.sqlite_batches(conn, until_seq, batch_size=READ_BATCH),
            codec or default_codec(),
            collect if sink is not None else None,
            flush if sink is not None else None,
        )
    except foldlog.FoldFault as f:
        raise f.error from None
    return state


def rebuild(
    db_path: str | Path, until_seq: int | None = None, into: str | Path | None = None
) -> RebuildReport:
    """Rebuild every read model from the log of `db_path` as of `until_seq` (default: all).

    Writes into `into` (another SQLite file, created if needed) or, by default, into
    `db_path`'s own tables, replacing them: do that only while no service writes to it.
    Everything is written in one transaction. Raises InvariantError if the log breaks a money
    rule, DecodeError if an event does not decode; nothing is changed then.

    The postings of each batch are written as the fold goes (a second writer thread was
    measured slower: binding parameters needs the GIL), and secondary indexes are built once
    at the end rather than row by row.
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    with foldlog.no_gc():  # millions of objects that live to the end (dcp_app.foldlog)
        return _rebuild(db_path, until_seq, into, t0, cpu0)


def _rebuild(
    db_path: str | Path,
    until_seq: int | None,
    into: str | Path | None,
    t0: float,
    cpu0: float,
) -> RebuildReport:
    src = open_connection(db_path)
    dst = open_connection(into if into is not None else db_path)
    try:
        apply_schema(dst)
        dst.execute("BEGIN IMMEDIATE")
        try:
            for table in ALL_TABLES:
                dst.execute(f"DELETE FROM {table}")
            # Secondary indexes are built once at the end (a sort), not row by row.
            indexes = dst.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                f" AND tbl_name IN ({', '.join('?' * len(ALL_TABLES))})",
                ALL_TABLES,
            ).fetchall()
            for name, _ in indexes:
                dst.execute(f'DROP INDEX "{name}"')
            n_postings = 0

            def sink(batch: PostingRows) -> None:
                nonlocal n_postings
                n_postings += len(batch)
                dst.executemany(_INSERT_POSTING, batch)

            state = fold_log(src, until_seq, sink=sink)
            check_all(state)
            rows = all_rows(state)
            for table, table_rows in rows.items():
                if table_rows:  # the tables were emptied above: plain inserts
                    dst.executemany(_INSERT[table], _tuples(table_rows))
            for _, sql in indexes:
                dst.execute(sql)
            dst.execute("DELETE FROM projection_state")
            dst.execute(_SET_SEQ, (PROJECTION, state.seq))
            dst.execute(_SET_SEQ, (SCHEMA_ROW, tables_fingerprint()))
            dst.execute("COMMIT")
        except BaseException:
            dst.execute("ROLLBACK")
            raise
    finally:
        src.close()
        dst.close()
    n_rows = sum(len(r) for r in rows.values()) + n_postings
    return RebuildReport(
        events=state.seq,
        last_seq=state.seq,
        rows=n_rows,
        seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - cpu0,
    )


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
    reason = behind(db_path)
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


def table_contents(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    """Every row of a read-model table, sorted, for comparisons."""
    return sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)


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
