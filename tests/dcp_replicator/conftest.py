"""Fixtures for the replicator: a real PostgreSQL (scripts/ci/postgres.sh), fresh databases,
logs written by the real ledger (tests/dcp_replicator/ledger.py), and a row-by-row comparison
of the local read models with a target.

PostgreSQL comes from DCP_TEST_PG_DSN (printed by scripts/ci/postgres.sh). When no server
answers, the tests that need one skip with the reason, unless DCP_REQUIRE_POSTGRES is set
(CI), where they fail instead.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dcp_replicator.tables import MIRRORED, TableSpec
from tests.pg import drop_database

from .ledger import make_db


@pytest.fixture
def pg_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A fresh, empty database of its own for one test; dropped afterwards."""
    name = f"dcp_rt_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(pg_server_dsn)
    params["dbname"] = name
    yield make_conninfo(**params)
    drop_database(pg_server_dsn, name)


@pytest.fixture(scope="session")
def ledger_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log of at least 3,000 events with its read models, written once by the real ledger."""
    path = tmp_path_factory.mktemp("ledger") / "dcp.db"
    asyncio.run(make_db(path, 3000))
    return path


@pytest.fixture
def ledger_db(ledger_template: Path, tmp_path: Path) -> Path:
    """A copy of its own of the template log (tests append to it and change its rows)."""
    path = tmp_path / "dcp.db"
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(ledger_template) + suffix)
        if src.exists():
            shutil.copyfile(src, str(path) + suffix)
    return path


def _by_key(t: TableSpec):  # type: ignore[no-untyped-def]
    idx = [t.target_columns.index(k) for k in t.target_key]
    return lambda r: tuple(r[i] for i in idx)


def _normal(t: TableSpec, row: tuple[Any, ...]) -> tuple[Any, ...]:
    out = []
    for c, v in zip(t.columns, row, strict=True):
        if v is not None and c.kind == "bool":
            v = bool(v)
        elif v is not None and c.kind == "json":
            v = json.loads(v)
        out.append(v)
    return tuple(out)


def local_rows(db: Path, t: TableSpec) -> list[tuple[Any, ...]]:
    """Every row of a mirrored local table, in the target's form, sorted."""
    conn = sqlite3.connect(db)
    try:
        cols = ", ".join(c.local for c in t.columns)
        rows = conn.execute(f"SELECT {cols} FROM {t.local}").fetchall()
    finally:
        conn.close()
    return sorted((_normal(t, r) for r in rows), key=_by_key(t))


def target_rows(dsn: str, t: TableSpec) -> list[tuple[Any, ...]]:
    """Every row of a target table, sorted the same way."""
    cols = ", ".join(f'"{c}"' for c in t.target_columns)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT {cols} FROM {t.target}").fetchall()
    return sorted((tuple(r) for r in rows), key=_by_key(t))


def assert_mirrored(db: Path, dsn: str) -> dict[str, int]:
    """Every mirrored table of the target equals the local one, row by row; returns counts."""
    counts = {}
    for t in MIRRORED:
        local, target = local_rows(db, t), target_rows(dsn, t)
        assert len(target) == len(local), f"{t.target}: {len(target)} rows, local {len(local)}"
        for a, b in zip(local, target, strict=True):
            assert a == b, f"{t.target} differs:\n local  {a}\n target {b}"
        counts[t.target] = len(local)
    return counts


def head_seq(db: Path) -> int:
    """The last seq of the local log."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    finally:
        conn.close()
