"""Fixtures for the command line: a scripts/simulate.py log on a real SQLite file and fresh
databases on the test PostgreSQL server (tests/pg.py)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.dcp_events.conftest import _url_for
from tests.pg import drop_database

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def simulated_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log made once per run by scripts/simulate.py (seed 7, 3000 commands), read models
    included; tests copy it before they change it."""
    path = tmp_path_factory.mktemp("simulated") / "sim.db"
    argv = ["scripts/simulate.py", "--db", str(path), "--seed", "7", "--commands", "3000"]
    subprocess.run(
        [sys.executable, *argv],
        check=True,
        capture_output=True,
        timeout=180,
        cwd=ROOT,
    )
    return path


@pytest.fixture
def pg_url(pg_server_dsn: str) -> Iterator[str]:
    """A postgresql:// URL of a fresh, empty database of its own; dropped afterwards."""
    name = f"dcp_cli_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _url_for(pg_server_dsn, name)
    drop_database(pg_server_dsn, name)
