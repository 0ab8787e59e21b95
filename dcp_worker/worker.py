"""The worker's loops: heartbeat, poll, jobs, delivery; recovery at start and drain at stop.

Each loop is its own task, so a slow Docker call or a busy job never delays a heartbeat, and
each waits on the stop event with a bounded sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from dcp_worker import __version__
from dcp_worker.api import ApiClient, LeasedJob, parse_job
from dcp_worker.container import (
    LABEL_ATTEMPT,
    LABEL_GPUS,
    LABEL_JOB,
    LABEL_MAX_S,
    ContainerState,
    DockerRunner,
    Output,
)
from dcp_worker.errors import ApiError, ApiUnavailable, JobRefused, NotReadyError
from dcp_worker.gpu import NO_GPUS, GpuInventory, discover
from dcp_worker.metrics import WorkerMetrics
from dcp_worker.preflight import GPU_DISCOVER_TIMEOUT_S, disk_problem, gpu_problem
from dcp_worker.settings import WorkerSettings
from dcp_worker.spool import Spool, _write_atomic

log = structlog.get_logger("dcp_worker")

GPU_REFRESH_S = 15.0  # inventory is read in a thread at this pace, never inside a heartbeat
READY_RECHECK_S = 30.0
DELIVERY_BATCH = 32
DELIVERY_BACKOFF_MAX_S = 60.0
FLUSH_ON_EXIT_S = 10.0
KILL_WAIT_S = 30.0
MAX_DOCKER_WAIT_ERRORS = 10
MAX_START_REPORTS = 20
# How long a job that has ended waits for its start report still in flight.
START_REPORT_GRACE_S = 5.0
MAX_LISTED_JOBS = 1000  # the API refuses a heartbeat listing more
FINISHED_MEMORY = 4096  # how many ended (job, attempt) pairs are remembered, to not rerun them


async def _wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for `event` at most `timeout_s`; True if it is set. Uses asyncio.timeout, not
    wait_for, whose Python 3.11 version can swallow a cancellation that races its timeout."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()


@dataclass(eq=False, kw_only=True)
class RunningJob:
    """A job this worker runs (or has re-adopted after a restart)."""

    job: LeasedJob
    slots: int
    devices: list[str]
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
        self.intents = settings.state_dir / "intents"
        self.intents.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._discover_gpus = discover_gpus
        self.inventory: GpuInventory = NO_GPUS
        self.provider_id = ""
        self.capacity = 0  # job slots: free GPUs, or the registered count in `none` mode
        self.running: dict[str, RunningJob] = {}
        self.finished: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.draining = False
        self.ready = False
        self._ready_checked = 0.0
        self._free_devices: list[str] = []
        self._delivery_wake = asyncio.Event()
        self._stop = asyncio.Event()
        self.heartbeats: deque[float] = deque(maxlen=10_000)  # wall times of sent heartbeats
        self._provider_flags: tuple[object, ...] = ()
        self.metrics.watch(lambda: len(self.spool.list()), lambda: len(self.running))

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
            gpu = asyncio.create_task(self._gpu_loop(), name="gpu")
            delivery = asyncio.create_task(self._delivery_loop(), name="delivery")
            poll = asyncio.create_task(self._poll_loop(), name="poll")
            await stop.wait()
            log.info("worker_draining", running=len(self.running), drain_s=self.s.drain_s)
            self.draining = True
            poll.cancel()
            await self._drain()
            await self._flush(FLUSH_ON_EXIT_S)
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
        """Wait (until stop) for readiness and the provider's registration; then recover.

        The registration is cached in the state directory, so a worker restarted while the API
        is down still recovers and supervises its containers (and kills them at their
        deadlines); it reports once the API is back.
        """
        delay = 1.0
        cache = self.s.state_dir / "provider.json"
        registered = 0
        while not self._stop.is_set():
            try:
                await self._refresh_gpus()
                await self._check_ready(force=True)
                try:
                    me = await self.api.me()
                except ApiUnavailable:
                    if not cache.exists():
                        raise
                    me = json.loads(cache.read_text())
                    log.warning("api_unavailable_using_cached_registration")
                else:
                    _write_atomic(cache, json.dumps(me, sort_keys=True).encode())
                self.provider_id = str(me.get("provider_id") or me.get("id") or "")
                registered = int(me.get("gpu_count") or 0)
                if not self.provider_id:
                    raise ApiUnavailable("GET /api/providers/me gave no provider_id")
                break
            except ApiError as e:
                if e.definite:
                    log.error("worker_refused_by_api", status=e.status, code=e.code)
                    return False
                log.warning("worker_not_ready", reason=str(e))
            except (ApiUnavailable, NotReadyError, OSError, TimeoutError, ValueError) as e:
                log.warning("worker_not_ready", reason=str(e) or type(e).__name__)
            await _wait_event(self._stop, delay)
            delay = min(delay * 2, 30.0)
        else:
            return False
        if self.s.gpus == "none":
            self.capacity = max(1, registered)
            self._free_devices = []
        else:
            self.capacity = len(self.inventory.devices)
            self._free_devices = [d.uuid for d in self.inventory.devices]
        log.info(
            "worker_started",
            provider_id=self.provider_id,
            gpus=self.s.gpus,
            capacity=self.capacity,
            gpu_source=self.inventory.source,
            version=__version__,
        )
        await self._recover()
        return True

    # ----- readiness and GPUs ---------------------------------------------------------------

    async def _refresh_gpus(self) -> None:
        if self.s.gpus == "none":
            self.inventory = NO_GPUS
            return
        async with asyncio.timeout(GPU_DISCOVER_TIMEOUT_S):
            self.inventory = await asyncio.to_thread(self._discover_gpus)

    async def _gpu_loop(self) -> None:
        while True:
            await asyncio.sleep(GPU_REFRESH_S)
            try:
                await self._refresh_gpus()
            except Exception as e:  # keep the last inventory; the next round may work
                log.warning("gpu_refresh_failed", error=f"{type(e).__name__}: {e}")

    async def _check_ready(self, force: bool = False) -> bool:
        """Docker answers, disk has room, GPU runtime present if GPUs are configured."""
        now = time.monotonic()
        if not force and now - self._ready_checked < READY_RECHECK_S:
            return self.ready
        self._ready_checked = now
        try:
            info = await self.docker.info()
            problem = disk_problem(info, self.s) or gpu_problem(info, self.inventory, self.s)
            if problem is not None:
                raise NotReadyError(problem)
        except NotReadyError:
            self.ready = False
            self.metrics.ready.set(0)
            raise
        except Exception as e:
            self.ready = False
            self.metrics.ready.set(0)
            raise NotReadyError(f"docker does not answer: {type(e).__name__}: {e}") from e
        self.ready = True
        self.metrics.ready.set(1)
        return True

    # ----- heartbeat ------------------------------------------------------------------------

    def heartbeat_payload(self) -> dict[str, Any]:
        """SPEC section 4: GPU inventory, running job ids, daemon version, accepting_jobs."""
        # Jobs whose results wait in the spool are listed too: their leases must not run out
        # while delivery retries, or a finished job would be run again elsewhere.
        listed = sorted(set(self.running) | self.spool.pending_job_ids())
        return {
            "gpus": self.inventory.as_payload(),
            "running_job_ids": listed[:MAX_LISTED_JOBS],
            "daemon_version": __version__,
            "accepting_jobs": self.ready and not self.draining,
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

    def _on_heartbeat_reply(self, reply: dict[str, Any]) -> None:
        flags = (reply.get("approval_status"), reply.get("paused"), reply.get("suspended"))
        if flags != self._provider_flags:
            # Logged on change only: why no job comes (pending approval, paused, suspended).
            self._provider_flags = flags
            log.info(
                "provider_state", approval_status=flags[0], paused=flags[1], suspended=flags[2]
            )
        cancels = reply.get("cancel_jobs") or []
        for entry in cancels if isinstance(cancels, list) else []:
            job_id = entry.get("job_id") if isinstance(entry, dict) else entry
            rj = self.running.get(str(job_id))
            if rj is not None:
                log.info("job_cancel_requested", job_id=rj.job.job_id, attempt=rj.job.attempt)
                rj.request_stop("cancelled")

    # ----- polling --------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while not self.draining:
            try:
                if await self._check_ready():
                    raw = await self.api.leased_jobs()
                    self._on_leases(raw)
            except NotReadyError as e:
                log.warning("worker_not_ready", reason=str(e))
            except (ApiError, ApiUnavailable) as e:
                log.warning("poll_failed", error=str(e))
            except Exception as e:  # e.g. a full disk under the spool: try again next round
                log.exception("poll_error", error=f"{type(e).__name__}: {e}")
            await _wait_event(self._stop, self.s.poll_s)

    def _on_leases(self, raw: list[Any]) -> None:
        """Start new leases that fit; stop running jobs whose lease is gone."""
        leased: dict[str, LeasedJob] = {}
        for item in raw:
            try:
                job = parse_job(item)
            except ValueError as e:
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
            slots = max(1, job.gpu_count)
            if slots > self._free_slots():
                continue  # the platform only assigns what fits; wait for a slot
            devices: list[str] = []
            if self.s.gpus == "auto":
                devices = self._free_devices[: job.gpu_count]
                del self._free_devices[: job.gpu_count]
            self._launch(RunningJob(job=job, slots=slots, devices=devices))

    def _free_slots(self) -> int:
        return self.capacity - sum(rj.slots for rj in self.running.values())

    def _launch(self, rj: RunningJob) -> None:
        self.running[rj.job.job_id] = rj
        rj.task = asyncio.create_task(self._job_task(rj), name=f"job-{rj.job.job_id}")

    # ----- one job --------------------------------------------------------------------------

    def _intent_path(self, job_id: str, attempt: int) -> Path:
        return self.intents / Spool.name(job_id, attempt)

    def _record_intent(self, rj: RunningJob, outcome: str) -> None:
        """Before a kill, durably note why, so a restart reports the right outcome."""
        body = json.dumps({"outcome": outcome, "reason": rj.stop_reason}).encode()
        _write_atomic(self._intent_path(rj.job.job_id, rj.job.attempt), body)

    def _read_intent(self, job_id: str, attempt: int) -> str | None:
        try:
            return str(json.loads(self._intent_path(job_id, attempt).read_bytes())["outcome"])
        except (OSError, ValueError, KeyError):
            return None

    async def _job_task(self, rj: RunningJob) -> None:
        job = rj.job
        structlog.contextvars.bind_contextvars(job_id=job.job_id, attempt=job.attempt)
        started = time.monotonic()
        result: dict[str, Any] | None = None
        spooled = False
        try:
            result = await self._run(rj)
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
            self.running.pop(job.job_id, None)
            self._free_devices.extend(rj.devices)
            self.finished[job.key] = None
            while len(self.finished) > FINISHED_MEMORY:
                self.finished.popitem(last=False)

    async def _finish(
        self, rj: RunningJob, result: dict[str, Any], spooled: bool, took_s: float
    ) -> None:
        if not spooled:
            await asyncio.to_thread(self.spool.put, result)
        self._intent_path(rj.job.job_id, rj.job.attempt).unlink(missing_ok=True)
        self._delivery_wake.set()
        self.metrics.jobs.labels(result["outcome"]).inc()
        log.info(
            "job_ended",
            outcome=result["outcome"],
            exit_code=result["exit_code"],
            runtime_seconds=result["runtime_seconds"],
            truncated=result["truncated"],
            took_s=round(took_s, 3),
        )

    async def _run(self, rj: RunningJob) -> dict[str, Any]:
        """Create and start the container (unless re-adopted), supervise it, read the result."""
        job = rj.job
        capture: asyncio.Task[Output] | None = None
        if rj.container_id is None:
            taken = time.monotonic()
            await self.docker.check_image(job.image)
            config = self.docker.container_config(job, self.provider_id, rj.devices)
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
        result_sha = output.sha256
        # Spool first, then remove: a crash in between finds the spooled result on restart.
        await asyncio.to_thread(self.spool.put, result)
        log.info("job_output_captured", sha256=result_sha)
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
        delay = 0.5
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
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 30.0)

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
        errors = 0
        while True:
            try:
                left = await self._deadline_left(rj)
            except Exception as e:  # an engine hiccup: look again, a bounded number of times
                errors += 1
                if errors > MAX_DOCKER_WAIT_ERRORS:
                    raise
                log.warning("job_inspect_failed", error=f"{type(e).__name__}: {e}")
                await asyncio.sleep(min(2.0**errors, 30.0))
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
            errors += 1  # the wait itself failed (engine hiccup): look again, a bounded number
            if errors > MAX_DOCKER_WAIT_ERRORS:
                raise RuntimeError(f"waiting on the container failed: {waiter.exception()}")
            await asyncio.sleep(min(2.0**errors, 30.0))
        await asyncio.to_thread(self._record_intent, rj, outcome)
        log.info("job_killing", outcome=outcome, reason=rj.stop_reason)
        await self.docker.kill(cid)
        await self.docker.wait(cid, KILL_WAIT_S)
        return outcome

    # ----- delivery -------------------------------------------------------------------------

    async def _delivery_loop(self) -> None:
        backoff = 0.5
        while True:
            try:
                backoff = await self._deliver_pending(backoff)
            except Exception as e:  # e.g. the spool's disk failing: keep the loop alive
                log.exception("delivery_error", error=f"{type(e).__name__}: {e}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, DELIVERY_BACKOFF_MAX_S)

    async def _deliver_pending(self, backoff: float) -> float:
        """One round: send a bounded batch from the spool; wait as the outcome says. Returns
        the next backoff."""
        self._delivery_wake.clear()
        transient = False
        retry_after = 0.0
        for path in self.spool.list()[:DELIVERY_BATCH]:
            try:
                result = await asyncio.to_thread(self.spool.read, path)
            except (OSError, ValueError) as e:
                log.error("result_unreadable", file=path.name, error=str(e))
                await asyncio.to_thread(self.spool.bury, path)
                continue
            ids = {"job_id": result.get("job_id"), "attempt": result.get("attempt")}
            try:
                await self.api.send_result(result)
            except ApiError as e:
                if e.status == 409 and e.code == "lease_lost":
                    log.warning("result_dropped_lease_lost", **ids)
                    await asyncio.to_thread(self.spool.remove, path)
                elif e.definite:
                    log.error("result_refused", status=e.status, code=e.code, **ids)
                    await asyncio.to_thread(self.spool.bury, path)
                else:
                    log.warning("result_delivery_failed", status=e.status, **ids)
                    transient = True
                    retry_after = e.retry_after_s or 0.0
                    break
            except ApiUnavailable as e:
                log.warning("result_delivery_failed", error=str(e), **ids)
                transient = True
                break
            else:
                log.info("result_delivered", outcome=result.get("outcome"), **ids)
                await asyncio.to_thread(self.spool.remove, path)
                backoff = 0.5
        if transient:
            await asyncio.sleep(max(retry_after, backoff * random.uniform(0.8, 1.2)))
            return min(backoff * 2, DELIVERY_BACKOFF_MAX_S)
        if not self.spool.list()[:1]:
            await _wait_event(self._delivery_wake, 30.0)
        return backoff

    async def _flush(self, timeout_s: float) -> None:
        """At exit: give the delivery loop a bounded time to empty the spool."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._delivery_wake.set()
        while self.spool.list()[:1] and loop.time() < deadline:
            await asyncio.sleep(0.1)

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

    # ----- recovery -------------------------------------------------------------------------

    async def _recover(self) -> None:
        """Report containers that ended while the worker was away; re-adopt running ones.

        A re-adopted job whose lease is gone is stopped by the next poll (`_on_leases`).
        """
        for st in await self.docker.managed(self.provider_id):
            try:
                await self._recover_one(st)
            except Exception as e:  # leave it for the next start; recover the others
                log.exception("recovery_failed", container_id=st.container_id[:12], error=str(e))
        self._delivery_wake.set()

    async def _recover_one(self, st: ContainerState) -> None:
        """Report one container that ended, or re-adopt it if it still runs."""
        job_id = st.labels.get(LABEL_JOB, "")
        try:
            attempt = int(st.labels.get(LABEL_ATTEMPT, ""))
            max_s = int(st.labels.get(LABEL_MAX_S, "1800"))
        except ValueError:
            return
        ids = {"job_id": job_id, "attempt": attempt}
        if self.spool.has(job_id, attempt):
            log.info("recovered_already_spooled", **ids)
            await self.docker.remove(st.container_id)
            self.finished[(job_id, attempt)] = None
            return
        if not st.running:
            outcome = self._read_intent(job_id, attempt) or "completed"
            error = "worker_shutdown" if outcome == "failed" else None
            if st.started_at is None:  # created, never started: the platform requeues it
                outcome, error = "failed", "worker_restarted_before_start"
            output = await self.docker.output(st.container_id)
            ran = st if st.started_at is not None else None  # no exit code or runtime
            result = build_result(job_id, attempt, outcome, ran, output, error)
            await asyncio.to_thread(self.spool.put, result)
            self._intent_path(job_id, attempt).unlink(missing_ok=True)
            await self.docker.remove(st.container_id)
            self.finished[(job_id, attempt)] = None
            log.info("recovered_ended_job", outcome=outcome, **ids)
            return
        try:
            gpu_count = int(st.labels.get("sa.dcp.gpu_count", "1"))
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
            slots=max(1, gpu_count),
            devices=[d for d in devices if d in self._free_devices],
            container_id=st.container_id,
        )
        rj.adopted = True
        for d in rj.devices:
            self._free_devices.remove(d)
        log.info("recovered_running_job", **ids)
        self._launch(rj)
