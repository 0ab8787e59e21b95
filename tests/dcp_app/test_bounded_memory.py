"""Ended jobs leave memory (docs/design.md, "Bounded memory"): the service's state follows
live work, not history, and every decision about an ended job answers as it did when every
job stayed in memory. Real SQLite files, the real read models telling whose a job is."""

import itertools
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dcp_app.queries import Queries
from dcp_app.service import LedgerService
from dcp_events.catalogue import ContainerSpec, GpuRequirements
from dcp_events.sqlite_store import SqliteEventStore
from dcp_projections.errors import DomainError
from dcp_projections.fold import check_all
from dcp_projections.state import ENDED
from tests.dcp_app.conftest import IMAGE, SETTINGS, Clock

S = 1_000_000


class Ledger:
    def __init__(self, path: Path, store, svc: LedgerService, queries: Queries, clock) -> None:
        self.path, self.store, self.svc, self.queries, self.clock = path, store, svc, queries, clock
        self.ended_then: list[str] = []

    async def close(self) -> None:
        await self.svc.close()
        await self.queries.close()
        await self.store.close()


async def open_ledger(path: Path, clock: Clock, bounded: bool, ended: int = 0) -> Ledger:
    store = await SqliteEventStore.open(path)
    queries = await Queries.open(path)
    counter = itertools.count()
    svc = await LedgerService.open(
        store,
        SETTINGS,
        clock=clock,
        ids=lambda prefix: f"{prefix}-{next(counter):04d}",
        job_owner=queries.job_owner if bounded else None,
        ended_in_memory=ended,
    )
    return Ledger(path, store, svc, queries, clock)


@pytest.fixture
async def pair(tmp_path) -> AsyncIterator[tuple[Ledger, Ledger]]:
    """Two ledgers fed the same commands: one keeps no ended job, one keeps them all."""
    bounded = await open_ledger(tmp_path / "bounded.db", Clock(), True, ended=0)
    full = await open_ledger(tmp_path / "full.db", Clock(), False)
    yield bounded, full
    await bounded.close()
    await full.close()


def spec() -> ContainerSpec:
    return ContainerSpec(image=IMAGE, command=("python", "train.py"))


