"""Fixtures for the command line: a scripts/simulate.py log on a real SQLite file and fresh
databases on the test PostgreSQL server (tests/pg.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import create_database, drop_database

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
    name, url = create_database(pg_server_dsn, "dcp_cli")
    yield url
    drop_database(pg_server_dsn, name)
