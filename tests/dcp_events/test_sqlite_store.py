"""SQLite specifics: append-only triggers, durability settings, group commit, two writers."""

import asyncio
import sqlite3

import pytest

from dcp_events.errors import ConcurrencyError
from dcp_events.sqlite_store import SqliteEventStore

from .conftest import ev


async def test_schema_refuses_update_and_delete(tmp_path):
    """The events table's triggers refuse UPDATE and DELETE, whoever connects."""
    store = await SqliteEventStore.open(tmp_path / "log.db")
    await store.append("a", 0, [ev()])
    await store.close()
    conn = sqlite3.connect(tmp_path / "log.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE events SET payload = '{}'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM events")
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)


async def test_wal_and_full_sync(tmp_path):
    """The log runs in WAL mode with synchronous=FULL (2)."""
    store = await SqliteEventStore.open(tmp_path / "log.db")
    assert store._writer.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert store._writer.execute("PRAGMA synchronous").fetchone() == (2,)
    await store.close()


async def test_group_commit_shares_transactions(tmp_path):
    """256 concurrent single-event appends are written in far fewer than 256 transactions."""
    store = await SqliteEventStore.open(tmp_path / "log.db")
    await asyncio.gather(*[store.append(f"s{i}", 0, [ev(i)]) for i in range(256)])
    distinct_times = {e.recorded_at_us for e in await store.read_all(0, 1000)}
    # One recorded_at per group: fewer groups than appends means appends shared commits.
    assert len(distinct_times) < 128
    await store.close()


async def test_reopen_continues_the_chain(tmp_path):
    """Closing and reopening keeps sequences and the chain going."""
    store = await SqliteEventStore.open(tmp_path / "log.db")
    await store.append("a", 0, [ev()])
    head = await store.head()
    await store.close()
    store = await SqliteEventStore.open(tmp_path / "log.db")
    await store.append("a", 1, [ev()])
    (second,) = await store.read_all(1)
    assert second.prev_hash == head[1] and second.seq == 2
    await store.close()


async def test_two_writers_on_one_file_still_clash(tmp_path):
    """A second writer (as another process would) invalidates the first's cached versions."""
    a = await SqliteEventStore.open(tmp_path / "log.db")
    b = await SqliteEventStore.open(tmp_path / "log.db")
    await a.append("s", 0, [ev(1)])
    await b.append("s", 1, [ev(2)])
    with pytest.raises(ConcurrencyError) as info:
        await a.append("s", 1, [ev(3)])
    assert info.value.actual_version == 2
    r = await a.append("s", 2, [ev(3)])
    assert (r.last_seq, r.last_version) == (3, 3)
    (third,) = await b.read_all(2)
    assert third.prev_hash == (await b.read_all(1, 1))[0].hash  # one chain across both
    await a.close()
    await b.close()
