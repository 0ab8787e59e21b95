"""Fixtures for the event store: every implementation of the interface, on real storage.

SQLite runs on a file under tmp_path; PostgreSQL in a fresh database of its own per test on the
server named by DCP_TEST_PG_DSN (scripts/ci/postgres.sh). When no server answers, PostgreSQL
tests skip with the reason, unless DCP_REQUIRE_POSTGRES is set (CI), where they fail instead.
"""

from __future__ import annotations

import inspect
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest

from dcp_events.postgres_store import PostgresEventStore
from dcp_events.sqlite_store import SqliteEventStore
from dcp_events.store import EventStore, NewEvent, RecordedEvent
from tests.pg import create_database, drop_database


@pytest.fixture
def pg_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A fresh, empty database of its own for one test; dropped afterwards."""
    name, url = create_database(pg_server_dsn, "dcp_st")
    yield url
    drop_database(pg_server_dsn, name)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[EventStore]:
    """A fresh, empty store of each implementation."""
    s: SqliteEventStore | PostgresEventStore
    if request.param == "sqlite":
        s = await SqliteEventStore.open(tmp_path / "log.db")
    else:
        s = await PostgresEventStore.open(request.getfixturevalue("pg_dsn"))
    yield s
    await s.close()


class HookProbe:
    """A one-row table a test's tx_hook writes, in the store's own database, and its reader.

    The hook's form is the backend's: SQLite calls it with a sqlite3 connection in its writer
    thread; PostgreSQL awaits it with the psycopg AsyncConnection of the batch's transaction.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.sqlite = isinstance(store, SqliteEventStore)
        if not self.sqlite:
            with psycopg.connect(store.dsn, autocommit=True) as conn:
                conn.execute("CREATE TABLE hook_probe (name text PRIMARY KEY, last_seq bigint)")

    def hook(
        self, value: Callable[[Sequence[RecordedEvent]], int], fail: bool = False
    ) -> Callable[[Any, Sequence[RecordedEvent]], Any]:
        """A hook that stores value(events), then raises RuntimeError if `fail`."""
        if self.sqlite:

            def sync_hook(conn: sqlite3.Connection, recorded: Sequence[RecordedEvent]) -> None:
                conn.execute(
                    "INSERT OR REPLACE INTO projection_state VALUES ('t', ?)", (value(recorded),)
                )
                if fail:
                    raise RuntimeError("projection bug")

            return sync_hook

        async def async_hook(conn: Any, recorded: Sequence[RecordedEvent]) -> None:
            await conn.execute(
                "INSERT INTO hook_probe VALUES ('t', %s)"
                " ON CONFLICT (name) DO UPDATE SET last_seq = excluded.last_seq",
                (value(recorded),),
            )
            if fail:
                raise RuntimeError("projection bug")

        assert inspect.iscoroutinefunction(async_hook)
        return async_hook

    def read(self) -> int | None:
        """The value the last committed hook stored, None if none did."""
        if self.sqlite:
            conn = sqlite3.connect(self.store.path)
            try:
                row = conn.execute("SELECT last_seq FROM projection_state").fetchone()
            finally:
                conn.close()
        else:
            with psycopg.connect(self.store.dsn) as pconn:
                row = pconn.execute("SELECT last_seq FROM hook_probe").fetchone()
        return None if row is None else int(row[0])


@pytest.fixture
def hook_probe(store: Any) -> HookProbe:
    """A place for tx_hook writes in the store's database, for either backend."""
    return HookProbe(store)


def ev(n: int = 0, type_: str = "test.happened") -> NewEvent:
    """A small event with a ~200 byte payload."""
    body = b'{"type":"%b","n":%d,"pad":"%b"}' % (type_.encode(), n, b"x" * 160)
    return NewEvent(type=type_, schema_version=1, payload=body, actor="tester")
