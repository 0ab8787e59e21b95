"""`dcp replicate --metrics-port`: the lag in events and seconds, scraped from a real process
replicating a real log into a real PostgreSQL (and into one that is not there)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .conftest import head_seq

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def replicating(db: Path, dsn: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", "dcp_cli", "replicate", "--db", str(db), "--dsn", dsn]
    proc = subprocess.Popen(
        [*cmd, "--metrics-port", str(port), "--poll-interval-s", "0.2"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


def lag_when(
    port: int, predicate: Callable[[dict[str, float]], bool], timeout_s: float = 60.0
) -> dict[str, float]:
    """The replicator's gauges (by name, one sink) once `predicate` holds for them."""
    deadline = time.monotonic() + timeout_s
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.HTTPError:
            time.sleep(0.1)
            continue
        seen = {
            s.name: s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name.startswith("dcp_replicator_")
        }
        if seen and predicate(seen):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"the gauges never got there: {seen}")


def test_lag_falls_to_zero_as_the_mirror_catches_up(ledger_db, pg_dsn):
    """Replicating into PostgreSQL: the lag ends at 0 events and 0 s, the checkpoint at the head."""
    port = free_port()
    with replicating(ledger_db, pg_dsn, port):
        g = lag_when(port, lambda g: g.get("dcp_replicator_checkpoint_seq") == head_seq(ledger_db))
    assert g["dcp_replicator_lag_events"] == 0 and g["dcp_replicator_lag_seconds"] == 0
    assert g["dcp_replicator_source_head_seq"] == head_seq(ledger_db)
    assert g["dcp_replicator_rows_total"] > 0 and g["dcp_replicator_batches_total"] >= 1


def test_lag_of_a_sink_that_never_answered_is_the_whole_log(ledger_db):
    """With no PostgreSQL to write to, every event is behind, and the seconds show its age."""
    port = free_port()
    with replicating(ledger_db, f"postgresql://nobody@127.0.0.1:{free_port()}/none", port) as p:
        g = lag_when(port, lambda g: g.get("dcp_replicator_lag_events", 0) > 0)
        assert p.poll() is None  # a continuous replicator waits for its sink, it does not exit
    assert g["dcp_replicator_lag_events"] == head_seq(ledger_db) >= 3000
    assert g["dcp_replicator_lag_seconds"] > 0
    assert g["dcp_replicator_rows_total"] == 0
