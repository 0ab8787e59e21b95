"""A stand-in for PostgREST (Supabase's REST layer), because none can run here.

It is an httpx MockTransport handler, so supabase-py's real client builds and sends its real
requests through it. It records each request exactly as sent, can inject faults (503s,
timeouts, dropped connections, a lost acknowledgement after the write committed), and, given a
PostgreSQL DSN, executes the statement PostgREST 12 generates for a bulk upsert
(`INSERT ... SELECT ... FROM json_to_recordset(...) ON CONFLICT (...) DO UPDATE SET c =
EXCLUDED.c, ...`, PostgREST's src/PostgREST/Query/QueryBuilder.hs and SqlFragment.hs) against
the real server, with the body it received. Only what the replicator uses is modelled: POST
upserts with `on_conflict`, `columns`, and `Prefer: return=minimal,resolution=merge-duplicates`.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import httpx
import psycopg
from psycopg import sql


class Recorded:
    """One request as it arrived."""

    def __init__(self, request: httpx.Request) -> None:
        self.method = request.method
        self.path = request.url.path
        self.params = dict(request.url.params)
        self.headers = request.headers
        self.body = json.loads(request.content) if request.content else None

    @property
    def table(self) -> str:
        """The table named by the path /rest/v1/<table>."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def columns(self) -> list[str]:
        """The `columns` parameter, unquoted."""
        return [c.strip('"') for c in self.params.get("columns", "").split(",") if c]


def upsert_sql(table: str, columns: list[str], types: dict[str, str], on_conflict: list[str]):
    """The statement PostgREST runs for `POST /table?columns=...&on_conflict=...` with
    `Prefer: resolution=merge-duplicates` (body as the one parameter)."""
    ident = sql.Identifier
    cols = sql.SQL(", ").join(map(ident, columns))
    body_cols = sql.SQL(", ").join(sql.SQL("pgrst_body.{}").format(ident(c)) for c in columns)
    typed = sql.SQL(", ").join(
        sql.SQL("{} {}").format(ident(c), sql.SQL(types[c])) for c in columns
    )
    sets = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(ident(c)) for c in columns)
    return sql.SQL(
        "WITH pgrst_source AS ("
        " INSERT INTO {qi}({cols}) SELECT {body_cols}"
        " FROM (SELECT %s::json AS json_data) pgrst_payload,"
        " LATERAL (SELECT CASE WHEN json_typeof(pgrst_payload.json_data) = 'array'"
        " THEN pgrst_payload.json_data ELSE json_build_array(pgrst_payload.json_data) END"
        " AS val) pgrst_uniform_json,"
        " LATERAL (SELECT {cols} FROM json_to_recordset(pgrst_uniform_json.val)"
        " AS _({typed}) ) pgrst_body"
        " ON CONFLICT({conflict}) DO UPDATE SET {sets}"
        " RETURNING 1)"
        " SELECT '' AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total,"
        " array[]::text[] AS header, ''::text AS body"
        " FROM (SELECT 1 FROM pgrst_source) _postgrest_t"
    ).format(
        qi=sql.Identifier("public", table),
        cols=cols,
        body_cols=body_cols,
        typed=typed,
        conflict=sql.SQL(", ").join(map(ident, on_conflict)),
        sets=sets,
    )


class FakePostgrest:
    """Records requests, injects queued faults, and (with a DSN) writes to PostgreSQL.

    Faults, consumed one per request: "503" (a gateway's non-JSON 503), "503json" (PostgREST's
    own PGRST003 timeout body with 504), "timeout" (the read times out), "drop" (the server
    closes the connection before answering), "drop_after_commit" (the write commits, then the
    connection drops: the client never learns it succeeded), "400" (a request PostgREST
    refuses).
    """

    def __init__(self, dsn: str | None = None) -> None:
        self.dsn = dsn
        self.requests: list[Recorded] = []
        self.faults: deque[str] = deque()
        self.committed = 0
        self._types: dict[str, dict[str, str]] = {}

    def transport(self) -> httpx.MockTransport:
        """The transport to give the injected httpx client."""
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        rec = Recorded(request)
        self.requests.append(rec)
        fault = self.faults.popleft() if self.faults else None
        if fault == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if fault == "drop":
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        if fault == "503":
            return httpx.Response(503, text="<html>503 Service Unavailable</html>")
        if fault == "503json":
            return httpx.Response(
                504,
                json={"code": "PGRST003", "message": "Timed out acquiring connection"},
            )
        if fault == "400":
            return httpx.Response(
                400, json={"code": "PGRST204", "message": "Could not find the column"}
            )
        if self.dsn is not None:
            await self._execute(rec)
        if fault == "drop_after_commit":
            raise httpx.RemoteProtocolError("connection reset after commit", request=request)
        return httpx.Response(201, headers={"Content-Range": "*/*"})

    async def _execute(self, rec: Recorded) -> None:
        assert rec.method == "POST", rec.method
        assert "resolution=merge-duplicates" in rec.headers["prefer"]
        async with await psycopg.AsyncConnection.connect(self.dsn) as conn:
            types = await self._column_types(conn, rec.table)
            on_conflict = rec.params["on_conflict"].split(",")
            stmt = upsert_sql(rec.table, rec.columns, types, on_conflict)
            await conn.execute(stmt, (json.dumps(rec.body),))
        self.committed += 1

    async def _column_types(self, conn: Any, table: str) -> dict[str, str]:
        if table not in self._types:
            cur = await conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (table,),
            )
            self._types[table] = dict(await cur.fetchall())
        return self._types[table]
