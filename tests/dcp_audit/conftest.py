"""Fixtures for the audit tools: logs on real SQLite files.

`log_path` is each of two logs in turn: one appended through the store by `_logs.build_log`
(small, known ids) and one made by `scripts/simulate.py` through the real service (every way
a job can end, live read models). `store_log_path` is only the first, for tests that name ids.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ._logs import build_log

ROOT = Path(__file__).resolve().parents[2]
SIMULATE = ROOT / "scripts" / "simulate.py"


@pytest.fixture(scope="session")
def simulated_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log made once per run by scripts/simulate.py (seed 11, 3000 commands)."""
    path = tmp_path_factory.mktemp("simulated") / "sim.db"
    subprocess.run(
        [sys.executable, str(SIMULATE), "--db", str(path), "--seed", "11", "--commands", "3000"],
        check=True,
        capture_output=True,
        timeout=120,
        cwd=ROOT,
    )
    return path


@pytest.fixture
async def store_log_path(tmp_path: Path) -> Path:
    """A fresh log of a small marketplace history (renters, jobs, settlements, withdrawals)."""
    path = tmp_path / "dcp.db"
    await build_log(path)
    return path


@pytest.fixture(params=["store", "simulate"])
async def log_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A fresh copy of each kind of log, for a test to tamper with."""
    path = tmp_path / "dcp.db"
    if request.param == "store":
        await build_log(path)
    else:
        source: Path = request.getfixturevalue("simulated_log")
        shutil.copyfile(source, path)
    return path
