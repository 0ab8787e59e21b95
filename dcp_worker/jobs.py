"""One job, from its lease to its spooled result: create, start, report, supervise, kill.

A job that cannot run (image absent or not allowed) or meets an infrastructure fault still
ends in a spooled result, `failed`, which the platform requeues. Nothing here decides which
jobs run; the worker's poll loop does (worker.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from dcp_worker.api import ApiClient, LeasedJob
from dcp_worker.backoff import Backoff
from dcp_worker.container import ContainerState, DockerRunner, Output
from dcp_worker.delivery import Delivery
from dcp_worker.devices import Grant
from dcp_worker.errors import ApiError, ApiUnavailable, JobRefused
from dcp_worker.intents import Intents
from dcp_worker.metrics import WorkerMetrics
from dcp_worker.spool import Spool

log = structlog.get_logger("dcp_worker")

KILL_WAIT_S = 30.0
MAX_DOCKER_WAIT_ERRORS = 10
MAX_START_REPORTS = 20
# How long a job that has ended waits for its start report still in flight.
START_REPORT_GRACE_S = 5.0


@dataclass(eq=False, kw_only=True)
class RunningJob:
    """A job this worker runs (or has re-adopted after a restart)."""

    job: LeasedJob
    grant: Grant
    container_id: str | None = None
    adopted: bool = False
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: str = ""  # cancelled | lease_lost | shutdown
    task: asyncio.Task[None] | None = None

    def request_stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            self.stop.set()


def build_result(
    job_id: str,
    attempt: int,
    outcome: str,
    state: ContainerState | None,
    output: Output | None,
    error: str | None = None,
) -> dict[str, Any]:
    """The job-result body (SPEC section 5). Runtime comes from Docker's own clock, rounded
    up to the millisecond, so the ceil(runtime) that settlement bills is never cut short."""
    runtime = state.runtime_seconds if state else None
    body: dict[str, Any] = {
        "job_id": job_id,
        "attempt": attempt,
        "outcome": outcome,
        "exit_code": state.exit_code if state else None,
        "runtime_seconds": math.ceil(runtime * 1000) / 1000 if runtime is not None else 0.0,
        "stdout": output.stdout if output else "",
        "stderr": output.stderr if output else "",
        "truncated": output.truncated if output else False,
    }
    if error:
        body["error"] = error
    return body


class JobRunner:
    """Runs jobs with the worker's Docker, API, spool and intents; holds no job of its own."""

    def __init__(
        self,
        *,
        api: ApiClient,
        docker: DockerRunner,
        spool: Spool,
        intents: Intents,
        delivery: Delivery,
        metrics: WorkerMetrics,
    ) -> None:
        self.api = api
        self.docker = docker
        self.spool = spool
        self.intents = intents
        self.delivery = delivery
        self.metrics = metrics

    async def run(self, rj: RunningJob, provider_id: str) -> None:
        """The whole job: its result is spooled (and delivery woken) however it ends."""
        job = rj.job
        structlog.contextvars.bind_contextvars(job_id=job.job_id, attempt=job.attempt)
        started = time.monotonic()
        result: dict[str, Any] | None = None
        spooled = False
        try:
            result = await self._run(rj, provider_id)
            spooled = True
        except JobRefused as e:
            log.warning("job_refused", code=e.code, error=str(e))
            result = build_result(job.job_id, job.attempt, "failed", None, None, e.code)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # an infrastructure fault: the platform requeues the job
            log.error("job_infra_fault", error=f"{type(e).__name__}: {e}")
            result = build_result(
                job.job_id, job.attempt, "failed", None, None, f"worker_error: {type(e).__name__}"
            )
            if rj.container_id:
                with contextlib.suppress(Exception):
                    await self.docker.remove(rj.container_id)
        finally:
            if result is not None:
                try:
                    await self._finish(rj, result, spooled, time.monotonic() - started)
                except OSError as e:  # the spool's disk failed: say so loudly, keep running
                    log.critical("result_not_spooled", error=str(e), outcome=result["outcome"])

    async def _finish(
        self, rj: RunningJob, result: dict[str, Any], spooled: bool, took_s: float
    ) -> None:
        if not spooled:
            await asyncio.to_thread(self.spool.put, result)
        self.intents.clear(rj.job.job_id, rj.job.attempt)
        self.delivery.wake()
        self.metrics.jobs.labels(result["outcome"]).inc()
        log.info(
            "job_ended",
            outcome=result["outcome"],
            exit_code=result["exit_code"],
            runtime_seconds=result["runtime_seconds"],
            truncated=result["truncated"],
            took_s=round(took_s, 3),
        )

    async def _run(self, rj: RunningJob, provider_id: str) -> dict[str, Any]:
        """Create and start the container (unless re-adopted), supervise it, read the result."""
        job = rj.job
        capture: asyncio.Task[Output] | None = None
        if rj.container_id is None:
            taken = time.monotonic()
            await self.docker.check_image(job.image)
            config = self.docker.container_config(job, provider_id, rj.grant.devices)
            rj.container_id = await self.docker.create(config, self.docker.container_name(job))
            follow_s = job.max_duration_seconds + KILL_WAIT_S + 60
            stream = None
            try:
                stream = await self.docker.attach(rj.container_id)
            except Exception as e:  # the logs the driver kept are the fallback
                log.warning("job_attach_failed", error=f"{type(e).__name__}: {e}")
            else:
                capture = asyncio.create_task(self.docker.read_attached(stream, follow_s))
            try:
                await self.docker.start(rj.container_id)
            except BaseException:
                if capture is not None:
                    capture.cancel()
                if stream is not None:
                    await stream.close()  # idempotent; the cancelled reader may not have run
                raise
            self.metrics.container_start.observe(time.monotonic() - taken)
            log.info("job_container_started", container_id=rj.container_id[:12])
        reporter = asyncio.create_task(self._report_started(rj))
        try:
            outcome = await self._supervise(rj)
        finally:
            # A job that ends within moments of starting must still be reported started before
            # its result: give a report in flight a short while instead of cancelling it.
            if not reporter.done():
                await asyncio.wait({reporter}, timeout=START_REPORT_GRACE_S)
            reporter.cancel()
            if capture is not None and not capture.done():
                # The container has stopped: its stream ends within moments.
                await asyncio.wait({capture}, timeout=KILL_WAIT_S)
                capture.cancel()
        state = await self.docker.inspect(rj.container_id)
        output = await self._followed_output(rj.container_id, capture)
        error = "worker_shutdown" if outcome == "failed" else None
        result = build_result(job.job_id, job.attempt, outcome, state, output, error)
        # Spool first, then remove: a crash in between finds the spooled result on restart.
        await asyncio.to_thread(self.spool.put, result)
        log.info("job_output_captured", sha256=output.sha256)
        try:
            await self.docker.remove(rj.container_id)
        except Exception as e:  # the result is safe; the next start removes the container
            log.warning("job_container_not_removed", error=f"{type(e).__name__}: {e}")
        return result

    async def _followed_output(self, cid: str, capture: asyncio.Task[Output] | None) -> Output:
        """The output followed live, or (re-adopted job, broken stream) what Docker kept."""
        if capture is not None and capture.done() and not capture.cancelled():
            if capture.exception() is None:
                return capture.result()
            log.warning("job_output_follow_failed", error=repr(capture.exception()))
        return await self.docker.output(cid)

    async def _report_started(self, rj: RunningJob) -> None:
        backoff = Backoff(0.5, 30.0)
        for _ in range(MAX_START_REPORTS):
            try:
                await self.api.report_started(rj.job.job_id, rj.job.attempt)
                log.info("job_start_reported")
                return
            except ApiError as e:
                if e.status == 409 and e.code == "lease_lost":
                    log.warning("job_lease_lost_at_start")
                    rj.request_stop("lease_lost")
                    return
                if e.definite:  # e.g. already started after a restart: nothing to redo
                    log.info("job_start_not_accepted", status=e.status, code=e.code)
                    return
            except ApiUnavailable as e:
                log.warning("job_start_report_failed", error=str(e))
            await backoff.wait()

    async def _deadline_left(self, rj: RunningJob) -> float:
        assert rj.container_id is not None
        state = await self.docker.inspect(rj.container_id)
        if state.started_at is None:
            return float(rj.job.max_duration_seconds)
        ran = time.time() - state.started_at.timestamp()
        return rj.job.max_duration_seconds - ran

    async def _supervise(self, rj: RunningJob) -> str:
        """Wait for the container to end, its deadline, or a stop; return the outcome."""
        assert rj.container_id is not None
        cid = rj.container_id
        # An engine hiccup (inspect or wait failing) is looked at again, a bounded number of
        # times: 2 s, 4 s, ... up to 30 s apart.
        retry = Backoff(2.0, 30.0)
        while True:
            try:
                left = await self._deadline_left(rj)
            except Exception as e:
                if retry.failures >= MAX_DOCKER_WAIT_ERRORS:
                    raise
                log.warning("job_inspect_failed", error=f"{type(e).__name__}: {e}")
                await retry.wait()
                continue
            waiter = asyncio.create_task(self.docker.wait(cid, max(0.0, left)))
            stopper = asyncio.create_task(rj.stop.wait())
            try:
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                if not waiter.done():
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await waiter
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                if waiter.result():
                    return "completed"
                outcome = "timed_out"
                rj.stop_reason = rj.stop_reason or "deadline"
                break
            if rj.stop.is_set():
                outcome = {"cancelled": "cancelled", "lease_lost": "cancelled"}.get(
                    rj.stop_reason, "failed"
                )
                break
            if retry.failures >= MAX_DOCKER_WAIT_ERRORS:  # the wait itself failed
                raise RuntimeError(f"waiting on the container failed: {waiter.exception()}")
            await retry.wait()
        job = rj.job
        await asyncio.to_thread(
            self.intents.record, job.job_id, job.attempt, outcome, rj.stop_reason
        )
        log.info("job_killing", outcome=outcome, reason=rj.stop_reason)
        await self.docker.kill(cid)
        await self.docker.wait(cid, KILL_WAIT_S)
        return outcome
