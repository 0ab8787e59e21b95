"""Read models that are behind the log are caught up before anything is served, never skipped:
an events-only copy of a simulated ledger, opened with the real server, gets the same tables as
the original; a read side written for other tables is rebuilt; a batch never moves the
checkpoint over events whose rows were not written. Real SQLite files, a real uvicorn."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from dcp_app import readmodel
from dcp_events.sqlite_store import SqliteEventStore

from ._live import Api, serve

ROOT = Path(__file__).resolve().parents[2]
# The simulated jobs' deadlines pass on the real clock: no sweep may append while comparing.
NO_SWEEPS = {"sweep_interval_s": 3600.0}


def simulated(db: Path) -> None:
    done = subprocess.run(
        [sys.executable, "scripts/simulate.py", "--db", str(db), "--seed", "8", "--commands",
         "3000"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["invariants_ok"] is True


async def events_only_copy(src: Path, dst: Path) -> int:
    """A new ledger file holding only `src`'s events table (every read model empty)."""
    store = await SqliteEventStore.open(dst)
    await store.close()
    conn = sqlite3.connect(dst, isolation_level=None)
    try:
        conn.execute("ATTACH DATABASE ? AS src", (str(src),))
        conn.execute("INSERT INTO main.events SELECT * FROM src.events")
        copied = conn.execute("SELECT COUNT(*) FROM main.events").fetchone()[0]
        assert conn.execute("SELECT COUNT(*) FROM main.jobs").fetchone()[0] == 0
        return int(copied)
    finally:
        conn.close()


def projection_marks(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT name, last_seq FROM projection_state").fetchall())
    finally:
        conn.close()


async def test_an_events_only_copy_is_served_with_every_table(tmp_path):
    """The events table alone of a simulated ledger (plus a renter registered over HTTP), opened
    with `dcp serve`: ready at once with the original's tables, and the renter's key works."""
    original, copy = tmp_path / "original.db", tmp_path / "copy.db"
    simulated(original)
    with serve(original, **NO_SWEEPS) as server:
        api = Api(server)
        renter = api.renter(credit_halala=5_000)
        api.close()
    assert readmodel.behind(original) is None
    events = await events_only_copy(original, copy)
    assert readmodel.behind(copy) == "written for other tables"
    with serve(copy, **NO_SWEEPS) as server:
        api = Api(server)
        ready = api.ok("GET", "/readyz")
        assert ready["projections_caught_up"] is True and ready["head_seq"] == events
        assert api.head_seq() == events  # nothing appended: the copy is the original's log
        me = api.ok("GET", "/api/renters/balance", headers=renter["headers"])
        assert me["available_halala"] == 5_000
        api.close()
    assert readmodel.compare(original, copy) == []


async def test_read_models_written_for_other_tables_are_rebuilt(tmp_path):
    """A read side marked with another table fingerprint (an older release's), or behind the
    log, is rebuilt at start to exactly what a rebuild from scratch gives."""
    db, reference = tmp_path / "dcp.db", tmp_path / "reference.db"
    simulated(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE projection_state SET last_seq = 1 WHERE name = ?", (readmodel.SCHEMA_ROW,))
    conn.execute("DELETE FROM renters")  # what an older release's rows would lack
    conn.close()
    assert readmodel.behind(db) == "written for other tables"
    with serve(db, **NO_SWEEPS) as server:
        api = Api(server)
        assert api.ok("GET", "/readyz")["projections_caught_up"] is True
        api.close()
    readmodel.rebuild(db, into=reference)
    assert readmodel.compare(db, reference) == []
    assert projection_marks(db)[readmodel.SCHEMA_ROW] == readmodel.tables_fingerprint()


async def test_a_table_of_an_older_release_gets_its_new_column(tmp_path):
    """A `jobs` table written before `submit_seq` existed (an older release's file: the column
    missing, the old fingerprint) is created anew with it at start and filled from the log."""
    db, reference = tmp_path / "dcp.db", tmp_path / "reference.db"
    simulated(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("ALTER TABLE jobs DROP COLUMN submit_seq")
    conn.execute("UPDATE projection_state SET last_seq = 1 WHERE name = ?", (readmodel.SCHEMA_ROW,))
    conn.close()
    assert readmodel.behind(db) == "written for other tables"
    with serve(db, **NO_SWEEPS) as server:
        api = Api(server)
        assert api.ok("GET", "/readyz")["projections_caught_up"] is True
        api.close()
    conn = sqlite3.connect(db)
    try:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
        ordered = conn.execute("SELECT COUNT(*) FROM jobs WHERE submit_seq > 0").fetchone()[0]
    finally:
        conn.close()
    assert "submit_seq" in columns and ordered > 0
    readmodel.rebuild(db, into=reference)
    assert readmodel.compare(db, reference) == []


async def test_a_batch_never_moves_the_checkpoint_over_rows_not_written(tmp_path):
    """With the checkpoint set back under a running server (rows of one event unaccounted for),
    the next batch writes its rows but leaves the checkpoint where it is, so /readyz says the
    read side is behind; the next start rebuilds and is current again."""
    db = tmp_path / "dcp.db"
    with serve(db) as server:
        api = Api(server)
        api.allow_image()
        renter = api.renter(credit_halala=100_000)
        head = api.head_seq()
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute(
            "UPDATE projection_state SET last_seq = ? WHERE name = ?",
            (head - 1, readmodel.PROJECTION),
        )
        conn.close()
        api.submit(renter)
        assert projection_marks(db)[readmodel.PROJECTION] == head - 1
        ready = api.get("/readyz")
        assert ready.status_code == 503 and api.head_seq() > head
        api.close()
    assert readmodel.behind(db) is not None
    with serve(db) as server:
        api = Api(server)
        assert api.ok("GET", "/readyz")["projections_caught_up"] is True
        api.close()
    conn = sqlite3.connect(db)
    try:
        assert projection_marks(db)[readmodel.PROJECTION] == readmodel.fold_log(conn).seq
    finally:
        conn.close()
