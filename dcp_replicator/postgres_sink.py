"""PostgreSQL sink: exactly-once effect over a direct connection (Supabase offers one too).

Each batch is applied in one transaction together with its checkpoint in
`dcp_replication_state`: each table's rows go as one array per column, unnested and upserted
with `ON CONFLICT ... DO UPDATE ... WHERE excluded.last_seq > t.last_seq`, so a row only ever moves
forward and a replayed batch does nothing. The checkpoint only moves from where the batch
starts, so two replicators on one sink cannot both apply the same batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from dcp_replicator.errors import CheckpointConflict, SinkRejected, SinkUnavailable
from dcp_replicator.source import Batch, Row
from dcp_replicator.tables import MIRRORED, TableSpec

MIGRATIONS = Path(__file__).resolve().parent.parent / "schemas" / "supabase"


def migration_files() -> list[Path]:
    """The target schema's migrations, in order."""
    return sorted(MIGRATIONS.glob("*.sql"))


_ARRAY_TYPE = {"int": "bigint[]", "text": "text[]", "bool": "boolean[]", "json": "text[]"}


def columns_of(t: TableSpec, rows: list[Row]) -> list[list[Any]]:
    """The batch's rows of `t` as one list per column (each sent as one array parameter),
    flags as booleans; JSON stays text and is cast to JSONB by the server."""
    cols: list[list[Any]] = (
        [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in t.columns]
    )
    for i, c in enumerate(t.columns):
        if c.kind == "bool":
            cols[i] = [None if v is None else bool(v) for v in cols[i]]
    return cols


