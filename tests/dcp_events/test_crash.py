"""Durability: a writer killed with SIGKILL loses nothing it acknowledged."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dcp_events.chain import GENESIS_HASH, canonical_bytes, chain_hash
from dcp_events.sqlite_store import iter_event_batches, open_connection


def test_sigkill_mid_append_loses_no_acknowledged_event(tmp_path):
    """Kill a process appending from 16 tasks; every acknowledged append survives, whole."""
    db = tmp_path / "crash.db"
    writer = Path(__file__).with_name("_crash_writer.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, str(writer), str(db)], stdout=subprocess.PIPE, text=True, env=env
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

    conn = open_connection(db)
    prev, expected_seq = GENESIS_HASH, 1
    versions: dict[str, int] = {}
    for batch in iter_event_batches(conn):
        for e in batch:
            assert e.seq == expected_seq, "sequence gap"
            assert e.prev_hash == prev
            canonical = canonical_bytes(
                e.seq,
                e.stream_id,
                e.stream_version,
                e.type,
                e.schema_version,
                e.recorded_at_us,
                e.actor,
                e.idempotency_key,
                e.payload,
            )
            assert e.hash == chain_hash(prev, canonical), f"chain broken at {e.seq}"
            prev, expected_seq = e.hash, expected_seq + 1
            assert e.stream_version == versions.get(e.stream_id, 0) + 1
            versions[e.stream_id] = e.stream_version
    conn.close()
    for stream, version in acked.items():
        assert versions[stream] >= version, f"{stream} lost acknowledged events"
    assert all(v % 3 == 0 for v in versions.values()), "a partial append survived"
