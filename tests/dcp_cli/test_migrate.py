"""`dcp migrate --from FILE --to URL`, and `dcp audit` on the PostgreSQL log it makes: the same
events, sequence and head hash; a non-empty target or a broken source refused; real SQLite
file, real PostgreSQL, the real `dcp` command."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]


def dcp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dcp_cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )


def sqlite_head(path: Path) -> tuple[int, str]:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    return int(row[0]), str(row[1])


def pg_head(url: str) -> tuple[int, str, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT seq, hash, (SELECT count(*) FROM events) FROM events_head"
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1]), int(row[2])


def test_migrate_copies_the_log_with_the_same_head(simulated_log: Path, pg_url: str) -> None:
    seq, head_hash = sqlite_head(simulated_log)
    assert seq > 1000

    done = dcp("migrate", "--from", str(simulated_log), "--to", pg_url, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert (result["events"], result["head_seq"], result["head_hash"]) == (seq, seq, head_hash)
    assert result["events_per_s"] > 0
    assert not result["source_moved"]
    # The password never reaches the output.
    assert "dcp_test:dcp_test@" not in done.stdout + done.stderr
    assert pg_head(pg_url) == (seq, head_hash, seq)

    # The audit reads the PostgreSQL log as it reads the file: the same verdict and export.
    verified = dcp("audit", "verify", "--db", pg_url, "--json")
    assert verified.returncode == 0, verified.stderr
    summary = json.loads(verified.stdout)
    assert (summary["head_seq"], summary["head_hash"], summary["sum_halala"]) == (
        seq,
        head_hash,
        0,
    )
    assert summary["invariants_checked"]
    from_pg = dcp("audit", "export", "--db", pg_url)
    from_file = dcp("audit", "export", "--db", str(simulated_log))
    assert from_pg.returncode == from_file.returncode == 0
    assert from_pg.stdout == from_file.stdout
    assert len(from_pg.stdout.splitlines()) == seq

    # The read models were rebuilt on the target: a replay there finds no difference.
    replayed = dcp("audit", "replay", "--db", pg_url, "--json")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    report = json.loads(replayed.stdout)
    assert report["differences"] == [] and report["events"] == seq
    assert result["read_model_rows"] > 0

    # DCP_DB names the ledger as --db does.
    env = {**os.environ, "DCP_DB": pg_url}
    assert dcp("audit", "verify", env=env).returncode == 0


def test_a_target_that_is_not_empty_is_refused(simulated_log: Path, pg_url: str) -> None:
    assert dcp("migrate", "--from", str(simulated_log), "--to", pg_url).returncode == 0
    before = pg_head(pg_url)
    again = dcp("migrate", "--from", str(simulated_log), "--to", pg_url)
    assert again.returncode == 2
    assert "already holds a ledger" in again.stderr
    assert "dcp_test:dcp_test@" not in again.stderr
    assert pg_head(pg_url) == before


def test_a_broken_source_chain_writes_nothing(
    simulated_log: Path, pg_url: str, tmp_path: Path
) -> None:
    db = tmp_path / "tampered.db"
    shutil.copy(simulated_log, db)
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET actor = 'mallory' WHERE seq = 500")
    conn.commit()
    conn.close()

    done = dcp("migrate", "--from", str(db), "--to", pg_url)
    assert done.returncode == 1
    assert "seq 500" in done.stderr and "nothing written" in done.stderr
    assert pg_head(pg_url) == (0, "0" * 64, 0)


def test_a_tampered_postgres_log_fails_the_audit(simulated_log: Path, pg_url: str) -> None:
    assert dcp("migrate", "--from", str(simulated_log), "--to", pg_url).returncode == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE postings SET amount_halala = amount_halala + 1"
            " WHERE seq = (SELECT min(seq) FROM postings)"
        )
    replayed = dcp("audit", "replay", "--db", pg_url, "--json")
    assert replayed.returncode == 1
    assert json.loads(replayed.stdout)["differences_total"] >= 1

    with psycopg.connect(pg_url, autocommit=True) as conn:
        # The owner can lift the append-only triggers; the chain still gives it away.
        conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
        conn.execute("UPDATE events SET actor = 'mallory' WHERE seq = 700")
    verified = dcp("audit", "verify", "--db", pg_url, "--json")
    assert verified.returncode == 1
    fault = json.loads(verified.stdout)
    assert (fault["ok"], fault["seq"], fault["check"]) == (False, 700, "chain")


@pytest.mark.parametrize(
    ("source", "target", "says"),
    [
        ("{db}", "./other.db", "postgresql:// URL"),
        ("{db}", "mysql://u:pw@h/db", "postgresql:// URL"),
        ("{url}", "{url}", "SQLite ledger file"),
        ("/nonexistent/dcp.db", "{url}", "no event log"),
    ],
)
def test_wrong_arguments_exit_2(
    simulated_log: Path, pg_url: str, source: str, target: str, says: str
) -> None:
    fill = {"db": str(simulated_log), "url": pg_url}
    done = dcp("migrate", "--from", source.format(**fill), "--to", target.format(**fill))
    assert done.returncode == 2
    assert says in done.stderr
    assert "pw" not in done.stderr.replace("password", "")
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT to_regclass('events') IS NULL").fetchone()
    assert row is not None and row[0], "nothing may be written into the target"


def test_a_source_written_during_the_copy_is_reported(
    simulated_log: Path,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A `dcp serve` still appending while the copy runs: the target holds the consistent
    prefix the copy read, and the command says the rest is missing (exit 1)."""
    import asyncio

    from dcp_cli import migrate
    from dcp_events.sqlite_store import SqliteEventStore
    from dcp_events.store import NewEvent

    db = tmp_path / "live.db"
    shutil.copy(simulated_log, db)
    seq, head_hash = sqlite_head(db)
    copy = migrate._copy

    def copy_while_a_node_appends(*args: Any, **kwargs: Any) -> None:
        async def append() -> None:
            store = await SqliteEventStore.open(db)
            await store.append("late", 0, [NewEvent("test.late", 1, b'{"type":"test.late"}')])
            await store.close()

        asyncio.run(append())  # committed after the copy's snapshot began
        copy(*args, **kwargs)

    monkeypatch.setattr(migrate, "_copy", copy_while_a_node_appends)
    assert migrate.main(["migrate", "--from", str(db), "--to", pg_url]) == 1
    assert "written during the migration" in capsys.readouterr().err
    assert pg_head(pg_url) == (seq, head_hash, seq)
    assert sqlite_head(db)[0] == seq + 1


def test_dcp_db_names_the_target(simulated_log: Path, pg_url: str) -> None:
    done = dcp("migrate", "--from", str(simulated_log), env={**os.environ, "DCP_DB": pg_url})
    assert done.returncode == 0, done.stderr
    assert pg_head(pg_url)[0] == sqlite_head(simulated_log)[0]
