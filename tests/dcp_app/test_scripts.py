"""The simulator and the rebuild benchmark run end to end on a small workload."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


def test_simulate_then_rebuild(tmp_path):
    """simulate.py's last line is the ledger's verdict; bench_rebuild finds the rebuild equal."""
    db = tmp_path / "sim.db"
    lines = run("scripts/simulate.py", "--db", str(db), "--seed", "5", "--commands", "3000")
    last = json.loads(lines[-1])
    assert last["events"] > 1000 and last["sum_halala"] == 0 and last["invariants_ok"] is True
    detail = json.loads(lines[-2])
    assert detail["commands"] == 3000 and detail["rebuilt_tables_differing"] == []
    bench = json.loads(run("scripts/bench_rebuild.py", "--db", str(db), "--repeat", "1")[-1])
    assert bench["events"] == last["events"] and bench["rebuild_equals_live"] is True


def test_simulate_runs_jobs_with_a_large_fleet(tmp_path):
    """Heartbeats are spread over time, so a fleet far larger than a round still runs jobs
    (each round used to heartbeat every provider: 400 providers left no room for work)."""
    db = tmp_path / "sim.db"
    args = ["--db", str(db), "--seed", "3", "--renters", "50", "--providers", "400"]
    lines = run("scripts/simulate.py", *args, "--commands", "6000")
    assert json.loads(lines[-1])["invariants_ok"] is True
    jobs = json.loads(lines[-2])["jobs_in_memory"]
    assert jobs.get("completed", 0) > 50 and jobs.get("running", 0) + jobs.get("assigned", 0) > 0