class PostgresSink:
    """Writes batches to PostgreSQL. Use `await PostgresSink.connect(dsn)`.

    A lost connection (server restart, network) raises SinkUnavailable; the next call
    connects again, so the replicator's backoff loop is all the recovery there is.
    """

    def __init__(
        self,
        dsn: str,
        *,
        name: str = "postgres",
        migrate: bool = True,
        connect_timeout_s: int = 10,
        statement_timeout_ms: int = 60_000,
        tables: tuple[TableSpec, ...] = MIRRORED,
    ) -> None:
        self.name = name
        self._dsn = dsn
        self._migrate = migrate
        self._connect_timeout_s = connect_timeout_s
        self._statement_timeout_ms = statement_timeout_ms
        self._conn: psycopg.AsyncConnection | None = None
        self._tables = {t.target: t for t in tables}
        self._upserts = {t.target: _upsert_sql(t) for t in tables}

    @classmethod
    async def connect(cls, dsn: str, **kwargs: object) -> PostgresSink:
        """A connected sink (the target schema applied unless migrate=False); raises
        SinkUnavailable if the server cannot be reached."""
        sink = cls(dsn, **kwargs)  # type: ignore[arg-type]
        await sink._ensure()
        return sink

    async def _ensure(self) -> psycopg.AsyncConnection:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._dsn,
                connect_timeout=self._connect_timeout_s,
                application_name="dcp_replicator",
                # No server-side prepared statements: they break behind a transaction-mode
                # pooler (Supabase's port 6543); every statement here is cheap to plan.
                prepare_threshold=None,
            )
        except psycopg.OperationalError as e:
            raise SinkUnavailable(f"cannot connect to PostgreSQL: {_brief(e)}") from e
        try:
            if self._migrate:
                await self._apply_migrations(conn)
                self._migrate = False  # once per process is enough
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    @staticmethod
    async def _apply_migrations(conn: psycopg.AsyncConnection) -> None:
        async with _errors("migrating"), conn.transaction():
            # Two replicators starting at once would otherwise race on CREATE.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('dcp_mirror'))")
            for f in migration_files():
                await conn.execute(f.read_text().encode())

    async def checkpoint(self) -> int:
        """The committed checkpoint of this sink (0 if none)."""
        conn = await self._ensure()
        async with _errors("reading the checkpoint"), conn.transaction():
            cur = await conn.execute(
                "SELECT last_seq FROM dcp_replication_state WHERE sink = %s", (self.name,)
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def apply(self, batch: Batch) -> None:
        """Apply `batch` and move the checkpoint from `batch.after_seq` to `batch.upto_seq`, in
        one transaction; CheckpointConflict (and nothing applied) if the sink's checkpoint is
        not `batch.after_seq`."""
        conn = await self._ensure()
        what = f"applying seq {batch.after_seq}..{batch.upto_seq}"
        async with _errors(what), conn.transaction():
            # One round trip for the whole batch. The checkpoint moves last, and only from
            # where this batch starts: if another replicator got there first, the UPDATE
            # matches no row (it re-checks after waiting for the other's row lock) and the
            # whole transaction, rows included, rolls back.
            async with conn.pipeline():
                # Per transaction, not per session, so a transaction-mode pooler is fine.
                await conn.execute(
                    "SELECT set_config('statement_timeout', %s, true)",
                    (str(self._statement_timeout_ms),),
                )
                await conn.execute(
                    "INSERT INTO dcp_replication_state (sink, last_seq) VALUES (%s, 0)"
                    " ON CONFLICT (sink) DO NOTHING",
                    (self.name,),
                )
                for target, rows in batch.rows.items():
                    t = self._tables[target]
                    await conn.execute(self._upserts[target], columns_of(t, rows))
                moved = await conn.execute(
                    "UPDATE dcp_replication_state SET last_seq = %s, updated_at = now()"
                    " WHERE sink = %s AND last_seq = %s",
                    (batch.upto_seq, self.name, batch.after_seq),
                )
            if moved.rowcount != 1:
                raise CheckpointConflict(
                    f"sink {self.name!r} is not at seq {batch.after_seq}: another replicator?"
                )

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def _upsert_sql(t: TableSpec) -> sql.Composed:
    """INSERT ... SELECT FROM unnest(one array per column) ON CONFLICT (key) DO UPDATE ...
    WHERE excluded.last_seq > t.last_seq: one statement and one round trip per table, no
    staging table (so a transaction-mode pooler in front of the server is fine)."""
    ident = sql.Identifier
    names = [ident(f"c{i}") for i in range(len(t.columns))]
    arrays = sql.SQL(", ").join(
        sql.SQL("%s::{}").format(sql.SQL(_ARRAY_TYPE[c.kind])) for c in t.columns
    )
    select = sql.SQL(", ").join(
        sql.SQL("{}::jsonb").format(n) if c.kind == "json" else n
        for n, c in zip(names, t.columns, strict=True)
    )
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = excluded.{0}").format(ident(c))
        for c in t.target_columns
        if c not in t.target_key
    )
    return sql.SQL(
        "INSERT INTO {target} AS t ({cols}) SELECT {select} FROM unnest({arrays}) AS u({names})"
        " ON CONFLICT ({key}) DO UPDATE SET {updates} WHERE excluded.last_seq > t.last_seq"
    ).format(
        target=ident(t.target),
        cols=sql.SQL(", ").join(map(ident, t.target_columns)),
        select=select,
        arrays=arrays,
        names=sql.SQL(", ").join(names),
        key=sql.SQL(", ").join(map(ident, t.target_key)),
        updates=updates,
    )


class _errors:
    """Turn psycopg errors into the replicator's: connection trouble is transient."""

    def __init__(self, what: str) -> None:
        self.what = what

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, et: type | None, e: BaseException | None, tb: object) -> bool:
        if e is None or not isinstance(e, psycopg.Error):
            return False
        if isinstance(e, psycopg.OperationalError | psycopg.errors.SerializationFailure) or (
            e.sqlstate or ""
        )[:2] in {"08", "40", "53", "57", "58"}:
            raise SinkUnavailable(f"{self.what}: {_brief(e)}") from e
        raise SinkRejected(f"{self.what}: {_brief(e)}") from e


def _brief(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
