"""The one fold-the-log loop (dcp_app.foldlog): the same state from the file and from the store
interface (SQLite and PostgreSQL), old schema versions upcast, and every fault named by its seq."""

import os
import uuid

import psycopg
import pytest

from dcp_app import foldlog, snapshots
from dcp_events.codec import default_codec
from dcp_events.postgres_store import PostgresEventStore
from dcp_events.sqlite_store import open_connection
from dcp_events.store import NewEvent
from dcp_projections.state import State
from tests.pg import drop_database


async def _ledger(env) -> None:
    """A small ledger with money moved every way a job moves it."""
    rid = await env.renter(credit=500_000)
    pid = await env.provider()
    done = await env.submit(rid)
    await env.submit(rid)  # stays queued behind the first on the one GPU
    (lease,) = await env.svc.claim_jobs(pid)
    assert lease.job_id == done.job_id
    await env.svc.report_result(
        pid, lease.job_id, lease.attempt, "completed", exit_code=0, runtime_seconds=600
    )


def _file_rows(path) -> list[tuple]:
    conn = open_connection(path)
    try:
        return [r for b in foldlog.sqlite_batches(conn, batch_size=3) for r in b]
    finally:
        conn.close()


def _body(state: State) -> bytes:
    return snapshots.encode_body(state, {})


async def test_the_file_and_the_store_fold_to_the_service_state(env):
    """Through the store interface on either backend; from the file too where it is one."""
    await _ledger(env)
    from_store = State()
    versions: dict[str, int] = {}
    async for rows in foldlog.store_batches(env.store, batch_size=4, versions=versions):
        foldlog.fold_rows(from_store, rows, default_codec())
    assert from_store.seq == env.svc.state.seq >= 10
    assert _body(from_store) == _body(env.svc.state)
    assert versions == env.svc._versions
    if env.backend != "sqlite":
        return
    conn = open_connection(env.path)
    try:
        from_file = foldlog.fold_batches(State(), foldlog.sqlite_batches(conn, batch_size=3))
    finally:
        conn.close()
    assert from_file is not None
    assert _body(from_file) == _body(env.svc.state)


async def test_the_same_fold_over_a_postgresql_log(sqlite_env, pg_server_dsn):
    """The loop goes through the store interface only, so a PostgreSQL log folds the same."""
    env = sqlite_env
    await _ledger(env)
    name = f"dcp_fl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = pg_server_dsn.rsplit("/", 1)[0] + f"/{name}"
    try:
        pg = await PostgresEventStore.open(dsn)
        try:
            for rec in await env.store.read_all(0, 10_000):  # the same events, in order
                new = NewEvent(rec.type, rec.schema_version, rec.payload, rec.actor)
                await pg.append(rec.stream_id, rec.stream_version - 1, [new])
            state = State()
            async for rows in foldlog.store_batches(pg, batch_size=5):
                foldlog.fold_rows(state, rows, default_codec())
        finally:
            await pg.close()
    finally:
        drop_database(pg_server_dsn, name)
    assert state.seq == env.svc.state.seq
    assert _body(state) == _body(env.svc.state)


async def test_an_old_schema_version_is_upcast_off_the_fast_path(sqlite_env):
    env = sqlite_env
    await _ledger(env)
    rows = _file_rows(env.path)
    claimed = [i for i, r in enumerate(rows) if r[1] == "job.claimed"]
    assert claimed and default_codec().types["job.claimed"].schema_version == 2
    old = [(*r[:2], 1, *r[3:]) if i in claimed else r for i, r in enumerate(rows)]
    a, b = State(), State()
    foldlog.fold_rows(a, rows, default_codec())
    foldlog.fold_rows(b, old, default_codec())
    assert _body(a) == _body(b) == _body(env.svc.state)


async def test_faults_name_the_event(sqlite_env):
    env = sqlite_env
    await _ledger(env)
    rows = _file_rows(env.path)
    codec = default_codec()
    # The log opens with its genesis prices (all one type): take a payload of another type.
    other = next(r for r in rows if r[1] != rows[2][1])
    cases = {
        "garbage": ((*rows[2][:3], b"{not json", rows[2][4]), "decode"),
        "another type's payload": ((*rows[2][:3], other[3], rows[2][4]), "decode"),
        "unknown type": ((rows[2][0], "job.teleported", 1, rows[2][3], rows[2][4]), "decode"),
    }
    for label, (bad, check) in cases.items():
        state = State()
        with pytest.raises(foldlog.FoldFault) as caught:
            foldlog.fold_rows(state, [*rows[:2], bad, *rows[3:]], codec)
        assert (caught.value.seq, caught.value.check) == (rows[2][0], check), label
        assert state.seq == rows[1][0], label  # the events before it are folded
    state = State()
    with pytest.raises(foldlog.FoldFault) as caught:  # an event folded twice
        foldlog.fold_rows(state, [*rows[:3], rows[2]], codec)
    assert (caught.value.seq, caught.value.check) == (rows[2][0], "invariant")
    assert type(caught.value.error).__name__ == "InvariantError"


