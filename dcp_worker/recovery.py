"""At start, after a crash or a restart: what became of the containers the worker left.

Every container labelled with this provider id is one of three: its result is already spooled
(remove it); it ended while the worker was away (spool its result, with the outcome its intent
file names, else `completed`; remove it); or it still runs (re-adopt it: the worker supervises
it to its deadline, and the first poll stops it if its lease is gone).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog

from dcp_worker.api import LeasedJob
from dcp_worker.container import (
    LABEL_ATTEMPT,
    LABEL_GPU_COUNT,
    LABEL_GPUS,
    LABEL_JOB,
    LABEL_MAX_S,
    ContainerState,
    DockerRunner,
)
from dcp_worker.devices import DevicePool
from dcp_worker.intents import Intents
from dcp_worker.jobs import RunningJob, build_result
from dcp_worker.spool import Spool

log = structlog.get_logger("dcp_worker")


@dataclass
class Recovered:
    """What recovery found: attempts that ended (never to run again) and jobs to re-adopt."""

    ended: list[tuple[str, int]] = field(default_factory=list)
    adopted: list[RunningJob] = field(default_factory=list)


class Recovery:
    def __init__(
        self, docker: DockerRunner, spool: Spool, intents: Intents, pool: DevicePool
    ) -> None:
        self.docker = docker
        self.spool = spool
        self.intents = intents
        self.pool = pool

    async def run(self, provider_id: str) -> Recovered:
        """Look at every container of this provider; one that fails is left for the next
        start, and the others are still recovered."""
        found = Recovered()
        for st in await self.docker.managed(provider_id):
            try:
                await self._one(st, found)
            except Exception as e:
                log.exception("recovery_failed", container_id=st.container_id[:12], error=str(e))
        return found

    async def _one(self, st: ContainerState, found: Recovered) -> None:
        job_id = st.labels.get(LABEL_JOB, "")
        try:
            attempt = int(st.labels.get(LABEL_ATTEMPT, ""))
            max_s = int(st.labels.get(LABEL_MAX_S, "1800"))
        except ValueError:
            return  # not a container this worker made: leave it alone
        ids = {"job_id": job_id, "attempt": attempt}
        if self.spool.has(job_id, attempt):
            log.info("recovered_already_spooled", **ids)
            await self.docker.remove(st.container_id)
            found.ended.append((job_id, attempt))
            return
        if not st.running:
            outcome = self.intents.read(job_id, attempt) or "completed"
            error = "worker_shutdown" if outcome == "failed" else None
            if st.started_at is None:  # created, never started: the platform requeues it
                outcome, error = "failed", "worker_restarted_before_start"
            output = await self.docker.output(st.container_id)
            ran = st if st.started_at is not None else None  # no exit code or runtime
            result = build_result(job_id, attempt, outcome, ran, output, error)
            await asyncio.to_thread(self.spool.put, result)
            self.intents.clear(job_id, attempt)
            await self.docker.remove(st.container_id)
            found.ended.append((job_id, attempt))
            log.info("recovered_ended_job", outcome=outcome, **ids)
            return
        try:
            gpu_count = int(st.labels.get(LABEL_GPU_COUNT, "1"))
        except ValueError:
            gpu_count = 1
        job = LeasedJob(
            job_id=job_id,
            attempt=attempt,
            image="",
            command=None,
            max_duration_seconds=max_s,
            gpu_count=gpu_count,
        )
        devices = [d for d in st.labels.get(LABEL_GPUS, "").split(",") if d]
        rj = RunningJob(
            job=job,
            grant=self.pool.adopt(gpu_count, devices),
            container_id=st.container_id,
            adopted=True,
        )
        log.info("recovered_running_job", **ids)
        found.adopted.append(rj)
