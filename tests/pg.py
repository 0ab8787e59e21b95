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


def database_url(server_dsn_: str, dbname: str) -> str:
    """A postgresql:// URL for database `dbname` on the server of `server_dsn_` (a URL, so that
    code telling a PostgreSQL ledger from a SQLite path by its scheme takes it for what it is)."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    p = {k: str(v) for k, v in conninfo_to_dict(server_dsn_).items()}
    auth = quote(p.get("user", ""), safe="")
    if "password" in p:
        auth += ":" + quote(p["password"], safe="")
    host = p.get("host", "localhost")
    return f"postgresql://{auth}@{host}:{p.get('port', '5432')}/{quote(dbname, safe='')}"


def create_database(server_dsn_: str, prefix: str) -> tuple[str, str]:
    """A fresh, empty database on the server: (its name, its URL). Drop it with
    drop_database(server_dsn_, name)."""
    import uuid

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn_, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, database_url(server_dsn_, name)
