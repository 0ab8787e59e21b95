"""PostgreSQL specifics: schema-enforced append-only log and head, one chain across processes
and backends, group commit, and a tail that misses nothing (docs/postgres.md)."""

import asyncio
import os
import sys
from pathlib import Path

import psycopg
import pytest

from dcp_events import postgres_store, sqlite_store
from dcp_events._append import COLUMNS, Unit, check_unit, now_us
from dcp_events.errors import ConcurrencyError, StaleHeadError, StoreError
from dcp_events.postgres_store import PostgresEventStore
from dcp_events.sqlite_store import SqliteEventStore
from dcp_events.store import AppendRequest, NewEvent

from ._log_check import check_log, read_log
from .conftest import ev


async def test_schema_refuses_update_delete_and_truncate(pg_dsn):
    """Triggers refuse UPDATE, DELETE and TRUNCATE of events, whoever connects."""
    store = await PostgresEventStore.open(pg_dsn)
    await store.append("a", 0, [ev()])
    await store.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for sql in (
            "UPDATE events SET payload = '{}'",
            "DELETE FROM events",
            "TRUNCATE events",
        ):
            with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
                conn.execute(sql)
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)


async def test_head_row_moves_only_to_the_end_of_a_dense_linked_batch(pg_dsn):
    """The head row cannot be rewound, deleted, or moved past events that are not there."""
    store = await PostgresEventStore.open(pg_dsn)
    await store.append("a", 0, [ev(), ev()])
    seq, hash_ = await store.head()
    await store.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RestrictViolation, match="back"):
            conn.execute("UPDATE events_head SET seq = 1")
        with pytest.raises(psycopg.errors.RestrictViolation, match="dense"):
            conn.execute("UPDATE events_head SET seq = 3, hash = %s", (hash_,))
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("DELETE FROM events_head")
        assert conn.execute("SELECT seq, hash FROM events_head").fetchone() == (seq, hash_)


async def test_a_log_made_before_the_new_head_check_gets_it_on_open(pg_dsn, monkeypatch):
    """A ledger whose schema predates 003_events_head_check.sql (its head check scanned the
    whole log) gets the new check when a store opens it: recorded once, the chain goes on, and
    the head is refused the same moves as before."""
    old_files = [f for f in postgres_store.schema_files() if f.name < "003"]
    with monkeypatch.context() as m:  # a store of before: only the files it knew
        m.setattr(postgres_store, "schema_files", lambda: old_files)
        store = await PostgresEventStore.open(pg_dsn)
        await store.append("a", 0, [ev(1), ev(2)])
        await store.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        body = "SELECT prosrc FROM pg_proc WHERE proname = 'events_head_forward'"
        assert "seq > NEW.seq)" in conn.execute(body).fetchone()[0]  # the old check
    store = await PostgresEventStore.open(pg_dsn)
    await store.append("a", 2, [ev(3)])
    seq, hash_ = await store.head()
    await store.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM dcp_schema_files ORDER BY name")]
        assert names == [f.name for f in postgres_store.schema_files()]
        assert "max(seq)" in conn.execute(body).fetchone()[0]
        with pytest.raises(psycopg.errors.RestrictViolation, match="back"):
            conn.execute("UPDATE events_head SET seq = 1")
        with pytest.raises(psycopg.errors.RestrictViolation, match="dense"):
            conn.execute("UPDATE events_head SET seq = 4, hash = %s", (hash_,))
        assert conn.execute("SELECT seq, hash FROM events_head").fetchone() == (seq, hash_)
        assert seq == 3
    assert check_log(read_log(pg_dsn)) == {"a": 3}


