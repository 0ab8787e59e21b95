"""The PostgreSQL sink against a real server (scripts/ci/postgres.sh): migrations, row-by-row
equality on a 50,000-event log, exactly-once under SIGKILL, forward-only rows, and catching up
after the server restarts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import structlog

from dcp_replicator.cli import main as cli_main
from dcp_replicator.errors import CheckpointConflict, SinkRejected
from dcp_replicator.postgres_sink import PostgresSink
from dcp_replicator.replicator import Replicator, Settings
from dcp_replicator.source import Batch, SqliteSource
from dcp_replicator.tables import MIRRORED

from .conftest import assert_mirrored, head_seq
from .ledger import SIMULATE, Ledger
from .throwaway_pg import ThrowawayCluster, find_bindir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def big_db(tmp_path_factory) -> Path:
    """A log of at least 50,000 events with its read models, written by scripts/simulate.py
    (the real service; ~0.88 events per command since jobs for any GPU wait for a GPU their
    price covers). Shared by the tests of this module, which only read it."""
    path = tmp_path_factory.mktemp("big") / "dcp.db"
    cmd = [sys.executable, str(SIMULATE), "--db", str(path), "--seed", "11"]
    subprocess.run([*cmd, "--commands", "60000"], cwd=ROOT, check=True, timeout=600,
                   capture_output=True)  # fmt: skip
    assert head_seq(path) >= 50_000
    return path


async def replicate(db: Path, dsn: str, **settings) -> int:
    source = await SqliteSource.open(db)
    sink = await PostgresSink.connect(dsn)
    try:
        result = await Replicator(source, sink, Settings(**settings)).run(once=True)
    finally:
        await sink.close()
        await source.close()
    return result.checkpoint_seq


def target_checkpoint(dsn: str, sink: str = "postgres") -> int:
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        row = conn.execute(
            "SELECT last_seq FROM dcp_replication_state WHERE sink = %s", (sink,)
        ).fetchone()
    return row[0] if row else 0


async def test_migrations_idempotent_with_rls_and_no_keys(pg_dsn):
    """The target schema applies twice; every table has RLS; no key or hash column exists."""
    for _ in range(2):
        sink = await PostgresSink.connect(pg_dsn)
        await sink.close()
    with psycopg.connect(pg_dsn) as conn:
        tables = conn.execute(
            "SELECT relname, relrowsecurity FROM pg_class"
            " WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY relname"
        ).fetchall()
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public'"
        ).fetchall()
    names = {t for t, _ in tables}
    assert {t.target for t in MIRRORED} | {"dcp_replication_state"} == names
    assert all(rls for _, rls in tables), tables
    assert not [c for c in columns if "key" in c[1] or "hash" in c[1]]
    assert {"last_seq"} <= {c for t, c in columns if t == "dcp_postings"}


async def test_50k_events_mirrored_row_by_row(big_db, pg_dsn):
    """A 50,000-event log replicates; every mirrored table equals the local one row by row."""
    head = head_seq(big_db)
    assert await replicate(big_db, pg_dsn, batch_rows=5000) == head >= 50_000
    counts = assert_mirrored(big_db, pg_dsn)
    assert counts["dcp_postings"] > 50_000 and counts["dcp_jobs"] > 5_000
    with psycopg.connect(pg_dsn) as conn:
        total = conn.execute("SELECT sum(balance_halala) FROM dcp_accounts").fetchone()[0]
    assert total == 0
    # Running again finds nothing to do and changes nothing.
    assert await replicate(big_db, pg_dsn) == head
    assert_mirrored(big_db, pg_dsn)


async def test_sigkill_mid_stream_then_restart(big_db, pg_dsn, tmp_path):
    """SIGKILL leaves the target exactly at its checkpoint; a restart completes it with no
    posting duplicated."""
    cmd = [
        sys.executable,
        "-m",
        "dcp_replicator",
        "--db",
        str(big_db),
        "--dsn",
        pg_dsn,
        "--batch-rows",
        "150",
        "--log-level",
        "warning",
    ]
    log = (tmp_path / "replicator.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        cp = 0
        while time.monotonic() < deadline:
            try:
                cp = target_checkpoint(pg_dsn)
            except psycopg.Error:  # schema not created yet
                cp = 0
            if cp >= 5_000:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "replicator.log").read_text()
    cp = target_checkpoint(pg_dsn)
    head = head_seq(big_db)
    assert 0 < cp < head, "killed mid-stream"
    # Exactly the postings up to the checkpoint are there: batch and checkpoint are atomic.
    with psycopg.connect(pg_dsn) as conn:
        below, above = conn.execute(
            "SELECT count(*) FILTER (WHERE seq <= %s), count(*) FILTER (WHERE seq > %s)"
            " FROM dcp_postings",
            (cp, cp),
        ).fetchone()
    lite = sqlite3.connect(big_db)
    (expected,) = lite.execute("SELECT count(*) FROM postings WHERE seq <= ?", (cp,)).fetchone()
    lite.close()
    assert (below, above) == (expected, 0)

    restart = [*cmd[:-4], "--batch-rows", "5000", "--once"]  # the rest in bigger batches
    rc = subprocess.run(restart, cwd=ROOT, capture_output=True, timeout=120).returncode
    assert rc == 0
    assert target_checkpoint(pg_dsn) == head
    assert_mirrored(big_db, pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        dup = conn.execute("SELECT count(*) - count(DISTINCT (seq, idx)) FROM dcp_postings")
        assert dup.fetchone()[0] == 0


async def test_rows_only_move_forward(ledger_db, pg_dsn):
    """A stale version of a row, from any writer, never replaces a newer one."""
    await replicate(ledger_db, pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        account, balance, seq = conn.execute(
            "SELECT account_id, balance_halala, last_seq FROM dcp_accounts"
            " ORDER BY last_seq DESC LIMIT 1"
        ).fetchone()
    stale = Batch(
        after_seq=0, upto_seq=1, head_seq=1, rows={"dcp_accounts": [(account, -999, seq - 1)]}
    )
    other = await PostgresSink.connect(pg_dsn, name="other")
    await other.apply(stale)
    await other.close()
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(
            "SELECT balance_halala, last_seq FROM dcp_accounts WHERE account_id = %s", (account,)
        ).fetchone()
        conn.execute(
            "UPDATE dcp_accounts SET balance_halala = 1, last_seq = %s WHERE account_id = %s",
            (seq, account),
        )
        after_update = conn.execute(
            "SELECT balance_halala FROM dcp_accounts WHERE account_id = %s", (account,)
        ).fetchone()
    assert row == (balance, seq)
    assert after_update == (balance,), "the trigger refuses a non-forward UPDATE too"


async def test_replayed_batch_is_refused_whole(ledger_db, pg_dsn):
    """A batch whose start is not the sink's checkpoint (a replay, or a second replicator)
    changes nothing."""
    source = await SqliteSource.open(ledger_db)
    batch = await source.read_batch(0, 500)
    await source.close()
    sink = await PostgresSink.connect(pg_dsn)
    await sink.apply(batch)
    with pytest.raises(CheckpointConflict):
        await sink.apply(batch)
    assert await sink.checkpoint() == batch.upto_seq
    await sink.close()


async def test_failed_batch_leaves_no_trace(pg_dsn):
    """When any row of a batch is refused, no row of it and no checkpoint move is kept."""
    sink = await PostgresSink.connect(pg_dsn)
    good = Batch(
        after_seq=0,
        upto_seq=5,
        head_seq=9,
        rows={
            "dcp_accounts": [("platform:revenue", 10, 5)],
            "dcp_renters": [("r-1", None, "r@example.sa", 1, 5)],  # name may not be NULL
        },
    )
    with pytest.raises(SinkRejected):
        await sink.apply(good)
    assert await sink.checkpoint() == 0
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM dcp_accounts").fetchone() == (0,)
    await sink.close()


async def test_keeps_up_with_a_live_writer(ledger_db, pg_dsn):
    """While the ledger appends, the continuous replicator follows; at the end target equals
    source."""
    before = head_seq(ledger_db)
    ledger = await Ledger.open(ledger_db, seed=99)
    source = await SqliteSource.open(ledger_db)
    sink = await PostgresSink.connect(pg_dsn)
    stop = asyncio.Event()
    task = asyncio.create_task(
        Replicator(source, sink, Settings(batch_rows=300, poll_interval_s=0.02)).run(stop=stop)
    )
    for _ in range(20):
        await ledger.grow(100, round_size=10)
        await asyncio.sleep(0.01)
    await ledger.close()
    head = head_seq(ledger_db)
    for _ in range(500):
        if target_checkpoint(pg_dsn) == head:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await task
    await sink.close()
    await source.close()
    assert target_checkpoint(pg_dsn) == head >= before + 2000
    assert_mirrored(ledger_db, pg_dsn)


@pytest.fixture
def cluster():
    """A throwaway PostgreSQL this test may stop and start."""
    bindir = find_bindir()
    if bindir is None:
        reason = "no initdb/pg_ctl found for a throwaway PostgreSQL cluster"
        if os.environ.get("DCP_REQUIRE_POSTGRES"):
            pytest.fail(reason)
        pytest.skip(reason)
    c = ThrowawayCluster(bindir)
    c.start()
    yield c
    c.destroy()


async def test_catches_up_after_postgres_restart(ledger_db, cluster):
    """PostgreSQL stops mid-stream while the log keeps growing; the replicator backs off, and
    once the server is back it catches up to equality."""
    before = head_seq(ledger_db)
    ledger = await Ledger.open(ledger_db, seed=5)
    source = await SqliteSource.open(ledger_db)
    sink = await PostgresSink.connect(cluster.dsn, connect_timeout_s=2)
    stop = asyncio.Event()
    settings = Settings(batch_rows=100, poll_interval_s=0.02, backoff_base_s=0.1, backoff_max_s=0.5)
    task = asyncio.create_task(Replicator(source, sink, settings).run(stop=stop))
    deadline = time.monotonic() + 60
    while target_checkpoint(cluster.dsn) == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert not task.done(), task
    await asyncio.to_thread(cluster.stop, "fast")
    await ledger.grow(1000, round_size=20)  # the log grows meanwhile
    await asyncio.sleep(1.0)
    assert not task.done()
    await asyncio.to_thread(cluster.start)
    await ledger.grow(500, round_size=20)
    await ledger.close()
    head = head_seq(ledger_db)
    deadline = time.monotonic() + 60
    while target_checkpoint(cluster.dsn) != head and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    result = await task
    await sink.close()
    await source.close()
    assert result.failures >= 1, "the outage was seen"
    assert result.checkpoint_seq == head >= before + 1500
    assert_mirrored(ledger_db, cluster.dsn)


@pytest.fixture
def fresh_structlog():
    """The CLI configures structlog for its process; put it back for the other tests."""
    structlog.reset_defaults()  # the CLI configures it only when nobody has
    yield
    structlog.reset_defaults()


async def test_status_command(ledger_db, pg_dsn, capsys, fresh_structlog):
    """`dcp replicate status` prints the lag as JSON, from the target, or from the local cache
    when the target is unreachable."""
    head = head_seq(ledger_db)
    assert (
        await asyncio.to_thread(cli_main, ["--db", str(ledger_db), "--dsn", pg_dsn, "status"]) == 0
    )
    before = json.loads(capsys.readouterr().out)
    assert before["events_behind"] == head and before["seconds_behind"] > 0
    assert (
        await asyncio.to_thread(
            cli_main, ["replicate", "--db", str(ledger_db), "--dsn", pg_dsn, "--once"]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        await asyncio.to_thread(cli_main, ["--db", str(ledger_db), "--dsn", pg_dsn, "status"]) == 0
    )
    after = json.loads(capsys.readouterr().out)
    assert after == {
        "sink": "postgres",
        "replicated": True,
        "checkpoint_seq": head,
        "head_seq": head,
        "events_behind": 0,
        "seconds_behind": 0.0,
        "checkpoint_from": "target",
    }
    down = "postgresql://nobody@127.0.0.1:1/none"
    assert await asyncio.to_thread(cli_main, ["--db", str(ledger_db), "--dsn", down, "status"]) == 0
    cached = json.loads(capsys.readouterr().out)
    assert cached["checkpoint_seq"] == head
    assert cached["checkpoint_from"] == "local (target unreachable)"
