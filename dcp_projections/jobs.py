"""Pure decisions about jobs: submit, claim, start, result, cancel, requeue, sweep.

Each `decide_*` returns the events to append (empty for a repeat that changes nothing) or
raises a DomainError; it reads the state and never changes it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec

from dcp_events import catalogue as ev
from dcp_events.event import Event
from dcp_projections import commands as cmd
from dcp_projections import money
from dcp_projections._checks import (
    MAX_DURATION_S,
    MAX_GPU_COUNT,
    MIN_DURATION_S,
    require_provider,
    require_renter,
    text,
)
from dcp_projections.errors import (
    Conflict,
    IdempotencyKeyReused,
    ImageNotAllowed,
    InsufficientFunds,
    InvalidTransition,
    LeaseLost,
    NotFound,
    ValidationError,
)
from dcp_projections.output import cap, output_sha256, result_fingerprint
from dcp_projections.presence import takes_new_jobs
from dcp_projections.pricing import gpu_price, job_gpu_key, may_run_on
from dcp_projections.priorities import PRIORITIES
from dcp_projections.settings import Settings
from dcp_projections.settlement import (
    US_PER_S,
    Ending,
    ceil_seconds,
    measured_seconds,
    rate_halala_per_hour,
    refund_all,
    reserve_halala,
    settle_ending,
)
from dcp_projections.state import ENDED, LEASED, Job, Provider, State
from dcp_projections.text import is_env_key


def jobs_to_cancel(state: State, provider_id: str, running_job_ids: tuple[str, ...]) -> list[str]:
    """Of the jobs a provider says it runs, those it should stop: ended, or leased elsewhere."""
    out = []
    for job_id in dict.fromkeys(running_job_ids):
        job = state.jobs.get(job_id)
        if job is None or job.status not in LEASED or job.provider_id != provider_id:
            out.append(job_id)
    return out


def quote(
    state: State,
    gpu_type: str,
    gpu_count: int,
    priority: str,
    max_duration_seconds: int,
    provider_id: str | None = None,
) -> tuple[int, int, int]:
    """(price_halala_per_gpu_hour, rate_halala_per_hour, reserve_halala) a job with these
    terms would get now: its GPU type's price, times its count and priority, for its maximum
    duration. Submission fixes these; the web plane shows them before a renter submits."""
    price = state.price_for(gpu_type)
    if provider_id in state.providers and not job_gpu_key(gpu_type):
        # Any GPU of one named provider: that provider's GPU is the one it will run on.
        price = gpu_price(state, state.providers[provider_id].gpu_model)
    rate = rate_halala_per_hour(price, gpu_count, priority)
    return price, rate, reserve_halala(rate, max_duration_seconds)


_TERMS = msgspec.json.Encoder(order="deterministic")


def submit_fingerprint(
    spec: ev.ContainerSpec,
    req: ev.GpuRequirements,
    priority: str,
    max_duration_seconds: int,
    provider_id: str | None,
) -> str:
    """What makes two submissions "the same request" for an Idempotency-Key: the job's terms
    (not its ids or times), hashed; env in key order, so the same request is the same however a
    client orders its JSON. The fold computes it from the submission event, the decision from
    the command."""
    terms = _TERMS.encode((spec, req, priority, max_duration_seconds, provider_id))
    return hashlib.sha256(terms).hexdigest()[:32]


def decide_submit(state: State, c: cmd.SubmitJob, now_us: int, settings: Settings) -> list[Event]:
    """Queue a job and hold its reserve.

    Returns [] when the renter already submitted with this idempotency key (the caller
    answers with that job). Raises ValidationError, ImageNotAllowed, NotFound (requested
    provider) or InsufficientFunds with the exact shortfall.
    """
    require_renter(state, c.renter_id)
    if c.idempotency_key is not None:
        text("idempotency_key", c.idempotency_key)
        seen = state.live_key(c.renter_id, c.idempotency_key, now_us)
        if seen is not None:
            terms = submit_fingerprint(
                c.container_spec, c.gpu_requirements, c.priority, c.max_duration_seconds,
                c.provider_id,
            )  # fmt: skip
            if seen.fingerprint and seen.fingerprint != terms:  # "": keyed before fingerprints
                raise IdempotencyKeyReused(
                    f"Idempotency-Key {c.idempotency_key!r} was used for another job request"
                    f" ({seen.job_id}); send a new key for a new request"
                )
            return []
    if c.job_id in state.jobs:
        raise Conflict(f"job id {c.job_id} already in use")
    spec, req = c.container_spec, c.gpu_requirements
    text("container_spec.image", spec.image, max_len=512)
    if len(spec.command) > 256 or any(len(a) > 4096 for a in spec.command):
        raise ValidationError("container_spec.command", "too long")
    if len(spec.env) > 128:
        raise ValidationError("container_spec.env", "at most 128 variables")
    if not all(is_env_key(k) for k in spec.env):
        raise ValidationError("container_spec.env", "names are [A-Za-z_][A-Za-z0-9_]*")
    if not MIN_DURATION_S <= c.max_duration_seconds <= MAX_DURATION_S:
        raise ValidationError(
            "max_duration_seconds", f"must be between {MIN_DURATION_S} and {MAX_DURATION_S}"
        )
    if not 1 <= req.gpu_count <= MAX_GPU_COUNT:
        raise ValidationError("gpu_requirements.gpu_count", f"between 1 and {MAX_GPU_COUNT}")
    if not 0 <= req.min_vram_gb <= 4096:
        raise ValidationError("gpu_requirements.min_vram_gb", "between 0 and 4096")
    text("gpu_requirements.gpu_type", req.gpu_type, required=False, max_len=64)
    if c.priority not in PRIORITIES:
        raise ValidationError("priority", "one of " + ", ".join(PRIORITIES))
    if c.provider_id is not None and c.provider_id not in state.providers:
        raise ValidationError("provider_id", "no such provider")
    if not state.image_allowed(spec.image):
        raise ImageNotAllowed(spec.image)
    price, rate, reserve = quote(
        state, req.gpu_type, req.gpu_count, c.priority, c.max_duration_seconds, c.provider_id
    )
    available = state.available(c.renter_id)
    if reserve > available:
        raise InsufficientFunds(reserve, available)
    return [
        ev.JobSubmitted(
            job_id=c.job_id,
            renter_id=c.renter_id,
            container_spec=spec,
            gpu_requirements=req,
            priority=c.priority,
            max_duration_seconds=c.max_duration_seconds,
            requested_provider_id=c.provider_id,
            idempotency_key=c.idempotency_key,
            price_halala_per_gpu_hour=price,
            rate_halala_per_hour=rate,
            cost_halala=reserve,
            attempt=1,
            at_us=now_us,
            postings=money.hold(c.renter_id, reserve),
        )
    ]


def _measured_s(job: Job, now_us: int) -> int:
    """Server-measured runtime: from the start (or the claim, if no start came) to now."""
    since = job.started_at_us if job.started_at_us is not None else job.assigned_at_us
    return measured_seconds(since if since is not None else now_us, now_us)


def _settle(
    job: Job, ending: Ending, provider_id: str | None, reported_s: int | None, measured_s: int
) -> tuple[ev.Settlement, money.Legs]:
    s = settle_ending(
        ending,
        reserve=job.cost_halala,
        rate=job.rate_halala_per_hour,
        max_duration_seconds=job.max_duration_seconds,
        reported_s=reported_s,
        measured_s=measured_s,
    )
    return s, money.settle(job.renter_id, provider_id, job.cost_halala, s)


def decide_cancel(state: State, c: cmd.CancelJob, now_us: int) -> list[Event]:
    """Cancel a job: queued -> nothing charged; assigned/running -> charged by the runtime the
    server measured up to now (the provider's later report cannot change it).

    Returns [] for a job already cancelled. Raises NotFound (unknown, or not this renter's) or
    InvalidTransition for a job that ended otherwise.
    """
    job = state.jobs.get(c.job_id)
    if job is None or (c.renter_id is not None and job.renter_id != c.renter_id):
        raise NotFound(f"job {c.job_id} not found")
    if job.status == "cancelled":
        return []
    if job.status in ENDED:
        raise InvalidTransition(f"job {c.job_id} already ended as {job.status}")
    by: Literal["renter", "admin"] = "renter" if c.renter_id is not None else "admin"
    if job.status == "queued":
        s = refund_all(job.cost_halala)
        return [
            ev.JobCancelled(
                job_id=job.job_id,
                renter_id=job.renter_id,
                provider_id=None,
                attempt=job.attempt,
                by=by,
                was_status="queued",
                settlement=s,
                at_us=now_us,
                postings=money.settle(job.renter_id, None, job.cost_halala, s),
            )
        ]
    measured = _measured_s(job, now_us)
    s, postings = _settle(job, "cancelled_running", job.provider_id, None, measured)
    return [
        ev.JobCancelled(
            job_id=job.job_id,
            renter_id=job.renter_id,
            provider_id=job.provider_id,
            attempt=job.attempt,
            by=by,
            was_status=job.status,
            measured_runtime_seconds=measured,
            settlement=s,
            at_us=now_us,
            postings=postings,
        )
    ]


def _fits(job: Job, p: Provider, p_price: int, free_gpus: int) -> bool:
    req = job.gpu_requirements
    if job.requested_provider_id is not None and job.requested_provider_id != p.provider_id:
        return False
    if not may_run_on(job.gpu_key, job.price_halala_per_gpu_hour, p.gpu_model, p_price):
        return False
    return req.min_vram_gb <= p.vram_gb and req.gpu_count <= free_gpus


def decide_claim(state: State, c: cmd.ClaimJobs, now_us: int, settings: Settings) -> list[Event]:
    """Lease queued jobs to a provider that takes new jobs, in queue order, up to its free
    GPUs (at most `settings.claim_scan_limit` queue entries looked at). Raises NotFound.

    The caller then answers with every job leased to the provider and not ended, so a
    repeated poll returns the same leases.
    """
    p = require_provider(state, c.provider_id)
    if not takes_new_jobs(p, now_us, settings):
        return []
    free = p.gpu_count - p.leased_gpus
    out: list[Event] = []
    lease_expires_us = now_us + settings.lease_ttl_s * US_PER_S
    p_price = gpu_price(state, p.gpu_model)
    for scanned, (_, _, job_id) in enumerate(state.queue):
        if free <= 0 or scanned >= settings.claim_scan_limit:
            break
        job = state.jobs[job_id]
        if _fits(job, p, p_price, free):
            free -= job.gpu_requirements.gpu_count
            out.append(
                ev.JobClaimed(
                    job_id=job_id,
                    renter_id=job.renter_id,
                    provider_id=p.provider_id,
                    attempt=job.attempt,
                    lease_expires_us=lease_expires_us,
                    at_us=now_us,
                    gpu_price_halala_per_gpu_hour=p_price,
                )
            )
    return out


def _leased_job(state: State, provider_id: str, job_id: str) -> Job:
    """The job, if this provider ever held a lease on it; else NotFound (never reveal it)."""
    job = state.jobs.get(job_id)
    if job is None or provider_id not in job.leases.values():
        raise NotFound(f"job {job_id} not found")
    return job


def _holds_lease(job: Job, provider_id: str, attempt: int) -> bool:
    return job.status in LEASED and job.attempt == attempt and job.provider_id == provider_id


def decide_start(state: State, c: cmd.StartJob, now_us: int) -> list[Event]:
    """The provider started the container. [] if already started by this attempt; LeaseLost
    for an old attempt; InvalidTransition if the job ended meanwhile; NotFound."""
    job = _leased_job(state, c.provider_id, c.job_id)
    if not _holds_lease(job, c.provider_id, c.attempt):
        if job.attempt == c.attempt and job.status in ENDED:
            raise InvalidTransition(f"job {c.job_id} already ended as {job.status}")
        raise LeaseLost(f"attempt {c.attempt} of job {c.job_id} no longer holds the lease")
    if job.status == "running":
        return []
    return [
        ev.JobStarted(
            job_id=job.job_id,
            renter_id=job.renter_id,
            provider_id=c.provider_id,
            attempt=c.attempt,
            at_us=now_us,
        )
    ]


def decide_result(
    state: State, c: cmd.ReportResult, now_us: int, settings: Settings
) -> list[Event]:
    """Settle a job from its provider's report (or requeue it after an infrastructure fault
    while attempts remain).

    Returns [] for a repeat of the result already recorded for that attempt, and for a
    "cancelled" acknowledgement of a job that is already cancelled. Raises Conflict for a
    different result of an attempt already reported, LeaseLost for an old attempt,
    InvalidTransition for a job that ended otherwise, NotFound, ValidationError.
    """
    job = _leased_job(state, c.provider_id, c.job_id)
    if c.runtime_seconds < 0 or c.runtime_seconds > 10 * MAX_DURATION_S:
        raise ValidationError("runtime_seconds", "out of range")
    fingerprint = result_fingerprint(c)
    seen = job.results.get(c.attempt)
    if seen is not None:
        if seen == fingerprint:
            return []
        raise Conflict(f"attempt {c.attempt} of job {c.job_id} already reported another result")
    if not _holds_lease(job, c.provider_id, c.attempt):
        if job.attempt == c.attempt and job.status in ENDED:
            if job.status == "cancelled" and c.outcome == "cancelled":
                return []
            raise InvalidTransition(f"job {c.job_id} already ended as {job.status}")
        raise LeaseLost(f"attempt {c.attempt} of job {c.job_id} no longer holds the lease")
    stdout, cut_out = cap(c.stdout, settings.output_cap_bytes)
    stderr, cut_err = cap(c.stderr, settings.output_cap_bytes)
    output = ev.JobOutput(
        exit_code=c.exit_code,
        stdout=stdout,
        stderr=stderr,
        truncated=c.truncated or cut_out or cut_err,
        sha256=output_sha256(stdout, stderr),
    )
    reported = ceil_seconds(c.runtime_seconds)
    measured = _measured_s(job, now_us)
    pid = c.provider_id
    common: dict[str, Any] = {
        "job_id": job.job_id,
        "renter_id": job.renter_id,
        "attempt": c.attempt,
        "result_fingerprint": fingerprint,
        "at_us": now_us,
    }
    if c.outcome == "failed":
        used = job.attempt - job.first_attempt + 1
        if used < settings.max_attempts:
            return [
                ev.JobAttemptFailed(
                    provider_id=pid, next_attempt=job.attempt + 1, error=c.error[:4096], **common
                )
            ]
        s, postings = _settle(job, "failed", pid, reported, measured)
        return [
            ev.JobFailed(
                provider_id=pid,
                reason="infrastructure",
                error=c.error[:4096],
                output=output,
                settlement=s,
                postings=postings,
                **common,
            )
        ]
    if c.outcome == "completed":
        s, postings = _settle(job, "completed", pid, reported, measured)
        return [
            ev.JobCompleted(
                provider_id=pid,
                reported_runtime_seconds=reported,
                measured_runtime_seconds=measured,
                output=output,
                settlement=s,
                postings=postings,
                **common,
            )
        ]
    if c.outcome == "timed_out":
        s, postings = _settle(job, "timed_out", pid, reported, measured)
        return [
            ev.JobTimedOut(
                provider_id=pid,
                source="provider",
                reported_runtime_seconds=reported,
                measured_runtime_seconds=measured,
                output=output,
                settlement=s,
                postings=postings,
                **common,
            )
        ]
    s, postings = _settle(job, "cancelled_running", pid, reported, measured)
    return [
        ev.JobCancelled(
            provider_id=pid,
            by="provider",
            was_status=job.status,
            reported_runtime_seconds=reported,
            measured_runtime_seconds=measured,
            output=output,
            settlement=s,
            postings=postings,
            **common,
        )
    ]


def decide_requeue(state: State, c: cmd.RequeueJob, now_us: int) -> list[Event]:
    """Admin requeue of a failed job: a new hold of the same reserve at the job's own rate,
    with fresh attempts. Raises NotFound, InvalidTransition (not failed) or InsufficientFunds."""
    job = state.jobs.get(c.job_id)
    if job is None:
        raise NotFound(f"job {c.job_id} not found")
    if job.status != "failed" or job.hold_open:
        raise InvalidTransition(f"only a failed job can be requeued; this one is {job.status}")
    available = state.available(job.renter_id)
    if job.cost_halala > available:
        raise InsufficientFunds(job.cost_halala, available)
    return [
        ev.JobRequeued(
            job_id=job.job_id,
            renter_id=job.renter_id,
            cost_halala=job.cost_halala,
            attempt=job.attempt + 1,
            at_us=now_us,
            postings=money.hold(job.renter_id, job.cost_halala),
        )
    ]


def decide_sweep(state: State, c: cmd.Sweep, now_us: int, settings: Settings) -> list[Event]:
    """End what time has ended, at most `settings.sweep_limit` jobs per sweep:
    expired leases (requeue with attempt + 1, or fail with a full refund after the last
    attempt), leased jobs past max_duration + grace (timed_out, whole reserve), and jobs
    queued longer than the queue timeout (failed, full refund)."""
    out: list[Event] = []
    grace_us = settings.deadline_grace_s * US_PER_S
    for p in state.providers.values():
        for job_id in sorted(p.leased):
            if len(out) >= settings.sweep_limit:
                return out
            job = state.jobs[job_id]
            assert job.provider_id is not None
            since = job.started_at_us if job.started_at_us is not None else job.assigned_at_us
            assert since is not None
            common: dict[str, Any] = {
                "job_id": job_id,
                "renter_id": job.renter_id,
                "provider_id": job.provider_id,
                "attempt": job.attempt,
                "at_us": now_us,
            }
            if job.lease_expires_us is not None and job.lease_expires_us <= now_us:
                used = job.attempt - job.first_attempt + 1
                if used < settings.max_attempts:
                    out.append(
                        ev.JobLeaseExpired(requeued=True, next_attempt=job.attempt + 1, **common)
                    )
                else:
                    s, postings = _settle(job, "failed", job.provider_id, None, 0)
                    out.append(
                        ev.JobLeaseExpired(
                            requeued=False, settlement=s, postings=postings, **common
                        )
                    )
            elif since + job.max_duration_seconds * US_PER_S + grace_us <= now_us:
                measured = _measured_s(job, now_us)
                s, postings = _settle(job, "timed_out", job.provider_id, None, measured)
                out.append(
                    ev.JobTimedOut(
                        source="deadline",
                        measured_runtime_seconds=measured,
                        settlement=s,
                        postings=postings,
                        **common,
                    )
                )
    timeout_us = settings.queue_timeout_s * US_PER_S
    for _, _, job_id in state.queue:
        if len(out) >= settings.sweep_limit:
            break
        job = state.jobs[job_id]
        if job.queued_at_us + timeout_us <= now_us:
            s = refund_all(job.cost_halala)
            out.append(
                ev.JobFailed(
                    job_id=job_id,
                    renter_id=job.renter_id,
                    provider_id=None,
                    attempt=job.attempt,
                    reason="queue_timeout",
                    error="no provider took the job before its queue timeout",
                    settlement=s,
                    postings=money.settle(job.renter_id, None, job.cost_halala, s),
                    at_us=now_us,
                )
            )
    return out
