"""Fixtures for the multi-node tests: a fresh PostgreSQL database per test, and real `dcp
serve` processes on it (tests/multinode/_nodes.py).

PostgreSQL comes from DCP_TEST_PG_DSN (scripts/ci/postgres.sh); without a server the tests
skip, unless DCP_REQUIRE_POSTGRES is set (CI), where they fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.pg import drop_database

from ._nodes import Node


def url_for(server_dsn: str, dbname: str) -> str:
    """A postgresql:// URL for database `dbname` on the server of `server_dsn`."""
    p = {k: str(v) for k, v in conninfo_to_dict(server_dsn).items()}
    auth = quote(p.get("user", ""), safe="")
    if "password" in p:
        auth += ":" + quote(p["password"], safe="")
    host = p.get("host", "localhost")
    return f"postgresql://{auth}@{host}:{p.get('port', '5432')}/{quote(dbname, safe='')}"


@pytest.fixture
def pg_url(pg_server_dsn: str) -> Iterator[str]:
    """A fresh, empty database of its own for one test, as a URL; dropped afterwards."""
    name = f"dcp_mn_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield url_for(pg_server_dsn, name)
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
