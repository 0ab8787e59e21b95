"""Fixtures for the multi-node tests: a fresh PostgreSQL database per test, and real `dcp
serve` processes on it (tests/multinode/_nodes.py).

PostgreSQL comes from DCP_TEST_PG_DSN (scripts/ci/postgres.sh); without a server the tests
skip, unless DCP_REQUIRE_POSTGRES is set (CI), where they fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.pg import create_database, drop_database

from ._nodes import Node


@pytest.fixture
def pg_url(pg_server_dsn: str) -> Iterator[str]:
    """A fresh, empty database of its own for one test, as a URL; dropped afterwards."""
    name, url = create_database(pg_server_dsn, "dcp_mn")
    yield url
    drop_database(pg_server_dsn, name)


@pytest.fixture
def start_nodes(tmp_path: Path) -> Iterator[Callable[..., list[Node]]]:
    """`start_nodes(url, n, **env)`: n `dcp serve` processes on `url`, all ready; every one
    started is stopped when the test ends."""
    started: list[Node] = []

    def start(url: str, n: int = 3, **env: str) -> list[Node]:
        # One at a time: the first applies the schema; the others find it applied.
        nodes = [Node(url, tmp_path, f"node{len(started) + i}", **env) for i in range(n)]
        for node in nodes:
            started.append(node)
            node.start()
        return nodes

    yield start
    for node in started:
        node.stop()