async def test_the_head_check_reads_the_log_by_index_only(pg_dsn):
    """Moving the head checks its batch with index probes, never a scan of the whole log (the
    first schema's check planned one, in every batch, growing with the log)."""
    store = await PostgresEventStore.open(pg_dsn)
    for b in range(3):
        await store.append(f"s{b}", 0, [ev(i) for i in range(1000)])
    head_seq, head_hash = await store.head()
    await store.close()
    loop = asyncio.get_running_loop()
    unit = Unit([AppendRequest("t", 0, [ev(1), ev(2)])], None, None, loop, loop.create_future())
    done = check_unit(unit, head_seq, head_hash, now_us(), lambda s: 0, lambda k: None)
    with psycopg.connect(pg_dsn) as conn:  # one transaction, as a store's batch
        conn.execute("SELECT seq FROM events_head WHERE one FOR UPDATE")
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO events ({COLUMNS}) VALUES ({', '.join(['%s'] * 11)})", done.rows
            )
        before = conn.execute(_EVENTS_SCANS).fetchone()
        conn.execute("UPDATE events_head SET seq = %s, hash = %s", (done.head_seq, done.head_hash))
        after = conn.execute(_EVENTS_SCANS).fetchone()
        conn.commit()
    assert after[0] == before[0]  # no sequential scan of events
    assert after[1] > before[1]  # it did look, by index


# This transaction's scans of `events` so far (sequential, by index), flushed or not.
_EVENTS_SCANS = "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'events'"


async def test_same_log_has_the_same_head_hash_on_both_backends(pg_dsn, tmp_path, monkeypatch):
    """The same appends at the same recorded time give the same rows and head on either store."""
    # Both stores take the recorded time from _append.now_us; pin it so the logs can be equal.
    monkeypatch.setattr(sqlite_store, "now_us", lambda: 1_767_225_600_123_456)
    monkeypatch.setattr(postgres_store, "now_us", lambda: 1_767_225_600_123_456)
    lite = await SqliteEventStore.open(tmp_path / "log.db")
    pg = await PostgresEventStore.open(pg_dsn)
    for s in (lite, pg):
        await s.append("renter:1", 0, [ev(1), ev(2, "job.submitted")], idempotency_key="k-1")
        await s.append_atomic(
            [AppendRequest("job:1", 0, [ev(3)]), AppendRequest("renter:1", 2, [ev(4)])]
        )
        await s.append("job:1", 1, [ev(5, "job.ünïcode ✓")])
        # A group this large goes by COPY on PostgreSQL: awkward bytes must survive it too.
        await s.append(
            "odd\tstream\\with\nbreaks",
            0,
            [
                NewEvent(
                    "t.odd", 1, b'{"s":"tab\\t nl\\n bs\\\\ q\\" \xc3\xa9","i":%d}' % i, "a\tb"
                )
                for i in range(postgres_store.COPY_MIN_ROWS + 10)
            ],
            idempotency_key="key\\N",
        )
    lite_events, pg_events = await lite.read_all(0, 10_000), await pg.read_all(0, 10_000)
    assert len(pg_events) == 5 + postgres_store.COPY_MIN_ROWS + 10
    assert pg_events == lite_events
    assert await pg.head() == await lite.head() == (len(pg_events), pg_events[-1].hash)
    await lite.close()
    await pg.close()
    check_log(read_log(pg_dsn))


async def test_a_large_group_copies_the_rows_of_the_units_that_pass(pg_dsn):
    """A group large enough for COPY (sent before its checks) writes exactly the units that
    pass: a version clash fails its caller alone, and a group that writes nothing commits
    nothing."""
    n = postgres_store.COPY_MIN_ROWS
    store = await PostgresEventStore.open(pg_dsn)
    with pytest.raises(ConcurrencyError):
        await store.append("a", 5, [ev(i) for i in range(n)])
    assert await store.head() == (0, "0" * 64)
    ok, clash, dup = await asyncio.gather(
        store.append("a", 0, [ev(i) for i in range(n)], idempotency_key="k"),
        store.append("b", 3, [ev(i) for i in range(n)]),
        store.append("c", 0, [ev(i) for i in range(n)], idempotency_key="k"),
        return_exceptions=True,
    )
    assert isinstance(clash, ConcurrencyError)
    assert (ok.last_seq, dup.duplicate, dup.last_seq) == (n, True, n)
    await store.close()
    assert check_log(read_log(pg_dsn)) == {"a": n}


