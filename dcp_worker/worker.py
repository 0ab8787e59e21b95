"""The worker's orchestration: start-up, the heartbeat, GPU and poll loops, drain at stop.

Each loop is its own task, so a slow Docker call or a busy job never delays a heartbeat, and
each waits on the stop event with a bounded sleep. What the loops call lives beside this file:
devices.py (slots and GPUs), jobs.py (one job), delivery.py (results out of the spool),
intents.py (why a container was killed), recovery.py (containers found at start),
readiness.py (Docker, disk and GPUs), backoff.py (the one retry delay).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

from dcp_worker import __version__
from dcp_worker.api import ApiClient, HeartbeatAnswer, LeasedJob, Registration, parse_job
from dcp_worker.backoff import Backoff
from dcp_worker.container import DockerRunner
from dcp_worker.delivery import Delivery
from dcp_worker.devices import DevicePool
from dcp_worker.errors import ApiError, ApiReplyInvalid, ApiUnavailable, NotReadyError
from dcp_worker.gpu import GpuInventory, discover
from dcp_worker.intents import Intents
from dcp_worker.jobs import KILL_WAIT_S, JobRunner, RunningJob
from dcp_worker.metrics import WorkerMetrics
from dcp_worker.readiness import Readiness
from dcp_worker.recovery import Recovery
from dcp_worker.settings import WorkerSettings
from dcp_worker.spool import Spool, write_atomic

log = structlog.get_logger("dcp_worker")

FLUSH_ON_EXIT_S = 10.0
MAX_LISTED_JOBS = 1000  # the API refuses a heartbeat listing more
FINISHED_MEMORY = 4096  # how many ended (job, attempt) pairs are remembered, to not rerun them


async def _wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for `event` at most `timeout_s`; True if it is set. Uses asyncio.timeout, not
    wait_for, whose Python 3.11 version can swallow a cancellation that races its timeout."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()


class Worker:
    """The provider worker. `run(stop)` returns when `stop` is set and the drain is over."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        discover_gpus: Callable[[], GpuInventory] = discover,
    ) -> None:
        self.s = settings
        self.metrics = WorkerMetrics()
        self.api = ApiClient(
            settings.api_url,
            settings.provider_key,
            settings.http_timeout_s,
            on_error=self.metrics.api_error,
        )
        self.docker = DockerRunner(settings)
        self.spool = Spool(settings.state_dir / "spool")
        self.intents = Intents(settings.state_dir / "intents")
        self.pool = DevicePool()
        self.delivery = Delivery(self.api, self.spool)
        self.jobs = JobRunner(
            api=self.api,
            docker=self.docker,
            spool=self.spool,
            intents=self.intents,
            delivery=self.delivery,
            metrics=self.metrics,
        )
        self.readiness = Readiness(settings, self.docker, self.metrics, discover_gpus)
        self.provider_id = ""
        self.running: dict[str, RunningJob] = {}
        self.finished: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.draining = False
        self._stop = asyncio.Event()
        self.heartbeats: deque[float] = deque(maxlen=10_000)  # wall times of sent heartbeats
        self._provider_flags: tuple[object, ...] = ()
        self.metrics.watch(lambda: len(self.spool.list()), lambda: len(self.running))

    @property
    def ready(self) -> bool:
        return self.readiness.ready

    # ----- the whole life -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> int:
        """Get ready, recover, run the loops until `stop`, then drain. Returns an exit code."""
        self._stop = stop
        served = None
        if self.s.metrics_port is not None:
            try:
                served, _ = self.metrics.serve(self.s.metrics_port)
            except OSError as e:  # the port is taken: say so rather than run unobserved
                log.error("metrics_port_unavailable", port=self.s.metrics_port, error=str(e))
                await self.api.aclose()
                await self.docker.close()
                return 2
            log.info("worker_metrics_served", port=self.s.metrics_port)
        try:
            if not await self._start_up():
                return 0 if stop.is_set() else 1  # stopped while waiting, or refused
            hb = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
            gpu = asyncio.create_task(self.readiness.gpu_loop(), name="gpu")
            delivery = asyncio.create_task(self.delivery.run(), name="delivery")
            poll = asyncio.create_task(self._poll_loop(), name="poll")
            await stop.wait()
            log.info("worker_draining", running=len(self.running), drain_s=self.s.drain_s)
            self.draining = True
            poll.cancel()
            await self._drain()
            await self.delivery.flush(FLUSH_ON_EXIT_S)
            for t in (hb, gpu, delivery, poll):
                t.cancel()
            await asyncio.gather(hb, gpu, delivery, poll, return_exceptions=True)
            log.info("worker_stopped", pending_results=len(self.spool.list()))
            return 0
        finally:
            if served is not None:
                await asyncio.to_thread(served.shutdown)
                served.server_close()
            await self.api.aclose()
            await self.docker.close()

    async def _start_up(self) -> bool:
        """Wait (until stop) for readiness and the provider's registration; then recover."""
        backoff = Backoff(1.0, 30.0, sleep=lambda s: _wait_event(self._stop, s))
        while not self._stop.is_set():
            try:
                await self.readiness.refresh_gpus()
                await self.readiness.check(force=True)
                me = await self._registration()
                break
            except ApiError as e:
                if e.definite:
                    log.error("worker_refused_by_api", status=e.status, code=e.code)
                    return False
                log.warning("worker_not_ready", reason=str(e))
            except (ApiUnavailable, NotReadyError, OSError, TimeoutError, ValueError) as e:
                log.warning("worker_not_ready", reason=str(e) or type(e).__name__)
            await backoff.wait()
        else:
            return False
        self.provider_id = me.provider_id
        if self.s.gpus == "none":
            self.pool.configure(max(1, me.gpu_count), None)
        else:
            devices = [d.uuid for d in self.readiness.inventory.devices]
            self.pool.configure(len(devices), devices)
        log.info(
            "worker_started",
            provider_id=self.provider_id,
            gpus=self.s.gpus,
            capacity=self.pool.capacity,
            gpu_source=self.readiness.inventory.source,
            version=__version__,
        )
        recovered = await Recovery(self.docker, self.spool, self.intents, self.pool).run(
            self.provider_id
        )
        for key in recovered.ended:
            self._remember_finished(key)
        for rj in recovered.adopted:
            self._launch(rj)
        self.delivery.wake()
        return True

    async def _registration(self) -> Registration:
        """GET /api/providers/me, cached in the state directory, so a worker restarted while
        the API is down still recovers and supervises its containers (and kills them at their
        deadlines); it reports once the API is back."""
        cache = self.s.state_dir / "provider.json"
        try:
            me = await self.api.me()
        except ApiUnavailable:
            if not cache.exists():
                raise
            try:
                me = msgspec.json.decode(cache.read_bytes(), type=Registration)
            except msgspec.DecodeError as e:
                raise ApiReplyInvalid(f"{cache} does not hold a registration: {e}") from e
            log.warning("api_unavailable_using_cached_registration")
        else:
            write_atomic(cache, msgspec.json.encode(me))
        return me

    # ----- heartbeat ------------------------------------------------------------------------

    def heartbeat_payload(self) -> dict[str, Any]:
        """SPEC section 4: GPU inventory, running job ids, daemon version, accepting_jobs."""
        # Jobs whose results wait in the spool are listed too: their leases must not run out
        # while delivery retries, or a finished job would be run again elsewhere.
        listed = sorted(set(self.running) | self.spool.pending_job_ids())
        return {
            "gpus": self.readiness.inventory.as_payload(),
            "running_job_ids": listed[:MAX_LISTED_JOBS],
            "daemon_version": __version__,
            "accepting_jobs": self.readiness.ready and not self.draining,
        }

    async def _heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        last_ok: float | None = None
        while True:
            try:
                reply = await self.api.heartbeat(self.heartbeat_payload())
                self.heartbeats.append(time.time())
                now = loop.time()
                if last_ok is not None:
                    self.metrics.heartbeat_interval.observe(now - last_ok)
                last_ok = now
                self.metrics.heartbeats.inc()
                self._on_heartbeat_reply(reply)
            except (ApiError, ApiUnavailable) as e:
                log.warning("heartbeat_failed", error=str(e))
            except Exception as e:  # a bug must not end the heartbeat of a months-long daemon
                log.exception("heartbeat_error", error=f"{type(e).__name__}: {e}")
            j = self.s.heartbeat_jitter
            next_at += self.s.heartbeat_s * random.uniform(1 - j, 1 + j)
            now = loop.time()
            if next_at < now:  # a slow reply: keep the rhythm from now, never burst
                next_at = now
            await asyncio.sleep(next_at - now)

    def _on_heartbeat_reply(self, reply: HeartbeatAnswer) -> None:
        flags = (reply.approval_status, reply.paused, reply.suspended)
        if flags != self._provider_flags:
            # Logged on change only: why no job comes (pending approval, paused, suspended).
            self._provider_flags = flags
            log.info(
                "provider_state", approval_status=flags[0], paused=flags[1], suspended=flags[2]
            )
        for job_id in reply.cancel_jobs:
            rj = self.running.get(job_id)
            if rj is not None:
                log.info("job_cancel_requested", job_id=rj.job.job_id, attempt=rj.job.attempt)
                rj.request_stop("cancelled")

    # ----- polling --------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while not self.draining:
            try:
                if await self.readiness.check():
                    raw = await self.api.leased_jobs()
                    self._on_leases(raw)
            except NotReadyError as e:
                log.warning("worker_not_ready", reason=str(e))
            except (ApiError, ApiUnavailable) as e:
                log.warning("poll_failed", error=str(e))
            except Exception as e:  # e.g. a full disk under the spool: try again next round
                log.exception("poll_error", error=f"{type(e).__name__}: {e}")
            await _wait_event(self._stop, self.s.poll_s)

    def _on_leases(self, raw: list[msgspec.Raw]) -> None:
        """Start new leases that fit; stop running jobs whose lease is gone."""
        leased: dict[str, LeasedJob] = {}
        for item in raw:
            try:
                job = parse_job(item)
            except ApiReplyInvalid as e:
                log.error("job_unreadable", error=str(e))
                continue
            leased[job.job_id] = job
        for job_id, rj in list(self.running.items()):
            now = leased.get(job_id)
            if now is None or now.attempt != rj.job.attempt:
                # Not leased to us any more (cancelled, expired, requeued): stop it. Its result
                # still goes out as `cancelled`; a lost lease answers 409 and it is dropped.
                log.warning("job_lease_gone", job_id=job_id, attempt=rj.job.attempt)
                rj.request_stop("lease_lost")
        for job in leased.values():
            if job.job_id in self.running or job.key in self.finished:
                continue
            if self.spool.has(job.job_id, job.attempt):
                continue
            grant = self.pool.acquire(job.gpu_count)
            if grant is None:
                continue  # the platform only assigns what fits; wait for a slot
            self._launch(RunningJob(job=job, grant=grant))

    def _launch(self, rj: RunningJob) -> None:
        self.running[rj.job.job_id] = rj
        rj.task = asyncio.create_task(self._job_task(rj), name=f"job-{rj.job.job_id}")

    async def _job_task(self, rj: RunningJob) -> None:
        try:
            await self.jobs.run(rj, self.provider_id)
        finally:
            self.running.pop(rj.job.job_id, None)
            self.pool.release(rj.grant)
            self._remember_finished(rj.job.key)

    def _remember_finished(self, key: tuple[str, int]) -> None:
        self.finished[key] = None
        while len(self.finished) > FINISHED_MEMORY:
            self.finished.popitem(last=False)

    # ----- drain ----------------------------------------------------------------------------

    async def _drain(self) -> None:
        tasks = [rj.task for rj in self.running.values() if rj.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.s.drain_s)
        for rj in list(self.running.values()):
            log.warning("job_killed_at_shutdown", job_id=rj.job.job_id, attempt=rj.job.attempt)
            rj.request_stop("shutdown")
        tasks = [rj.task for rj in self.running.values() if rj.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=KILL_WAIT_S + self.s.docker_timeout_s * 3)
