"""The replicator with a PostgreSQL ledger as its source: a scripts/simulate.py ledger moved
over by `dcp migrate` mirrors to the same rows as the SQLite original, batch for batch; real
SQLite file, real PostgreSQL on both sides, the real `dcp` command."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcp_replicator.errors import SourceError
from dcp_replicator.source import PostgresSource, SqliteSource, open_source
from dcp_replicator.tables import MIRRORED
from tests.pg import create_database, drop_database

from .conftest import _normal, assert_mirrored, head_seq

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]


def dcp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dcp_cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def simulated_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("simulated") / "sim.db"
    argv = ["scripts/simulate.py", "--db", str(path), "--seed", "5", "--commands", "2000"]
    subprocess.run([sys.executable, *argv], check=True, capture_output=True, cwd=ROOT)
    return path


@pytest.fixture
def ledger_url(pg_server_dsn: str, simulated_log: Path) -> Iterator[str]:
    """A PostgreSQL ledger holding the simulated log, moved over by `dcp migrate`."""
    name, url = create_database(pg_server_dsn, "dcp_rs")
    done = dcp("migrate", "--from", str(simulated_log), "--to", url)
    assert done.returncode == 0, done.stderr
    yield url
    drop_database(pg_server_dsn, name)


async def test_open_source_picks_the_backend(simulated_log: Path, ledger_url: str) -> None:
    file_source, pg_source = await open_source(str(simulated_log)), await open_source(ledger_url)
    try:
        assert type(file_source) is SqliteSource and type(pg_source) is PostgresSource
        assert await pg_source.head() == await file_source.head() == head_seq(simulated_log)
        lag = await pg_source.lag(0)
        assert lag.events_behind == head_seq(simulated_log) and lag.seconds_behind > 0
    finally:
        await file_source.close()
        await pg_source.close()


@pytest.mark.parametrize("max_rows", [37, 100_000])
async def test_batches_are_the_same_from_either_backend(
    simulated_log: Path, ledger_url: str, max_rows: int
) -> None:
    sources = [await SqliteSource.open(simulated_log), await PostgresSource.open(ledger_url)]
    walks: list[list[tuple[int, dict[str, list[tuple[object, ...]]]]]] = [[], []]
    try:
        for source, walk in zip(sources, walks, strict=True):
            checkpoint = 0
            while True:
                batch = await source.read_batch(checkpoint, max_rows)
                if batch.upto_seq == checkpoint:
                    break
                rows = {
                    t.target: sorted(
                        (_normal(t, r) for r in batch.rows.get(t.target, [])), key=repr
                    )
                    for t in MIRRORED
                }
                walk.append((batch.upto_seq, rows))
                checkpoint = batch.upto_seq
    finally:
        for source in sources:
            await source.close()
    assert walks[0][-1][0] == head_seq(simulated_log)
    if max_rows == 37:
        assert len(walks[0]) > 50
    assert walks[1] == walks[0]


def test_dcp_replicate_mirrors_a_postgres_ledger(
    simulated_log: Path, ledger_url: str, pg_dsn: str, tmp_path: Path
) -> None:
    checkpoints = tmp_path / "cp.replicator"
    done = dcp(
        "replicate",
        "--db",
        ledger_url,
        "--dsn",
        pg_dsn,
        "--once",
        "--checkpoints",
        str(checkpoints),
    )
    assert done.returncode == 0, done.stderr
    assert "dcp_test:dcp_test@" not in done.stdout + done.stderr
    counts = assert_mirrored(simulated_log, pg_dsn)
    assert sum(counts.values()) > 100
    assert checkpoints.exists()


async def test_what_is_not_a_ledger_is_a_source_error(pg_url_empty: str) -> None:
    with pytest.raises(SourceError, match="lacks tables"):
        await open_source(pg_url_empty)
    with pytest.raises(SourceError, match="postgresql://"):
        await open_source("mysql://u:pw@h/db")


@pytest.fixture
def pg_url_empty(pg_server_dsn: str) -> Iterator[str]:
    name, url = create_database(pg_server_dsn, "dcp_rs")
    yield url
    drop_database(pg_server_dsn, name)
