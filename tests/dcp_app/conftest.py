"""Fixtures for the application service on real stores: `env` runs a test on each backend
(SQLite on a file under tmp_path, PostgreSQL in a fresh database of its own: tests/pg.py),
`sqlite_env` on SQLite only (for what is a SQLite specific)."""

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dcp_app import readmodel, readmodel_pg
from dcp_app.queries import Queries
from dcp_app.readside import ALL_TABLES
from dcp_app.service import LedgerService
from dcp_events.catalogue import ContainerSpec, GpuRequirements
from dcp_events.opener import is_postgres
from dcp_events.postgres_store import PostgresEventStore
from dcp_events.sqlite_store import SqliteEventStore, open_connection
from dcp_projections.settings import Settings
from tests.pg import create_database, drop_database

S = 1_000_000
IMAGE = "dcp/pytorch:2.3"


class Clock:
    """A clock the test moves by hand (microseconds)."""

    def __init__(self) -> None:
        self.now_us = 1_750_000_000 * S

    def __call__(self) -> int:
        return self.now_us

    def advance(self, seconds: float) -> None:
        self.now_us += int(seconds * S)


async def open_store(db: str | Path) -> Any:
    """The event store of the ledger named by `db` (a path or a postgresql:// URL)."""
    if is_postgres(db):
        return await PostgresEventStore.open(str(db))
    return await SqliteEventStore.open(db)


async def read_model_contents(db: str | Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every read-model table of `db` (and projection_state), each sorted: for comparisons."""
    names = (*ALL_TABLES, "projection_state")
    if is_postgres(db):
        return {t: await readmodel_pg.table_contents(str(db), t) for t in names}
    conn = open_connection(db)
    try:
        return {t: readmodel.table_contents(conn, t) for t in names}
    finally:
        conn.close()


@dataclass
class Env:
    path: Path  # SQLite: the ledger's file; PostgreSQL: a scratch path under tmp_path
    store: Any  # SqliteEventStore | PostgresEventStore
    svc: LedgerService
    clock: Clock
    queries: Queries
    db: str  # what names the ledger: the file's path or the database's URL

    @property
    def backend(self) -> str:
        return "postgres" if is_postgres(self.db) else "sqlite"

    async def rebuild_in_place(self, until_seq: int | None = None) -> Any:
        """Rebuild the read models from the log, into their own tables (no writer meanwhile)."""
        if is_postgres(self.db):
            return await readmodel_pg.rebuild(self.db, until_seq)
        return readmodel.rebuild(self.db, until_seq)

    async def rebuild_equals_live(self) -> bool:
        """Whether a rebuild from the log gives exactly the live read-model tables."""
        live = await read_model_contents(self.db)
        await self.rebuild_in_place()
        return live == await read_model_contents(self.db)

    async def renter(self, credit: int = 100_000) -> str:
        r = await self.svc.register_renter("Renter", "renter@example.sa")
        if credit:
            await self.svc.credit(r.renter_id, credit, f"seed-{r.renter_id}")
        return str(r.renter_id)

    async def provider(self, gpu: str = "H100", count: int = 1) -> str:
        p = await self.svc.register_provider("Box", "box@example.sa", gpu, count, 80)
        await self.svc.approve_provider(p.provider_id)
        await self.svc.heartbeat(p.provider_id)
        return str(p.provider_id)

    async def submit(self, renter_id: str, duration: int = 3600, **kw) -> dict:
        return await self.svc.submit_job(
            renter_id,
            ContainerSpec(image=IMAGE, command=("python", "train.py")),
            GpuRequirements(gpu_type=kw.pop("gpu_type", "H100")),
            max_duration_seconds=duration,
            **kw,
        )


SETTINGS = Settings(lease_ttl_s=120, max_attempts=2, queue_timeout_s=3600)


async def _env(db: str, path: Path) -> AsyncIterator[Env]:
    store = await open_store(db)
    clock = Clock()
    svc = await LedgerService.open(store, SETTINGS, clock=clock)
    await svc.allow_image(IMAGE)
    queries = await Queries.open(db)
    yield Env(path, store, svc, clock, queries, db)
    await queries.close()
    await svc.close()
    await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    """A ledger service over a fresh log on each backend, an allowed image, and read
    queries."""
    path = tmp_path / "dcp.db"
    if request.param == "sqlite":
        async for e in _env(str(path), path):
            yield e
        return
    server = request.getfixturevalue("pg_server_dsn")
    name, url = create_database(server, "dcp_app")
    try:
        async for e in _env(url, path):
            yield e
    finally:
        drop_database(server, name)


@pytest.fixture
async def sqlite_env(tmp_path: Path) -> AsyncIterator[Env]:
    """`env` on SQLite only."""
    path = tmp_path / "dcp.db"
    async for e in _env(str(path), path):
        yield e


@pytest.fixture
async def postgres_env(tmp_path: Path, pg_server_dsn: str) -> AsyncIterator[Env]:
    """`env` on PostgreSQL only (for what only the PostgreSQL store has: its turns)."""
    name, url = create_database(pg_server_dsn, "dcp_app")
    try:
        async for e in _env(url, tmp_path / "dcp.db"):
            yield e
    finally:
        drop_database(pg_server_dsn, name)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """What names a fresh, empty ledger on each backend (nothing opened on it yet)."""
    if request.param == "sqlite":
        yield str(tmp_path / "empty.db")
        return
    server = request.getfixturevalue("pg_server_dsn")
    name, url = create_database(server, "dcp_app")
    try:
        yield url
    finally:
        drop_database(server, name)
