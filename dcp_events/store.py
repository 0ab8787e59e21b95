"""The event store interface and the records it deals in.

The store is generic over payload bytes: it knows streams, versions, idempotency and the hash
chain, nothing about the domain. SQLite (`dcp_events.sqlite_store`) is the embedded default;
PostgreSQL (`dcp_events.postgres_store`) implements the same interface for several processes on
one log, so nothing above the store may depend on SQLite specifics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import msgspec


class NewEvent(msgspec.Struct, frozen=True):
    """An event about to be appended: its type, schema version and JSON payload."""

    type: str
    schema_version: int
    payload: bytes
    actor: str = ""


class RecordedEvent(msgspec.Struct, frozen=True):
    """An event as stored in the log, with its place in the hash chain."""

    seq: int
    stream_id: str
    stream_version: int
    type: str
    schema_version: int
    payload: bytes
    recorded_at_us: int
    actor: str
    idempotency_key: str | None
    prev_hash: str
    hash: str


class AppendRequest(msgspec.Struct, frozen=True):
    """One stream's share of an append: expected version None means "any"."""

    stream_id: str
    expected_version: int | None
    events: Sequence[NewEvent]
    idempotency_key: str | None = None


class AppendResult(msgspec.Struct, frozen=True):
    """Where an append landed. `duplicate` is True when its idempotency key was seen before."""

    stream_id: str
    first_seq: int
    last_seq: int
    last_version: int
    duplicate: bool = False


# Runs inside the append's transaction, in the writer, after the events are inserted: read
# models written here commit (or roll back) together with the events. `conn` is the
# implementation's connection: sqlite3.Connection for the SQLite store; for PostgreSQL the
# psycopg AsyncConnection, and the hook may be async (dcp_events.postgres_store.PgTxHook).
TxHook = Callable[[Any, Sequence[RecordedEvent]], None]


class GroupCommit(msgspec.Struct, frozen=True):
    """What one group commit did, for an observer (metrics): how many appends and events it
    wrote, how long the whole transaction took and how long its COMMIT (the fsync) took."""

    appends: int
    events: int
    write_s: float
    commit_s: float
    failed: bool = False


# Called by a store after every group commit, from the thread that wrote it; it must be quick
# and thread-safe, and whatever it raises is ignored (an observer never fails an append).
CommitObserver = Callable[[GroupCommit], None]


class AppendsOne:
    """`append` for a store whose `append_atomic` does the work: one request, one result
    (both stores inherit it, so a single append means the same on each backend)."""

    async def append_atomic(
        self,
        requests: Sequence[AppendRequest],
        *,
        expected_head: int | None = None,
        tx_hook: Any = None,
    ) -> list[AppendResult]:
        raise NotImplementedError

    async def append(
        self,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Append `events` to `stream_id` durably.

        Raises ConcurrencyError when the stream's last version is not `expected_version`
        (0 for a stream that must be new; None skips the check). A reused `idempotency_key`
        returns the first append's result with `duplicate=True` and writes nothing.
        """
        request = AppendRequest(stream_id, expected_version, events, idempotency_key)
        (result,) = await self.append_atomic([request])
        return result


class EventStore(Protocol):
    """What every event store implementation offers (see tests/dcp_events/test_store_contract)."""

    async def append(
        self,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Append durably; ConcurrencyError on a version clash; a reused key writes nothing."""
        ...

    async def append_atomic(
        self,
        requests: Sequence[AppendRequest],
        *,
        expected_head: int | None = None,
        tx_hook: TxHook | None = None,
    ) -> list[AppendResult]:
        """Append several streams all-or-nothing; StaleHeadError if the head moved."""
        ...

    async def read_all(self, after_seq: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to `limit` events with seq > after_seq, in order."""
        ...

    async def read_stream(
        self, stream_id: str, from_version: int = 1, limit: int = 1000
    ) -> list[RecordedEvent]:
        """Up to `limit` events of one stream from `from_version`, in order."""
        ...

    async def head(self) -> tuple[int, str]:
        """The last sequence and hash (0 and the genesis hash for an empty log)."""
        ...

    def tail(self, after_seq: int = 0, batch_size: int = 500) -> AsyncIterator[list[RecordedEvent]]:
        """Batches of events as they commit, forever; each batch at most `batch_size`."""
        ...

    async def close(self) -> None:
        """Finish pending appends and release every connection."""
        ...
