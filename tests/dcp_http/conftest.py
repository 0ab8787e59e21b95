"""Fixtures: a live API server per test (see _live.py)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._live import Api, Server, serve


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """The API with an admin token, rate limits on (register's raised), fast sweeps."""
    with serve(tmp_path / "dcp.db") as s:
        yield s


@pytest.fixture
def api(server: Server) -> Iterator[Api]:
    client = Api(server)
    client.allow_image()
    yield client
    client.close()