async def test_on_money_sees_exactly_the_money_events(sqlite_env):
    env = sqlite_env
    await _ledger(env)
    rows = _file_rows(env.path)
    seen: list[int] = []
    foldlog.fold_rows(State(), rows, default_codec(), lambda seq, e, at: seen.append(seq))
    codec = default_codec()
    money = [r[0] for r in rows if getattr(codec.decode_payload(*r[1:4]), "postings", None)]
    assert seen == money and len(money) >= 3


async def test_a_reader_process_hands_over_the_same_batches(sqlite_env, tmp_path):
    """piped_batches: the rows `sqlite_batches` reads, in the same batches, read by a second
    process; where that process cannot read the file the rest is read here, the same."""
    env = sqlite_env
    await _ledger(env)
    conn = open_connection(env.path)
    try:
        head = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
        here = list(foldlog.sqlite_batches(conn, head - 2, 1, batch_size=3))
        assert len(here) >= 3
        assert list(foldlog.piped_batches(conn, str(env.path), head - 2, 1, 3)) == here
        gone = str(tmp_path / "no-such.db")  # the reader fails at once: all read here
        assert list(foldlog.piped_batches(conn, gone, head - 2, 1, 3)) == here
        # A fold that stops after the first batch ends the reader.
        batches = foldlog.piped_batches(conn, str(env.path), head, 0, 3)
        assert next(batches) == next(foldlog.sqlite_batches(conn, head, 0, 3))
        batches.close()
    finally:
        conn.close()


async def test_a_fold_of_the_log_keeps_no_write_back_notes(sqlite_env):
    """fold_rows takes no `touched` notes (nobody writes rows from them) and leaves the set
    empty, as the fold left it before; a fold through `apply` itself still takes them."""
    env = sqlite_env
    await _ledger(env)
    rows = _file_rows(env.path)
    state = State()
    state.touched.add(("job", "before"))
    foldlog.fold_rows(state, rows, default_codec())
    assert state.touched == set() and type(state.touched) is set
    assert _body(state) == _body(env.svc.state)
    from dcp_projections.fold import apply

    tracked = State()
    codec = default_codec()
    for seq, type_, version, payload, _at in rows:
        apply(tracked, seq, codec.decode_payload(type_, version, payload))
    assert ("job", next(iter(tracked.jobs))) in tracked.touched


_ROWS = [(seq, "job.claimed", 1, b'{"n":%d}' % seq, 1_000 + seq) for seq in range(1, 8)]


def _made_here(after_seq: int):
    """The in-process stand-in for a helper: the rows after `after_seq`, in twos."""
    rest = [r for r in _ROWS if r[0] > after_seq]
    for i in range(0, len(rest), 2):
        yield rest[i : i + 2]
    return ("here", after_seq)


def _helper(dies_after: int | None):
    """A helper's batches (threes); it dies (no clean-up, no answer) after `dies_after`."""
    for i in range(0, len(_ROWS), 3):
        if dies_after is not None and i >= dies_after:
            os._exit(3)
        yield _ROWS[i : i + 3]
    return ("helper", len(_ROWS))


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_handed_over_batches_and_what_the_helper_returned(monkeypatch, start):
    """handed_over: the helper's batches as it made them, then what it returned, whichever
    way the helper is started."""
    import multiprocessing

    monkeypatch.setattr(foldlog, "process_context", lambda: multiprocessing.get_context(start))
    result: list = []
    batches = list(foldlog.handed_over(_helper, (None,), _made_here, result))
    assert batches == [_ROWS[0:3], _ROWS[3:6], _ROWS[6:7]]
    assert result == [("helper", 7)]


def test_a_helper_that_dies_midway_is_taken_over_here():
    """A helper that dies after two batches: the rest is made here from the last seq handed
    over, and what is made here is the result."""
    result: list = []
    batches = list(foldlog.handed_over(_helper, (6,), _made_here, result))
    assert batches == [_ROWS[0:3], _ROWS[3:6], _ROWS[6:7]]
    assert result == [("here", 6)]
