"""Durability: a writer killed with SIGKILL loses nothing it acknowledged, on either backend."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from ._log_check import check_log, read_log


@pytest.fixture(params=["sqlite", "postgres"])
def log_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the crashing writer appends: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "crash.db")
    return str(request.getfixturevalue("pg_dsn"))


def test_sigkill_mid_append_loses_no_acknowledged_event(log_location):
    """Kill a process appending from 16 tasks; every acknowledged append survives, whole."""
    writer = Path(__file__).with_name("_crash_writer.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, str(writer), log_location], stdout=subprocess.PIPE, text=True, env=env
    )
    acked: dict[str, int] = {}
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while len(acked) < 16 or sum(acked.values()) < 3000:
        line = proc.stdout.readline()
        assert line, "writer exited early"
        stream, version, _seq = line.split()
        acked[stream] = max(acked.get(stream, 0), int(version))
        assert time.monotonic() < deadline
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Lines written before the kill but not yet read are acknowledged too.
    for line in proc.stdout:
        if len(line.split()) == 3:  # the last line may have been cut by the kill
            stream, version, _seq = line.split()
            acked[stream] = max(acked.get(stream, 0), int(version))
    proc.stdout.close()

    versions = check_log(read_log(log_location))
    for stream, version in acked.items():
        assert versions[stream] >= version, f"{stream} lost acknowledged events"
    assert all(v % 3 == 0 for v in versions.values()), "a partial append survived"
    if log_location.startswith("postgresql://"):
        # One statement, one snapshot: the head row names the last stored event.
        with psycopg.connect(log_location) as conn:
            (matches,) = conn.execute(
                "SELECT h.seq = e.seq AND h.hash = e.hash FROM events_head h,"
                " (SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1) e"
            ).fetchone()
        assert matches, "the head row does not name the last event"
