"""The read-model rebuild (dcp_app.readmodel.rebuild): a fresh file built whole and renamed
into place, an existing one rewritten in one transaction, the postings copied by SQLite beside
the fold; each equal to the read models the service wrote event by event."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dcp_app import bulkload, readmodel
from dcp_app.readside import tuples
from dcp_events import catalogue, event
from dcp_events.sqlite_store import open_connection
from dcp_projections.errors import InvariantError
from dcp_projections.rows import POSTING_COLUMNS, all_rows, all_tuples

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log with live read models, written by the real service (scripts/simulate.py)."""
    path = tmp_path_factory.mktemp("simulated") / "sim.db"
    args = ["--db", str(path), "--seed", "7", "--commands", "3000"]
    subprocess.run(
        [sys.executable, "scripts/simulate.py", *args],
        check=True,
        capture_output=True,
        timeout=300,
        cwd=ROOT,
    )
    return path


@pytest.fixture
def live(simulated: Path, tmp_path: Path) -> Path:
    """A copy of the simulated ledger for one test."""
    path = tmp_path / "live" / "dcp.db"
    path.parent.mkdir()
    shutil.copyfile(simulated, path)
    return path


def _postings(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM postings").fetchone()[0])
    finally:
        conn.close()


def _indexes(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name"
        ).fetchall()
    finally:
        conn.close()


def test_a_rebuild_into_a_new_file_equals_the_live_read_models(live: Path, tmp_path: Path):
    """Built in a scratch file and renamed: the same tables as the service's, postings
    included, every index built again, and nothing left beside it."""
    into = tmp_path / "out" / "rebuilt.db"
    into.parent.mkdir()
    report = readmodel.rebuild(live, into=into)
    assert readmodel.compare(live, into) == []
    assert _indexes(into) == _indexes(live)
    assert sorted(p.name for p in into.parent.iterdir()) == ["rebuilt.db"]
    assert _postings(into) == _postings(live) > 0
    assert report.events == report.last_seq > 1000


def test_every_way_of_rebuilding_gives_the_same_tables(live: Path, tmp_path: Path):
    """Into a new file, again into that (now existing) file in one transaction, and in place
    in the ledger itself (also when it is named as `into`): the same read models each time."""
    into = tmp_path / "rebuilt.db"
    readmodel.rebuild(live, into=into)
    readmodel.rebuild(live, into=into)  # exists now: rewritten in one transaction
    assert readmodel.compare(live, into) == []
    in_place = tmp_path / "in_place.db"
    shutil.copyfile(live, in_place)
    readmodel.rebuild(in_place)
    assert readmodel.compare(in_place, live) == []
    readmodel.rebuild(in_place, into=in_place)  # the ledger named twice: in place too
    assert readmodel.compare(in_place, live) == []


def test_a_rebuild_as_of_a_sequence_copies_only_its_postings(live: Path, tmp_path: Path):
    """`until_seq` bounds the postings SQLite copies as it bounds the fold."""
    conn = sqlite3.connect(live)
    seq = conn.execute("SELECT max(seq) FROM postings").fetchone()[0] // 2
    want = conn.execute("SELECT count(*) FROM postings WHERE seq <= ?", (seq,)).fetchone()[0]
    conn.close()
    into = tmp_path / "half.db"
    readmodel.rebuild(live, until_seq=seq, into=into)
    assert 0 < _postings(into) == want


def test_a_failed_rebuild_leaves_no_file(live: Path, tmp_path: Path, monkeypatch):
    """A fold that ends in a fault (after SQLite copied the postings into the scratch file)
    leaves neither `into` nor the scratch file."""

    def fault(state: object) -> None:
        raise InvariantError("a money rule broken at the end")

    monkeypatch.setattr(readmodel, "check_all", fault)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InvariantError):
        readmodel.rebuild(live, into=out / "rebuilt.db")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("where", ["fold", "tables"])
def test_a_failed_rebuild_keeps_the_read_models_it_would_replace(
    live: Path, tmp_path: Path, monkeypatch, where: str
):
    """Into an existing file, or in place, the rebuild is one transaction: a failure at the
    end of the fold (the postings copy stopped) or while the tables are written (after the
    tables were emptied and the postings copied) rolls all of it back."""
    into = tmp_path / "rebuilt.db"
    readmodel.rebuild(live, into=into)

    def broken(state: object) -> None:
        raise RuntimeError(f"interrupted in the {where}")

    monkeypatch.setattr(readmodel, "check_all" if where == "fold" else "all_tuples", broken)
    with pytest.raises(RuntimeError):
        readmodel.rebuild(live, into=into)
    assert readmodel.compare(live, into) == []
    with pytest.raises(RuntimeError):
        readmodel.rebuild(into)  # in place: the log is empty, the tables are not
    assert readmodel.compare(live, into) == []


_HOLD = """
import pathlib, sys, time
from dcp_app import readmodel
def hold(state):
    pathlib.Path(sys.argv[3]).touch()  # the postings are in the scratch file: kill me here
    time.sleep(600)
readmodel.all_tuples = hold
readmodel.rebuild(sys.argv[1], into=sys.argv[2])
"""


def test_a_killed_rebuild_leaves_no_half_built_file(live: Path, tmp_path: Path):
    """A process killed in the middle of a rebuild into a new file leaves no `into` (at most
    its `.partial` scratch file); the next rebuild builds it whole."""
    out = tmp_path / "out"
    out.mkdir()
    into, flag = out / "rebuilt.db", tmp_path / "holding"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(live), str(into), str(flag)], cwd=ROOT
    )
    try:
        while not flag.exists():
            assert proc.poll() is None, "the rebuild ended before the point it holds at"
            time.sleep(0.05)
        partial = [p for p in out.iterdir() if p.name.endswith(".partial")]
        assert len(partial) == 1 and os.path.getsize(partial[0]) > 0
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not into.exists()
    readmodel.rebuild(live, into=into)
    assert readmodel.compare(live, into) == []


def test_the_tuples_a_rebuild_writes_are_the_rows_values(live: Path):
    """`all_tuples` is `all_rows` without the dicts: the same values in column order."""
    conn = open_connection(live)
    try:
        state = readmodel.fold_log(conn)
    finally:
        conn.close()
    rows = all_rows(state)
    assert all_tuples(state) == {t: tuples(r) for t, r in rows.items()}
    assert sum(len(r) for r in rows.values()) > 1000


def test_the_postings_copy_lists_the_postings_columns():
    """The SQL that copies postings out of the log names the table's columns in order."""
    assert bulkload._COLUMNS == POSTING_COLUMNS


def test_postings_of_an_older_schema_version_are_upcast(live: Path, tmp_path: Path, monkeypatch):
    """With deposits and job submissions at a newer version than the log holds, their
    postings come through the codec's upcaster and `posting_rows` (not the SQL copy): the
    same rows."""
    for cls in (catalogue.DepositCredited, catalogue.JobSubmitted):
        monkeypatch.setattr(cls, "schema_version", 2)
        monkeypatch.setitem(event._UPCASTERS, (cls.__struct_config__.tag, 1), lambda o: o)
    conn = sqlite3.connect(live)
    n = conn.execute(
        "SELECT count(*) FROM postings WHERE event_type IN (?, ?)",
        ("renter.deposit_credited", "job.submitted"),
    ).fetchone()[0]
    conn.close()
    into = tmp_path / "rebuilt.db"
    readmodel.rebuild(live, into=into)
    assert n > 100 and readmodel.compare(live, into) == []