async def test_a_large_group_that_breaks_in_its_checks_writes_nothing(pg_dsn, monkeypatch):
    """An unexpected fault while a large group is checked (its COPY already begun) fails every
    caller of the group with StoreError, writes none of it, and the next batch goes on."""
    store = await PostgresEventStore.open(pg_dsn)
    await store.append("a", 0, [ev(0)])

    def broken(*args, **kwargs):
        raise RuntimeError("a fault in the checks")

    with monkeypatch.context() as m:
        m.setattr(postgres_store, "check_unit", broken)
        with pytest.raises(StoreError, match="a fault in the checks"):
            await store.append("a", 1, [ev(i) for i in range(postgres_store.COPY_MIN_ROWS)])
    assert (await store.head())[0] == 1
    await store.append("a", 1, [ev(i) for i in range(postgres_store.COPY_MIN_ROWS)])
    await store.close()
    assert check_log(read_log(pg_dsn)) == {"a": 1 + postgres_store.COPY_MIN_ROWS}


async def test_group_commit_shares_transactions(pg_dsn):
    """256 concurrent single-event appends are written in far fewer than 256 transactions."""
    store = await PostgresEventStore.open(pg_dsn)
    await asyncio.gather(*[store.append(f"s{i}", 0, [ev(i)]) for i in range(256)])
    distinct_times = {e.recorded_at_us for e in await store.read_all(0, 1000)}
    # One recorded_at per group: fewer groups than appends means appends shared commits.
    assert len(distinct_times) < 128
    await store.close()


async def test_commits_are_durable_by_setting(pg_dsn):
    """The store's connections commit with synchronous_commit on, whatever the default."""
    store = await PostgresEventStore.open(pg_dsn)
    async with store._pool.connection() as conn:
        cur = await conn.execute("SHOW synchronous_commit")
        assert await cur.fetchone() == ("on",)
    await store.close()


async def test_schema_is_applied_once_and_each_file_is_idempotent(pg_dsn):
    """open records each DDL file once; applying a file again by hand changes nothing."""
    for _ in range(2):
        store = await PostgresEventStore.open(pg_dsn)
        await store.append("a", None, [ev()])
        await store.close()
    names = [f.name for f in postgres_store.schema_files()]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT name FROM dcp_schema_files ORDER BY name").fetchall()
        assert [r[0] for r in rows] == names
        for f in postgres_store.schema_files():
            conn.execute(f.read_text().encode())
        assert conn.execute("SELECT seq FROM events_head").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (2,)


async def test_reopen_continues_the_chain(pg_dsn):
    """Closing and reopening (the schema applied again) keeps sequences and the chain going."""
    store = await PostgresEventStore.open(pg_dsn)
    await store.append("a", 0, [ev()])
    head = await store.head()
    await store.close()
    store = await PostgresEventStore.open(pg_dsn)
    await store.append("a", 1, [ev()])
    (second,) = await store.read_all(1)
    assert second.prev_hash == head[1] and second.seq == 2
    await store.close()


async def test_two_stores_on_one_database_clash_and_share_one_chain(pg_dsn):
    """Two stores (two nodes) on one database: version checks and one chain across both."""
    a, b = await asyncio.gather(PostgresEventStore.open(pg_dsn), PostgresEventStore.open(pg_dsn))
    await a.append("s", 0, [ev(1)], idempotency_key="k")
    again = await b.append("s", 1, [ev(2)], idempotency_key="k")
    assert again.duplicate and again.last_seq == 1
    await b.append("s", 1, [ev(2)])
    with pytest.raises(ConcurrencyError) as info:
        await a.append("s", 1, [ev(3)])
    assert info.value.actual_version == 2
    with pytest.raises(StaleHeadError):
        await a.append_atomic([AppendRequest("t", 0, [ev()])], expected_head=1)
    r = await a.append("s", 2, [ev(3)])
    assert (r.last_seq, r.last_version) == (3, 3)
    await a.close()
    await b.close()
    assert check_log(read_log(pg_dsn)) == {"s": 3}


