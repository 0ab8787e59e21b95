"""PostgreSQL sink: exactly-once effect over a direct connection (Supabase offers one too).

Each batch is applied in one transaction together with its checkpoint in
`dcp_replication_state`: rows are COPYed into temporary staging tables and upserted with
`ON CONFLICT ... DO UPDATE ... WHERE excluded.last_seq > t.last_seq`, so a row only ever moves
forward and a replayed batch does nothing. The checkpoint row is locked and compared first, so
two replicators on one sink cannot both apply the same batch.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from dcp_replicator.errors import CheckpointConflict, SinkRejected, SinkUnavailable
from dcp_replicator.source import Batch
from dcp_replicator.tables import MIRRORED, TableSpec

MIGRATIONS = Path(__file__).resolve().parent.parent / "schemas" / "supabase"


def migration_files() -> list[Path]:
    """The target schema's migrations, in order."""
    return sorted(MIGRATIONS.glob("*.sql"))


def convert_for_copy(t: TableSpec, row: tuple) -> tuple:
    """A local row in the form COPY takes for the target (flags as booleans; JSON as text,
    which the server parses into JSONB)."""
    return tuple(
        (None if v is None else bool(v)) if c.kind == "bool" else v
        for c, v in zip(t.columns, row, strict=True)
    )


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
                options=f"-c statement_timeout={self._statement_timeout_ms}",
                application_name="dcp_replicator",
            )
        except psycopg.OperationalError as e:
            raise SinkUnavailable(f"cannot connect to PostgreSQL: {_brief(e)}") from e
        try:
            if self._migrate:
                await self._apply_migrations(conn)
                self._migrate = False  # once per process is enough
            await self._prepare_staging(conn)
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
                await conn.execute(f.read_text())  # type: ignore[arg-type]

    async def _prepare_staging(self, conn: psycopg.AsyncConnection) -> None:
        async with _errors("preparing staging tables"), conn.transaction():
            for t in self._tables.values():
                await conn.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS"
                    ).format(sql.Identifier(_stage(t)), sql.Identifier(t.target))
                )

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
        """Apply `batch` and move the checkpoint, in one transaction."""
        conn = await self._ensure()
        what = f"applying seq {batch.after_seq}..{batch.upto_seq}"
        async with _errors(what), conn.transaction():
            await self._lock_checkpoint(conn, batch.after_seq)
            for target, rows in batch.rows.items():
                t = self._tables[target]
                async with conn.cursor() as cur:
                    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
                        sql.Identifier(_stage(t)),
                        sql.SQL(", ").join(map(sql.Identifier, t.target_columns)),
                    )
                    async with cur.copy(copy_sql) as copy:
                        for row in rows:
                            await copy.write_row(convert_for_copy(t, row))
                    # The staging table empties itself at commit (ON COMMIT DELETE ROWS).
                    await cur.execute(self._upserts[target])
            await conn.execute(
                "UPDATE dcp_replication_state SET last_seq = %s, updated_at = now()"
                " WHERE sink = %s",
                (batch.upto_seq, self.name),
            )

    async def _lock_checkpoint(self, conn: psycopg.AsyncConnection, expected: int) -> None:
        await conn.execute(
            "INSERT INTO dcp_replication_state (sink, last_seq) VALUES (%s, 0)"
            " ON CONFLICT (sink) DO NOTHING",
            (self.name,),
        )
        cur = await conn.execute(
            "SELECT last_seq FROM dcp_replication_state WHERE sink = %s FOR UPDATE",
            (self.name,),
        )
        row = await cur.fetchone()
        assert row is not None
        if int(row[0]) != expected:
            raise CheckpointConflict(
                f"sink {self.name!r} is at seq {row[0]}, not {expected}: another replicator?"
            )

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def _stage(t: TableSpec) -> str:
    return f"_dcp_stage_{t.target}"


def _upsert_sql(t: TableSpec) -> sql.Composed:
    cols = sql.SQL(", ").join(map(sql.Identifier, t.target_columns))
    key = sql.SQL(", ").join(map(sql.Identifier, t.target_key))
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c))
        for c in t.target_columns
        if c not in t.target_key
    )
    return sql.SQL(
        "INSERT INTO {target} AS t ({cols}) SELECT {cols} FROM {stage}"
        " ON CONFLICT ({key}) DO UPDATE SET {updates} WHERE excluded.last_seq > t.last_seq"
    ).format(
        target=sql.Identifier(t.target),
        cols=cols,
        stage=sql.Identifier(_stage(t)),
        key=key,
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
