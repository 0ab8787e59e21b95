"""Supabase sink: PostgREST bulk upserts through supabase-py's async client.

At least once, with idempotent rows: each table's rows go as uniform, full rows (every column,
NULLs included), deduplicated per key, in requests bounded by rows and by bytes, with
`on_conflict=<key>` and `Prefer: return=minimal`. The target's `dcp_forward_only` trigger
skips any update that would move a row back, so a replayed batch does no harm. supabase-py
does not retry POSTs, so this sink retries transient failures itself, with backoff. The
checkpoint lives in the local CheckpointStore and is stored only after every request of the
batch was acknowledged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import msgspec
import structlog
from postgrest import APIError
from postgrest.types import ReturnMethod
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from dcp_replicator.backoff import backoff_s
from dcp_replicator.checkpoint import CheckpointStore
from dcp_replicator.errors import SinkRejected, SinkUnavailable
from dcp_replicator.source import Batch, Row
from dcp_replicator.tables import MIRRORED, TableSpec

log = structlog.get_logger("dcp_replicator")

# HTTP statuses worth retrying: timeouts, throttling, gateway and server trouble
# (Cloudflare's 52x included). Anything else in 4xx means the request itself is wrong.
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
# PostgREST's own codes for "could not reach / lost the database" (PGRST000-PGRST003), and
# SQLSTATE classes for connection loss, rollbacks, resources, shutdown and system errors.
TRANSIENT_CODES = frozenset({"PGRST000", "PGRST001", "PGRST002", "PGRST003"})
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})

DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)

_json = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()


def to_json_row(t: TableSpec, row: Row) -> dict[str, Any]:
    """A local row as the full JSON object PostgREST takes: flags as booleans, JSON text as
    JSON values (the target columns are JSONB), every column present."""
    out: dict[str, Any] = {}
    for c, v in zip(t.columns, row, strict=True):
        if v is not None and c.kind == "bool":
            v = bool(v)
        elif v is not None and c.kind == "json":
            v = _json_decoder.decode(v)
        out[c.target] = v
    return out


def dedupe(t: TableSpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per key, the one with the highest last_seq (PostgreSQL refuses an upsert that
    touches the same row twice: "ON CONFLICT DO UPDATE command cannot affect row a second
    time")."""
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        k = tuple(r[c] for c in t.target_key)
        old = best.get(k)
        if old is None or r["last_seq"] >= old["last_seq"]:
            best[k] = r
    return list(best.values())


def chunks(
    rows: list[dict[str, Any]], max_rows: int, max_bytes: int
) -> Iterator[list[dict[str, Any]]]:
    """Consecutive runs of rows, each at most max_rows rows and about max_bytes of JSON (a
    single row larger than max_bytes goes alone)."""
    out: list[dict[str, Any]] = []
    size = 2  # the brackets
    for r in rows:
        n = len(_json.encode(r)) + 1
        if out and (len(out) >= max_rows or size + n > max_bytes):
            yield out
            out, size = [], 2
        out.append(r)
        size += n
    if out:
        yield out


class SupabaseSink:
    """Writes batches to Supabase through PostgREST. Use `await SupabaseSink.create(...)`."""

    def __init__(
        self,
        client: AsyncClient,
        http: httpx.AsyncClient,
        checkpoints: CheckpointStore,
        *,
        name: str = "supabase",
        tables: tuple[TableSpec, ...] = MIRRORED,
        max_rows_per_request: int = 500,
        max_bytes_per_request: int = 1_000_000,
        max_attempts: int = 6,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 15.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self._client = client
        self._http = http
        self._checkpoints = checkpoints
        self._tables = {t.target: t for t in tables}
        self._max_rows = max_rows_per_request
        self._max_bytes = max_bytes_per_request
        self._max_attempts = max_attempts
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._sleep = sleep
        self._last_status: int | None = None
        self.requests_sent = 0
        self.retries = 0

        # postgrest-py's APIError does not carry the HTTP status; the client is ours, so
        # watch the responses go by.
        async def remember_status(response: httpx.Response) -> None:
            self._last_status = response.status_code

        hooks = dict(http.event_hooks)
        hooks["response"] = [*hooks.get("response", []), remember_status]
        http.event_hooks = hooks

    @classmethod
    async def create(
        cls,
        url: str,
        service_role_key: str,
        checkpoints: CheckpointStore,
        *,
        http: httpx.AsyncClient | None = None,
        **kwargs: Any,
    ) -> SupabaseSink:
        """A sink for the project at `url`. `http` is the httpx client every request goes
        through (default: one with DEFAULT_TIMEOUT); it must have timeouts."""
        if http is None:
            http = httpx.AsyncClient(
                timeout=DEFAULT_TIMEOUT, limits=httpx.Limits(max_connections=4)
            )
        options = AsyncClientOptions(
            httpx_client=http,
            persist_session=False,
            auto_refresh_token=False,
            postgrest_client_retry=False,  # retries are ours, for every method
        )
        client = await acreate_client(url, service_role_key, options)
        return cls(client, http, checkpoints, **kwargs)

    async def checkpoint(self) -> int:
        """The last seq acknowledged by Supabase, as recorded locally (0 if none)."""
        cp = await self._checkpoints.get(self.name)
        return cp.last_seq if cp else 0

    async def apply(self, batch: Batch) -> None:
        """Upsert every row of `batch`, then the target's replication state, then store the
        checkpoint locally."""
        for target, rows in batch.rows.items():
            t = self._tables[target]
            full = dedupe(t, [to_json_row(t, r) for r in rows])
            on_conflict = ",".join(t.target_key)
            for chunk in chunks(full, self._max_rows, self._max_bytes):
                await self._upsert(target, chunk, on_conflict)
        now = dt.datetime.now(dt.UTC).isoformat()
        state = [{"sink": self.name, "last_seq": batch.upto_seq, "updated_at": now}]
        await self._upsert("dcp_replication_state", state, "sink")
        await self._checkpoints.put(self.name, batch.upto_seq)

    async def _upsert(self, table: str, rows: list[dict[str, Any]], on_conflict: str) -> None:
        for attempt in range(1, self._max_attempts + 1):
            self._last_status = None
            self.requests_sent += 1
            try:
                await (
                    self._client.table(table)
                    .upsert(rows, on_conflict=on_conflict, returning=ReturnMethod.minimal)
                    .execute()
                )
                return
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as e:
                reason = f"{type(e).__name__}: {e}"
            except APIError as e:
                if not self._transient(e):
                    raise SinkRejected(
                        f"{table}: HTTP {self._last_status} {e.code}: {e.message}"
                    ) from e
                reason = f"HTTP {self._last_status} {e.code}: {e.message}"
            except httpx.HTTPError as e:  # e.g. a malformed response: nothing to retry
                raise SinkRejected(f"{table}: {type(e).__name__}: {e}") from e
            if attempt == self._max_attempts:
                raise SinkUnavailable(f"{table}: {reason} (after {attempt} attempts)")
            delay = backoff_s(attempt, self._backoff_base_s, self._backoff_max_s)
            self.retries += 1
            log.warning(
                "supabase_retry",
                table=table,
                rows=len(rows),
                attempt=attempt,
                reason=reason,
                delay_s=round(delay, 3),
            )
            await self._sleep(delay)

    def _transient(self, e: APIError) -> bool:
        if self._last_status in TRANSIENT_STATUS:
            return True
        code = e.code or ""
        return code in TRANSIENT_CODES or (
            len(code) == 5 and code[:2] in TRANSIENT_SQLSTATE_CLASSES
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()
