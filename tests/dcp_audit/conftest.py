"""Fixtures for the audit tools: a log on a real SQLite file, built once per test."""

from pathlib import Path

import pytest

from ._logs import build_log


@pytest.fixture
async def log_path(tmp_path: Path) -> Path:
    """A fresh log of a small marketplace history (renters, jobs, settlements, withdrawals)."""
    path = tmp_path / "dcp.db"
    await build_log(path)
    return path
