"""`dcp backup` of a live ledger under load, and `dcp restore`, as real processes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from ._live import IMAGE, Api, serve

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 32


def dcp(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "dcp_cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def submitted_job_ids(db: Path) -> set[str]:
    """Job ids of every job.submitted event in the log at `db`, read from the events alone."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT json_extract(payload, '$.job_id') FROM events WHERE type = 'job.submitted'"
        ).fetchall()
        jobs = {r[0] for r in conn.execute("SELECT job_id FROM jobs")}
    finally:
        conn.close()
    ids = {r[0] for r in rows}
    assert ids == jobs  # the read models in the copy are those of the same commit
    return ids


def test_backup_while_32_clients_submit(tmp_path: Path):
    """The copy verifies, and holds every job acknowledged before the backup started."""
    db, copy = tmp_path / "live.db", tmp_path / "backup.db"
    acked: list[tuple[float, str]] = []
    errors: list[str] = []
    stop = threading.Event()
    with serve(db, rate_limits=False) as server:
        api = Api(server)
        api.allow_image()
        renters = [api.renter(credit_halala=10_000_000) for _ in range(CLIENTS)]

        def client(renter: dict) -> None:
            body = {
                "container_spec": {"image": IMAGE, "command": ["true"]},
                "gpu_requirements": {"gpu_type": "RTX 4090", "gpu_count": 1},
                "max_duration_seconds": 60,
            }
            with httpx.Client(base_url=server.url, timeout=30) as http:
                while not stop.is_set():
                    r = http.post("/api/jobs/submit", json=body, headers=renter["headers"])
                    if r.status_code != 201:
                        errors.append(r.text)
                        return
                    acked.append((time.monotonic(), r.json()["job"]["job_id"]))

        threads = [threading.Thread(target=client, args=(r,)) for r in renters]
        for t in threads:
            t.start()
        while len(acked) < 200 and not errors:
            time.sleep(0.05)
        started = time.monotonic()
        result = dcp("backup", "--db", db, "--to", copy)
        during = sum(1 for at, _ in acked if at > started)
        stop.set()
        for t in threads:
            t.join(30)
        final_head = api.head_seq()
        refused_live = dcp("restore", "--from", copy, "--db", db, "--force")
        api.close()

    assert not errors, errors[:3]
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] is True and summary["sum_halala"] == 0
    assert summary["head_seq"] == summary["events"] and len(summary["head_hash"]) == 64
    before = {job_id for at, job_id in acked if at < started}
    in_copy = submitted_job_ids(copy)
    assert before <= in_copy, f"{len(before - in_copy)} acknowledged jobs missing"
    assert during > 0 and summary["head_seq"] < final_head  # the writers went on meanwhile
    assert not (tmp_path / "backup.db.partial").exists()
    # The copy passes the auditors' own command too.
    audit = dcp("audit", "verify", "--db", copy, "--json")
    assert audit.returncode == 0 and json.loads(audit.stdout)["head_hash"] == summary["head_hash"]

    assert refused_live.returncode == 1
    assert "running process" in refused_live.stderr


def test_restore_refuses_what_it_must_and_restores_a_verified_copy(tmp_path: Path):
    """No overwrite without --force, never an unverifiable file; the restored log is the copy."""
    db, copy, target = tmp_path / "live.db", tmp_path / "b.db", tmp_path / "restored.db"
    with serve(db) as server:
        api = Api(server)
        api.allow_image()
        renter = api.renter(credit_halala=50_000)
        job = api.submit(renter)["job"]
        api.close()
    assert dcp("backup", "--db", db, "--to", copy).returncode == 0
    again = dcp("backup", "--db", db, "--to", copy)
    assert again.returncode == 1 and "never overwrites" in again.stderr

    target.write_bytes(b"an old ledger")
    kept = dcp("restore", "--from", copy, "--db", target)
    assert kept.returncode == 1 and "--force" in kept.stderr
    assert target.read_bytes() == b"an old ledger"

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    bad = dcp("restore", "--from", junk, "--db", target, "--force")
    assert bad.returncode == 1 and "verif" in bad.stderr
    assert target.read_bytes() == b"an old ledger"

    done = dcp("restore", "--from", copy, "--db", target, "--force")
    assert done.returncode == 0, done.stderr
    assert (
        json.loads(done.stdout)["head_hash"]
        == json.loads(dcp("audit", "verify", "--db", copy, "--json").stdout)["head_hash"]
    )
    assert submitted_job_ids(target) == {job["job_id"]}
    with serve(target) as server:  # the restored ledger serves the renter's money as it was
        api = Api(server)
        assert api.balance(renter)["held_halala"] == job["cost_halala"]
        api.close()

    pg = dcp("backup", "--db", "postgresql://nobody@127.0.0.1/none", "--to", tmp_path / "x")
    assert pg.returncode == 2 and "pg_dump" in pg.stderr