async def test_a_batch_that_commits_late_is_never_skipped(pg_dsn):
    """A batch still in its transaction holds back every later one: it gets the lower seq, and
    a tail sees it before anything after it."""
    slow, fast = await PostgresEventStore.open(pg_dsn), await PostgresEventStore.open(pg_dsn)
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold_open(conn, recorded):
        entered.set()  # this batch has numbered its events and not committed yet
        await release.wait()

    seen: list[int] = []

    async def consume():
        async for batch in fast.tail(0):
            seen.extend(e.seq for e in batch)
            if len(seen) >= 2:
                return

    reader = asyncio.create_task(consume())
    late = asyncio.create_task(
        slow.append_atomic([AppendRequest("late", 0, [ev(1)])], tx_hook=hold_open)
    )
    await entered.wait()
    early = asyncio.create_task(fast.append("early", 0, [ev(2)]))
    await asyncio.sleep(0.3)  # give the second writer every chance to overtake; it must wait
    assert not early.done() and not seen
    release.set()
    (late_result,), early_result = await late, await early
    await asyncio.wait_for(reader, 30)
    assert late_result.last_seq == 1 and early_result.first_seq == 2
    assert seen == [1, 2]
    await slow.close()
    await fast.close()


async def test_tail_reconnects_and_catches_up(pg_dsn):
    """A tail whose connection is cut reconnects and reads everything committed meanwhile."""
    store = await PostgresEventStore.open(pg_dsn)
    await store.append("a", 0, [ev(1)])
    seen: list[int] = []
    first = asyncio.Event()

    async def consume():
        async for batch in store.tail(0, poll_s=60):
            seen.extend(e.seq for e in batch)
            first.set()
            if len(seen) >= 4:
                return

    reader = asyncio.create_task(consume())
    await first.wait()
    (listener,) = store._listeners
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (listener.info.backend_pid,))
    for i in range(3):
        await store.append("a", i + 1, [ev(i)])
    # poll_s=60: what wakes it is the reconnect's catch-up and the NOTIFYs, not the poll.
    await asyncio.wait_for(reader, 30)
    assert seen == [1, 2, 3, 4]
    await store.close()


async def test_tail_polls_when_notifications_are_lost(pg_dsn, monkeypatch):
    """With every NOTIFY lost, the tail still sees each batch: by its polling fallback."""
    monkeypatch.setattr(postgres_store, "_NOTIFY", "SELECT %s")  # batches commit silently
    store = await PostgresEventStore.open(pg_dsn)
    await store.append("a", 0, [ev(0)])
    seen: list[int] = []
    caught_up = asyncio.Event()

    async def consume():
        async for batch in store.tail(0, poll_s=0.1):
            seen.extend(e.seq for e in batch)
            caught_up.set()
            if len(seen) >= 3:
                return

    reader = asyncio.create_task(consume())
    await caught_up.wait()  # the first event came by the catch-up read; the rest cannot
    await asyncio.sleep(0.3)  # let it read again, find nothing, and wait for a wake-up
    for i in range(1, 3):
        await store.append("a", i, [ev(i)])
    await asyncio.wait_for(reader, 30)
    assert seen == [1, 2, 3]
    await store.close()