async def outcome(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except DomainError as e:
        return (type(e).__name__, str(e))


async def scenario(led: Ledger) -> list[Any]:
    """Jobs that end in each way, then every decision that can be asked about an ended job."""
    svc, out = led.svc, []
    await svc.allow_image(IMAGE)
    rid = (await svc.register_renter("R", "r@example.sa")).renter_id
    other = (await svc.register_renter("O", "o@example.sa")).renter_id
    await svc.credit(rid, 100_000, "seed")
    pid = (await svc.register_provider("P", "p@example.sa", "H100", 4, 80)).provider_id
    await svc.approve_provider(pid)
    await svc.heartbeat(pid)

    async def submit(key: str | None = None) -> str:
        job = await svc.submit_job(
            rid, spec(), GpuRequirements(gpu_type="H100"), max_duration_seconds=600,
            idempotency_key=key,
        )  # fmt: skip
        return str(job.job_id)

    done, failed, cancelled = await submit("k-done"), await submit(), await submit()
    queued_cancel = await submit()
    await svc.claim_jobs(pid)
    for job_id in (done, failed, cancelled):
        await svc.start_job(pid, job_id, 1)
    led.clock.advance(120)
    report: Callable[..., Awaitable[Any]] = svc.report_result
    out.append(await report(pid, done, 1, "completed", exit_code=0, runtime_seconds=100))
    out.append(await report(pid, cancelled, 1, "cancelled", runtime_seconds=100))
    out.append(await svc.cancel_job(queued_cancel, rid))
    out.append(await report(pid, failed, 1, "failed", error="boom"))  # attempt 2 queued
    await svc.heartbeat(pid)
    await svc.claim_jobs(pid)
    await svc.start_job(pid, failed, 2)
    out.append(await report(pid, failed, 2, "failed", error="boom again"))  # failed for good
    led.ended_then = sorted(j.job_id for j in svc.state.jobs.values() if j.status in ENDED)

    # Every decision about an ended job, asked after it left memory (in the bounded ledger).
    out.append(await outcome(report(pid, done, 1, "completed", exit_code=0, runtime_seconds=100)))
    out.append(await outcome(report(pid, done, 1, "completed", exit_code=1, runtime_seconds=9)))
    out.append(await outcome(report(pid, failed, 1, "completed", runtime_seconds=9)))
    out.append(await outcome(report(pid, cancelled, 1, "cancelled", runtime_seconds=100)))
    out.append(await outcome(svc.start_job(pid, done, 1)))
    out.append(await outcome(svc.cancel_job(cancelled, rid)))
    out.append(await outcome(svc.cancel_job(queued_cancel)))
    out.append(await outcome(svc.cancel_job(done, rid)))
    out.append(await outcome(svc.cancel_job(done, other)))
    out.append(await outcome(svc.requeue_job(done)))
    out.append(await outcome(svc.requeue_job("job-nope")))
    out.append(await outcome(submit("k-done")))  # the key's job, ended: the same job
    out.append(await outcome(svc.requeue_job(failed)))  # live again, with a fresh hold
    await svc.heartbeat(pid)
    out.append(await svc.claim_jobs(pid))
    out.append(await outcome(report(pid, failed, 3, "completed", exit_code=0, runtime_seconds=5)))
    led.clock.advance(25 * 3600)  # past the idempotency window: the key names no job
    out.append(await outcome(submit("k-done")))
    recon = await svc.reconciliation()
    # the hash chain covers wall-clock recording times
    out.append(msgspec.structs.replace(recon, head_hash=""))
    return out


async def test_decisions_about_ended_jobs_answer_as_before(pair):
    bounded, full = pair
    got, want = await scenario(bounded), await scenario(full)
    assert got == want
    # The bounded ledger really decided on jobs it had let go of, and answered with content.
    assert bounded.ended_then == [] and full.ended_then == [f"job-{i:04d}" for i in range(3, 7)]
    assert want[5] == want[0] and want[5].status == "completed"  # repeated result
    assert [want[i][0] for i in (6, 7, 9, 12, 13, 14, 15)] == [
        "Conflict",  # another result for an attempt already reported
        "Conflict",  # a late result for an attempt that was reported
        "InvalidTransition",  # start of an ended job
        "InvalidTransition",  # cancel of a completed job
        "NotFound",  # another renter's job
        "InvalidTransition",  # requeue of a completed job
        "NotFound",
    ]
    assert want[8].status == want[10].status == want[11].status == "cancelled"
    assert want[16] == want[0].job_id  # the key's job, though it ended and left memory
    assert want[17].status == "queued" and want[18][0].attempt == 3
    assert want[19].status == "completed" and want[20] != want[0].job_id
    assert want[-1].invariants_ok and want[-1].sum_halala == 0


async def test_a_restart_folds_a_requeue_of_a_job_no_longer_in_memory(pair):
    bounded, _ = pair
    await scenario(bounded)
    before = bounded.svc.state
    await bounded.svc.close()
    svc = await LedgerService.open(
        bounded.store, SETTINGS, clock=bounded.clock, job_owner=bounded.queries.job_owner,
        ended_in_memory=0,
    )  # fmt: skip
    bounded.svc = svc
    check_all(svc.state)
    assert svc.state.balances == before.balances
    assert svc.state.jobs.keys() == before.jobs.keys()
    assert list(svc.state.queue) == list(before.queue)


async def test_memory_stays_flat_while_ended_jobs_accumulate(tmp_path):
    """Waves of jobs run to the end: the jobs, keys and queue in memory stay at the live ones
    plus the cap, and the Python heap does not grow with the jobs that ended."""
    clock = Clock()
    led = await open_ledger(tmp_path / "dcp.db", clock, True, ended=20)
    svc = led.svc
    try:
        await svc.allow_image(IMAGE)
        rid = (await svc.register_renter("R", "r@example.sa")).renter_id
        await svc.credit(rid, 10**9, "seed")
        pid = (await svc.register_provider("P", "p@example.sa", "H100", 8, 80)).provider_id
        await svc.approve_provider(pid)

        async def wave(n: int, key: str) -> None:
            for i in range(n):
                await svc.submit_job(
                    rid, spec(), GpuRequirements(gpu_type="H100"), idempotency_key=f"{key}{i}"
                )
            while svc.state.queue:
                await svc.heartbeat(pid, running_job_ids=sorted(svc.state.providers[pid].leased))
                for lease in await svc.claim_jobs(pid):
                    await svc.report_result(
                        pid, lease.job_id, lease.attempt, "completed", runtime_seconds=1
                    )
            clock.advance(25 * 3600)  # the next wave's keys expire this wave's

        await wave(100, "a")
        tracemalloc.start()
        await wave(100, "b")
        base, _ = tracemalloc.get_traced_memory()
        sizes = []
        for w in "cdef":
            await wave(100, w)
            sizes.append((len(svc.state.jobs), len(svc.state.ended), len(svc.state.submit_keys)))
        grown = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        assert sizes == [(20, 20, 100)] * 4
        # 400 more jobs ended; each took ~2 KB in memory when all stayed (issue 11).
        assert grown < 400 * 2_000 / 4, f"heap grew {grown} bytes over 400 ended jobs"
        recon = await svc.reconciliation()
        assert recon.invariants_ok and recon.events > 600 * 3
    finally:
        await led.close()
