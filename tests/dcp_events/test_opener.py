"""dcp_events.opener: a path opens the SQLite log, a postgresql:// URL the PostgreSQL one, and
anything else is refused with a message that never shows a password."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcp_events.errors import StoreError
from dcp_events.opener import StoreTargetError, is_postgres, open_store, redact
from dcp_events.postgres_store import PostgresEventStore
from dcp_events.sqlite_store import SqliteEventStore
from tests.dcp_events.conftest import ev


@pytest.mark.parametrize("as_path", [True, False])
async def test_a_path_opens_sqlite(tmp_path: Path, as_path: bool) -> None:
    target = tmp_path / "ledger.db"
    store = await open_store(target if as_path else str(target))
    try:
        assert isinstance(store, SqliteEventStore)
        await store.append("s-1", 0, [ev(1)])
        assert (await store.head())[0] == 1
    finally:
        await store.close()
    assert target.exists()


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "PostgreSQL"])
async def test_a_url_opens_postgres(pg_dsn: str, scheme: str) -> None:
    url = scheme + pg_dsn[len("postgresql") :]
    store = await open_store(url)
    try:
        assert isinstance(store, PostgresEventStore)
        await store.append("s-1", 0, [ev(1)])
        assert (await store.head())[0] == 1
    finally:
        await store.close()


@pytest.mark.parametrize(
    "target", ["mysql://u:pw@h/db", "sqlite:///tmp/x.db", "http://example.com/ledger", "  "]
)
async def test_anything_else_is_refused(target: str) -> None:
    with pytest.raises(StoreTargetError) as info:
        await open_store(target)
    assert "pw" not in str(info.value)
    assert "postgresql://" in str(info.value)
    with pytest.raises(StoreTargetError):
        is_postgres(target)


def test_kinds() -> None:
    assert is_postgres("postgresql://h/db")
    assert is_postgres("postgres://u@h:5433/db?sslmode=require")
    assert not is_postgres("./dcp.db")
    assert not is_postgres("/var/lib/dcp/ledger:2026.db")
    assert not is_postgres(Path("postgresql://not-a-url-but-a-path"))


def test_redact_hides_the_password() -> None:
    assert redact("postgresql://alice:s3cret@db.example:5432/dcp") == (
        "postgresql://alice:***@db.example:5432/dcp"
    )
    assert redact("postgresql://alice@h/dcp?password=s3cret&sslmode=require") == (
        "postgresql://alice@h/dcp?password=***&sslmode=require"
    )
    assert redact("postgresql://h/dcp") == "postgresql://h/dcp"
    assert redact("./dcp.db") == "./dcp.db"


@pytest.mark.postgres
async def test_a_refused_login_does_not_show_the_password(pg_dsn: str) -> None:
    url = "postgresql://nobody_here:Wr0ngPassw0rd@" + pg_dsn.split("@", 1)[1]
    with pytest.raises(StoreError) as info:
        await open_store(url)
    assert "Wr0ngPassw0rd" not in str(info.value)