async def test_tail_misses_nothing_while_processes_write_concurrently(pg_dsn):
    """Four writer processes of eight tasks each, plus this one, append concurrently; a tail in
    this process sees every event exactly once, in the final log's order."""
    store = await PostgresEventStore.open(pg_dsn)
    seen = []
    done_writing = asyncio.Event()

    async def consume():
        async for batch in store.tail(0, batch_size=97):
            seen.extend(batch)
            if done_writing.is_set() and seen[-1].seq == (await store.head())[0]:
                return

    reader = asyncio.create_task(consume())
    writer = Path(__file__).with_name("_tail_writer.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(writer), pg_dsn, str(w), "30", "8", env=env
        )
        for w in range(4)
    ]
    for i in range(60):
        await store.append("local", i, [ev(i)])
    codes = await asyncio.gather(*[p.wait() for p in procs])
    assert codes == [0, 0, 0, 0]
    done_writing.set()
    await store.append("local", 60, [ev(60)])  # one more wake-up after the last writer
    await asyncio.wait_for(reader, 60)
    final = list(read_log(pg_dsn))
    check_log(final)
    assert len(final) > 4 * 8 * 30 + 61  # every writer appended 1 to 3 events per append
    assert [e.seq for e in seen] == list(range(1, len(final) + 1))
    assert seen == final
    await store.close()


async def test_open_names_an_unreachable_log_with_a_store_error(pg_dsn):
    """A database that does not exist is a StoreError at open, without the password."""
    missing = pg_dsn.rsplit("/", 1)[0] + "/dcp_st_does_not_exist"
    with pytest.raises(StoreError, match="does not exist") as info:
        await PostgresEventStore.open(missing)
    assert "password" not in str(info.value) and ":dcp_test@" not in str(info.value)


async def test_connections_cut_under_the_store_fail_cleanly_and_reconnect(pg_dsn):
    """Every server session of the store killed: an append fails with StoreError or lands;
    retried with its idempotency key it lands exactly once, and the store goes on."""
    store = await PostgresEventStore.open(pg_dsn)
    await store.append("a", 0, [ev(1)])
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    failures = 0
    for _attempt in range(5):
        try:
            result = await store.append("a", 1, [ev(2), ev(3)], idempotency_key="retry-me")
            break
        except StoreError:
            failures += 1
    else:
        pytest.fail("the store did not reconnect")
    assert failures <= 1  # the dead pooled connection fails one batch, then it is replaced
    assert (result.first_seq, result.last_seq) == (2, 3)
    await store.append("a", 3, [ev(4)])
    await store.close()
    assert check_log(read_log(pg_dsn)) == {"a": 4}


async def test_a_row_inserted_behind_the_stores_back_stops_appends_not_the_chain(pg_dsn):
    """An event inserted without the head lock (no store does this) makes the next batch fail
    with StoreError: the log refuses to fork rather than number around it."""
    store = await PostgresEventStore.open(pg_dsn)
    await store.append("a", 0, [ev(1)])
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO events (seq, stream_id, stream_version, type, schema_version, payload,"
            " recorded_at_us, prev_hash, hash) VALUES (2, 'rogue', 1, 't', 1, '{}', 0, 'x', 'y')"
        )
    with pytest.raises(StoreError):
        await store.append("a", 1, [ev(2)])
    assert await store.head() == (1, (await store.read_all(0, 1))[0].hash)
    await store.close()


async def test_close_ends_a_waiting_tail(pg_dsn):
    """A tail waiting for a wake-up ends when its store closes, without an error."""
    store = await PostgresEventStore.open(pg_dsn)
    await store.append("a", 0, [ev()])
    seen: list[int] = []
    caught_up = asyncio.Event()

    async def consume():
        async for batch in store.tail(0, poll_s=60):
            seen.extend(e.seq for e in batch)
            caught_up.set()

    reader = asyncio.create_task(consume())
    await caught_up.wait()
    await asyncio.sleep(0.2)  # let it settle into waiting for a notification
    await store.close()
    await asyncio.wait_for(reader, 30)  # it returns; an error would be raised here
    assert seen == [1]
