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
