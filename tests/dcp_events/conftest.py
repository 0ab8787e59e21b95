"""Fixtures for the event store: every implementation of the interface, on a real file."""

from collections.abc import AsyncIterator

import pytest

from dcp_events.sqlite_store import SqliteEventStore
from dcp_events.store import EventStore, NewEvent


@pytest.fixture(params=["sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[EventStore]:
    """A fresh, empty store of each implementation (SQLite on a file under tmp_path)."""
    s = await SqliteEventStore.open(tmp_path / "log.db")
    yield s
    await s.close()


def ev(n: int = 0, type_: str = "test.happened") -> NewEvent:
    """A small event with a ~200 byte payload."""
    body = b'{"type":"%b","n":%d,"pad":"%b"}' % (type_.encode(), n, b"x" * 160)
    return NewEvent(type=type_, schema_version=1, payload=body, actor="tester")
