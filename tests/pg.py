"""The test PostgreSQL server, shared by every suite that needs one (scripts/ci/postgres.sh).

Its DSN comes from DCP_TEST_PG_DSN. When no server answers, a test that needs it skips with the
reason, unless DCP_REQUIRE_POSTGRES is set (CI), where it fails instead. Each suite makes
fresh databases on it (its own `pg_dsn` fixture) and drops them with `drop_database`.
"""

from __future__ import annotations

import os
import time

import psycopg
import pytest

DEFAULT_DSN = "postgresql://dcp_test:dcp_test@127.0.0.1:5432/dcp_test"


def server_dsn() -> str:
    """The server's DSN once it answers; skip (fail under DCP_REQUIRE_POSTGRES) otherwise."""
    dsn = os.environ.get("DCP_TEST_PG_DSN", DEFAULT_DSN)
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        reason = (
            f"no PostgreSQL at DCP_TEST_PG_DSN={dsn!r} ({str(e).strip().splitlines()[0]}); "
            'start one with `eval "$(scripts/ci/postgres.sh)"`'
        )
        if os.environ.get("DCP_REQUIRE_POSTGRES"):
            pytest.fail(reason + " (DCP_REQUIRE_POSTGRES is set)")
        pytest.skip(reason)
    return dsn


def drop_database(server: str, name: str) -> None:
    """DROP DATABASE ... WITH (FORCE), retried: WITH (FORCE) ends our own sessions, and an
    autovacuum worker on it (a superuser process the test role may not end) is gone within
    moments."""
    for attempt in range(100):
        try:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse):
            if attempt == 99:
                raise
            time.sleep(0.1)
