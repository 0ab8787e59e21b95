"""The PostgreSQL event store: the same log, chain and promises as the SQLite store, shared by
several processes (docs/postgres.md).

Writes: appends from any number of tasks of one process go into a queue; one writer task takes
everything queued (up to a bound) and writes it as one transaction in two round trips, both
pipelined: (1) BEGIN, lock the head row, look up every stream version and idempotency key the
group names; (2) insert every row with one statement (or, for a large group, a COPY just
before), move the head row, NOTIFY, COMMIT. The checks run here in Python between the two (the
same code as SQLite's, dcp_events._append), so one caller's version clash fails only that
caller. A caller is answered once COMMIT has
returned, with synchronous_commit on: its events are durable.

Serialisation across processes: every batch locks the single `events_head` row before it
numbers its events and releases it when it commits, so sequences are handed out in commit order
and the committed log is always a dense prefix 1..head; a reader of `seq > after` never skips.

Reads: a connection pool; `tail()` listens on a dedicated connection for the one NOTIFY each
batch sends (payload: the new head), catches up with read_all after every (re)connect, and polls
every `poll_s` as well, so a lost notification only delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from dcp_events._append import (
    COLUMNS,
    Checked,
    Unit,
    check_unit,
    now_us,
    resolve_all,
    row_to_event,
    validate,
)
from dcp_events.chain import GENESIS_HASH
from dcp_events.errors import DcpError, StoreError
from dcp_events.store import (
    AppendRequest,
    AppendResult,
    AppendsOne,
    CommitObserver,
    GroupCommit,
    RecordedEvent,
    TxHook,
)

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas" / "postgres"
CHANNEL = "dcp_events"

# Bounds (TigerBeetle: put a limit on everything).
MAX_GROUP_UNITS = 4096  # appends written in one transaction
MAX_GROUP_EVENTS = 20_000  # events written in one transaction
MAX_READ_LIMIT = 100_000
COPY_MIN_ROWS = 500  # a group with this many rows inserts them with COPY
CONNECT_TIMEOUT_S = 10.0
RECONNECT_MAX_S = 5.0  # a tail's reconnect back-off grows to this

# Any lock id will do as long as it is ours alone: it only serialises concurrent `open`s.
_SCHEMA_LOCK = 0x0DC9_E7E5
# The deciders' turn (`PostgresEventStore.turn`): a session-level advisory lock.
_TURN_LOCK = 0x0DC9_7E17
TURN_TIMEOUT_S = 10.0  # a node waits this long for its turn before the batch fails (503)

# The hook of append_atomic on PostgreSQL: called inside the batch's transaction, after the
# unit's events are inserted, with the writer's psycopg AsyncConnection and those events. It may
# be a coroutine function (it is awaited) or a plain one; what it writes commits or rolls back
# with the events, and if it raises, that append alone fails (StoreError) and writes nothing.
# It runs in the writer task, so it must not wait on other appends.
PgTxHook = Callable[["psycopg.AsyncConnection[Any]", Sequence[RecordedEvent]], Awaitable[None]]

_HEAD_LOCK = "SELECT seq, hash FROM events_head WHERE one FOR UPDATE"
# One index probe per stream (max() on the unique index), however long the stream is.
_VERSIONS = (
    "SELECT s, (SELECT max(stream_version) FROM events WHERE stream_id = s)"
    " FROM unnest(%b::text[]) AS s"
)
_KEYS = (
    "SELECT idempotency_key, min(stream_id), min(seq), max(seq), max(stream_version)"
    " FROM events WHERE idempotency_key = ANY(%b::text[]) GROUP BY idempotency_key"
)
# One statement for the whole group's rows: the arrays travel in binary, column by column.
_INSERT = (
    f"INSERT INTO events ({COLUMNS}) SELECT * FROM unnest("
    "%b::bigint[], %b::text[], %b::bigint[], %b::text[], %b::int[], %b::text[], %b::bigint[],"
    " %b::text[], %b::text[], %b::text[], %b::text[])"
)
_COPY = f"COPY events ({COLUMNS}) FROM STDIN"
_MOVE_HEAD = "UPDATE events_head SET seq = %s, hash = %s WHERE one"
_NOTIFY = f"SELECT pg_notify('{CHANNEL}', %s)"
_STOP = object()
_IDLE = psycopg.pq.TransactionStatus.IDLE


def schema_files() -> list[Path]:
    """The DDL files applied to every PostgreSQL log, in order."""
    return sorted(SCHEMA_DIR.glob("[0-9][0-9][0-9]_*.sql"))


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(c) for c in zip(*rows, strict=True)]


# COPY's text format: a NULL, and what a field must escape (nothing else is special).
_COPY_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(rows: list[tuple[Any, ...]]) -> str:
    """`rows` (COLUMNS order) as the data of one `COPY ... FROM STDIN` in text format.

    Built in one piece rather than a `write_row` per row: one look (a memchr per character)
    over all the text fields for a character COPY would read as a delimiter or an escape, and
    only a batch that has one escapes its fields one by one; the hashes are hex.
    """
    texts = "".join([f"{r[1]}{r[3]}{r[5]}{r[7]}{r[8] or ''}" for r in rows])
    if "\\" in texts or "\t" in texts or "\n" in texts or "\r" in texts:
        esc = _COPY_ESCAPES
        rows = [
            (r[0], r[1].translate(esc), r[2], r[3].translate(esc), r[4], r[5].translate(esc),
             r[6], r[7].translate(esc), None if r[8] is None else r[8].translate(esc), r[9],
             r[10])
            for r in rows
        ]  # fmt: skip
    null = _COPY_NULL
    lines = [
        "\t".join(
            (str(r[0]), r[1], str(r[2]), r[3], str(r[4]), r[5], str(r[6]), r[7],
             null if r[8] is None else r[8], r[9], r[10])
        )
        for r in rows
    ]  # fmt: skip
    lines.append("")  # the last row's newline
    return "\n".join(lines)


async def _copy_rows(conn: psycopg.AsyncConnection[Any], rows: list[tuple[Any, ...]]) -> None:
    async with conn.cursor() as cur, cur.copy(_COPY) as copy:
        await copy.write(copy_text(rows))


async def _copy_when_ready(conn: psycopg.AsyncConnection[Any], data: asyncio.Future[str]) -> None:
    """Start a COPY at once and send its data (copy_text) when `data` has it; if `data` fails,
    the COPY fails (nothing of it is written) and so does this."""
    async with conn.cursor() as cur, cur.copy(_COPY) as copy:
        text = await data
        if text:
            await copy.write(text)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # Durable commits whatever the server's default: a caller is answered only after the WAL
    # record of its batch is flushed.
    await conn.execute("SET synchronous_commit = on")


async def apply_schema(conn: psycopg.AsyncConnection[Any]) -> None:
    """Apply every DDL file this database has not had yet, each once, recorded by name.

    Each file is idempotent on its own; the record is there because re-creating a trigger
    locks its table against appends, which a node starting beside busy ones should not do.
    New DDL goes in a new file (002_...), never in an edit of an applied one.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        cur = await conn.execute("SELECT to_regclass('dcp_schema_files') IS NOT NULL")
        row = await cur.fetchone()
        if not (row and row[0]):  # no CREATE at all once set up: the app role may lack it
            await conn.execute(
                "CREATE TABLE dcp_schema_files"
                " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
        cur = await conn.execute("SELECT name FROM dcp_schema_files")
        applied = {row[0] for row in await cur.fetchall()}
        for f in schema_files():
            if f.name in applied:
                continue
            await conn.execute(f.read_text().encode())
            await conn.execute("INSERT INTO dcp_schema_files (name) VALUES (%s)", (f.name,))


class PostgresEventStore(AppendsOne):
    """The event store on PostgreSQL. Open with `await PostgresEventStore.open(dsn)`.

    One store belongs to the event loop that opened it (its writer is a task of that loop).
    """

    def __init__(self, dsn: str, pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]) -> None:
        self.dsn = dsn
        self._pool = pool
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = False
        self._listeners: set[psycopg.AsyncConnection[Any]] = set()
        self._turn_conn: psycopg.AsyncConnection[Any] | None = None
        # Told about every group commit (dcp_http.metrics); None: nobody listens.
        self.on_commit: CommitObserver | None = None
        self._writer = asyncio.get_running_loop().create_task(self._run(), name="dcp-pg-writer")

    @classmethod
    async def open(cls, dsn: str, max_connections: int = 8) -> PostgresEventStore:
        """Connect to the log at `dsn` (a postgresql:// URL) and apply the schema."""
        try:
            # One direct connection first: a wrong DSN fails at once with the server's reason,
            # rather than after the pool's retries; it also applies the schema.
            async with await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S)
            ) as conn:
                await apply_schema(conn)
        except (psycopg.Error, OSError) as e:
            raise StoreError(f"cannot open event log {_redacted(dsn)}: {e}") from e
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max(2, max_connections),
            kwargs={"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT_S)},
            configure=_configure,
            # How long an append or read waits for a connection while the server is away
            # before it fails with StoreError (rather than hanging).
            timeout=CONNECT_TIMEOUT_S,
            open=False,
            name="dcp-events",
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except (psycopg.Error, OSError) as e:
            await pool.close()
            raise StoreError(f"cannot open event log {_redacted(dsn)}: {e}") from e
        return cls(dsn, pool)

    # -- writes -------------------------------------------------------------------------------

    async def append_atomic(
        self,
        requests: Sequence[AppendRequest],
        *,
        expected_head: int | None = None,
        tx_hook: PgTxHook | TxHook | None = None,
    ) -> list[AppendResult]:
        """Append to several streams all-or-nothing, in the order given.

        Raises StaleHeadError when `expected_head` is given and the log's last sequence differs,
        ConcurrencyError on a version clash, StoreError on I/O faults or if `tx_hook` (see
        PgTxHook) fails.
        """
        validate(requests)
        if self._closed:
            raise StoreError("event store is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[AppendResult]] = loop.create_future()
        self._queue.put_nowait(Unit(requests, expected_head, tx_hook, loop, fut))
        return await fut

    async def _run(self) -> None:
        """The writer task: take whatever is queued, write it as one group, repeat."""
        while True:
            item = await self._queue.get()
            if item is _STOP:
                return
            group = [item]
            n_events = item.n_events
            stop = False
            while len(group) < MAX_GROUP_UNITS and n_events < MAX_GROUP_EVENTS:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                group.append(nxt)
                n_events += nxt.n_events
            await self._write_group(group)
            if stop:
                return

    async def _write_group(self, group: list[Unit]) -> None:
        started = time.perf_counter()
        commit_s = 0.0
        written = 0
        failed = False
        try:
            async with self._pool.connection() as conn:
                outcomes, written, commit_s = await self._transaction(conn, group)
        except Exception as e:
            # The connection broke or a statement failed: nothing of the group committed (or, if
            # COMMIT itself was cut off, its outcome is unknown): every caller hears so, and may
            # retry with its idempotency key.
            failed, written = True, 0
            err = e if isinstance(e, StoreError) else StoreError(f"event log write failed: {e}")
            outcomes = [err] * len(group)
        resolve_all([(u.future, o) for u, o in zip(group, outcomes, strict=True)])
        observer = self.on_commit
        if observer is not None:
            stats = GroupCommit(
                len(group), written, time.perf_counter() - started, commit_s, failed
            )
            with contextlib.suppress(Exception):
                observer(stats)

    async def _transaction(
        self, conn: psycopg.AsyncConnection[Any], group: list[Unit]
    ) -> tuple[list[Any], int, float]:
        """Write `group` in one transaction; returns each unit's outcome, the events written and
        how long the last round trip took (rows, head, COMMIT: the observer's `commit_s`).
        Raises psycopg.Error when the transaction as a whole fails."""
        streams = sorted({r.stream_id for u in group for r in u.requests})
        keys = sorted({r.idempotency_key for u in group for r in u.requests if r.idempotency_key})
        try:
            # Round trip 1: the lock, then everything the checks need, read after the lock was
            # granted (READ COMMITTED: each statement sees every batch committed before it).
            async with conn.pipeline():
                await conn.execute("BEGIN")
                head_cur = await conn.execute(_HEAD_LOCK)
                ver_cur = await conn.execute(_VERSIONS, (streams,))
                key_cur = await conn.execute(_KEYS, (keys,)) if keys else None
            head = await head_cur.fetchone()
            if head is None:
                raise StoreError("the events_head row is missing: not a DCP event log")
            head_seq, head_hash = head[0], head[1]
            versions: dict[str, int] = {s: v or 0 for s, v in await ver_cur.fetchall()}
            seen: dict[str, AppendResult] = {}
            if key_cur is not None:
                for k, stream, first, last, version in await key_cur.fetchall():
                    seen[k] = AppendResult(stream, first, last, version, True)
            # A large group without hooks (nothing else runs on the connection during its
            # checks) sends its COPY before the checks and its rows after them, so the COPY's
            # own round trip passes while the chain is hashed.
            early: asyncio.Task[None] | None = None
            if sum(u.n_events for u in group) >= COPY_MIN_ROWS and all(
                u.tx_hook is None for u in group
            ):
                data: asyncio.Future[str] = asyncio.get_running_loop().create_future()
                early = asyncio.create_task(_copy_when_ready(conn, data))
                await asyncio.sleep(0)  # let it send the COPY statement
            try:
                outcomes, pending, head_seq, head_hash, written = await self._check_group(
                    conn, group, head_seq, head_hash, versions, seen
                )
            except BaseException as e:
                if early is not None:  # the COPY fails with the error, then the batch
                    if isinstance(e, Exception):
                        data.set_exception(e)
                    else:
                        data.cancel()
                    with contextlib.suppress(BaseException):
                        await early
                raise
            # Round trip 2: the rows, the head, the wake-up, the commit. A large group's rows go
            # by COPY first (two round trips of its own, but far less work per row on both
            # sides than binding arrays); a small group's ride in the same pipeline.
            committing = time.perf_counter()
            if early is not None:
                data.set_result(copy_text(pending) if pending else "")
                await early
                pending = []
            elif len(pending) >= COPY_MIN_ROWS:
                await _copy_rows(conn, pending)
                pending = []
            async with conn.pipeline():
                if pending:
                    await conn.execute(_INSERT, _columns(pending))
                if written:
                    await conn.execute(_MOVE_HEAD, (head_seq, head_hash))
                    await conn.execute(_NOTIFY, (str(head_seq),))
                await conn.execute("COMMIT")
            return outcomes, written, time.perf_counter() - committing
        except BaseException:
            if not conn.closed and conn.info.transaction_status != _IDLE:
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("ROLLBACK")
            raise

    async def _check_group(
        self,
        conn: psycopg.AsyncConnection[Any],
        group: list[Unit],
        head_seq: int,
        head_hash: str,
        versions: dict[str, int],
        seen: dict[str, AppendResult],
    ) -> tuple[list[Any], list[tuple[Any, ...]], int, str, int]:
        """Check each unit in order against the log and the units before it; run the hooks.
        Returns the outcomes, the rows still to insert, the new head and the events written."""
        outcomes: list[Any] = []
        pending: list[tuple[Any, ...]] = []
        now = now_us()
        written = 0
        for unit in group:
            hook = unit.tx_hook
            try:
                done: Checked = check_unit(
                    unit, head_seq, head_hash, now, versions.__getitem__, seen.get
                )
            except DcpError as e:
                outcomes.append(e)
                continue
            if hook is not None:
                # Only a hook can fail after the inserts: its unit gets a savepoint to roll back
                # to; the units before it are inserted first so that it sees them.
                if pending:
                    await conn.execute(_INSERT, _columns(pending))
                    pending.clear()
                await conn.execute("SAVEPOINT unit")
                try:
                    await conn.execute(_INSERT, _columns(done.rows))
                    result = hook(conn, [row_to_event(r) for r in done.rows])
                    if inspect.isawaitable(result):
                        await result
                except Exception as e:
                    await conn.execute("ROLLBACK TO SAVEPOINT unit")
                    await conn.execute("RELEASE SAVEPOINT unit")
                    if not isinstance(e, DcpError):
                        e = StoreError(f"append failed in its transaction hook: {e!r}")
                    outcomes.append(e)
                    continue
                await conn.execute("RELEASE SAVEPOINT unit")
            else:
                pending.extend(done.rows)
            head_seq, head_hash = done.head_seq, done.head_hash
            versions.update(done.versions)
            seen.update(done.keys)
            outcomes.append(done.results)
            written += len(done.rows)
        return outcomes, pending, head_seq, head_hash, written

    # -- the deciders' turn -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the log's one deciding turn: no other process holding it appends meanwhile.

        A service that folds the log, decides against it and appends with `expected_head`
        (dcp_app.service) takes the turn around all three, so several nodes on one database
        take turns instead of deciding on the same head and all but one failing with
        StaleHeadError and folding again (a retry storm). The turn is only a speed-up: the
        head check inside the append stays the guard, so a turn lost with its connection
        (the server restarted) costs at worst one refold. A session-level advisory lock on a
        connection of its own: a node that dies releases it with its connection. Raises
        StoreError when the turn cannot be had within TURN_TIMEOUT_S or the server is away.
        """
        conn = await self._turn_connection()
        try:
            await conn.execute("SELECT pg_advisory_lock(%s)", (_TURN_LOCK,))
        except psycopg.Error as e:
            await self._drop_turn_connection()
            raise StoreError(f"cannot take the log's turn: {e}") from e
        except BaseException:  # cancelled while waiting: the lock may come late; drop it
            await self._drop_turn_connection()
            raise
        try:
            yield
        finally:
            try:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (_TURN_LOCK,))
            except psycopg.Error:
                await self._drop_turn_connection()  # the lock went with the connection

    async def _turn_connection(self) -> psycopg.AsyncConnection[Any]:
        conn = self._turn_conn
        if conn is not None and not conn.closed:
            return conn
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S)
            )
            # lock_timeout bounds the wait behind a stuck holder (ms).
            await conn.execute(f"SET lock_timeout = {int(TURN_TIMEOUT_S * 1000)}")
        except psycopg.Error as e:
            raise StoreError(f"cannot take the log's turn: {e}") from e
        self._turn_conn = conn
        return conn

    async def _drop_turn_connection(self) -> None:
        conn, self._turn_conn = self._turn_conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    # -- reads --------------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(sql, params)
                return await cur.fetchall()
        except psycopg.Error as e:
            raise StoreError(f"event log read failed: {e}") from e

    async def read_all(self, after_seq: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to `limit` events with seq > `after_seq`, in sequence order."""
        limit = max(1, min(limit, MAX_READ_LIMIT))
        rows = await self._fetch(
            f"SELECT {COLUMNS} FROM events WHERE seq > %s ORDER BY seq LIMIT %s",
            (after_seq, limit),
        )
        return [row_to_event(r) for r in rows]

    async def read_stream(
        self, stream_id: str, from_version: int = 1, limit: int = 1000
    ) -> list[RecordedEvent]:
        """Up to `limit` events of `stream_id` with version >= `from_version`, in order."""
        limit = max(1, min(limit, MAX_READ_LIMIT))
        rows = await self._fetch(
            f"SELECT {COLUMNS} FROM events WHERE stream_id = %s AND stream_version >= %s"
            " ORDER BY stream_version LIMIT %s",
            (stream_id, from_version, limit),
        )
        return [row_to_event(r) for r in rows]

    async def head(self) -> tuple[int, str]:
        """The last sequence and its hash; (0, GENESIS_HASH) for an empty log."""
        rows = await self._fetch("SELECT seq, hash FROM events_head WHERE one", ())
        return (rows[0][0], rows[0][1]) if rows else (0, GENESIS_HASH)

    async def tail(
        self, after_seq: int = 0, batch_size: int = 500, poll_s: float = 2.0
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Yield batches of at most `batch_size` events as they commit, until the store closes.

        Woken by each batch's NOTIFY, from any process; catches up with read_all after every
        (re)connect and reads again every `poll_s` regardless, so a lost notification delays
        and never loses. While the database is unreachable it retries with a growing pause.
        """
        backoff_s = 0.1
        while not self._closed:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S)
                )
            except psycopg.Error:
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RECONNECT_MAX_S)
                continue
            self._listeners.add(conn)
            try:
                # LISTEN before the catch-up read: a batch committed in between still wakes us.
                await conn.execute(f"LISTEN {CHANNEL}")
                backoff_s = 0.1
                while True:
                    batch = await self.read_all(after_seq, batch_size)
                    if batch:
                        after_seq = batch[-1].seq
                        yield batch
                        continue
                    async for _ in conn.notifies(timeout=poll_s, stop_after=1):
                        pass
            except (psycopg.Error, StoreError):
                if self._closed:
                    return
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RECONNECT_MAX_S)
            finally:
                self._listeners.discard(conn)
                await conn.close()

    async def close(self) -> None:
        """Write what is queued, stop the writer, end every tail and close every connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(_STOP)
        await self._writer
        for conn in list(self._listeners):
            await conn.close()
        await self._drop_turn_connection()
        await self._pool.close()

    async def __aenter__(self) -> PostgresEventStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _redacted(dsn: str) -> str:
    """The DSN without its password, for error messages."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "<unparsable dsn>"
    params.pop("password", None)
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})
