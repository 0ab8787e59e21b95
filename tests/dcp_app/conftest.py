"""Fixtures for the application service: the real SQLite store on a file under tmp_path."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dcp_app.queries import Queries
from dcp_app.service import LedgerService
from dcp_events.catalogue import ContainerSpec, GpuRequirements
from dcp_events.sqlite_store import SqliteEventStore
from dcp_projections.settings import Settings

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


@dataclass
class Env:
    path: Path
    store: SqliteEventStore
    svc: LedgerService
    clock: Clock
    queries: Queries

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


@pytest.fixture
async def env(tmp_path) -> AsyncIterator[Env]:
    """A ledger service over a fresh log file, an allowed image, and read queries."""
    path = tmp_path / "dcp.db"
    store = await SqliteEventStore.open(path)
    clock = Clock()
    svc = await LedgerService.open(store, SETTINGS, clock=clock)
    await svc.allow_image(IMAGE)
    queries = await Queries.open(path)
    yield Env(path, store, svc, clock, queries)
    await queries.close()
    await svc.close()
    await store.close()
