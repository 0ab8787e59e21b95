"""Pure decisions: given the state, a command and the time, the events to append.

Every `decide_*` returns a list of events (empty when the command changes nothing, e.g. a
repeated idempotent request) or raises a DomainError. They read the state and never change
it; the caller folds the events. Time comes in as `now_us`, thresholds as `Settings`.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from dcp_events import catalogue as ev
from dcp_events.event import MAX_HALALA, Event, Posting
from dcp_projections import commands as cmd
from dcp_projections import ledger
from dcp_projections.errors import (
    Conflict,
    Forbidden,
    ImageNotAllowed,
    InsufficientFunds,
    InvalidTransition,
    LeaseLost,
    NotFound,
    ValidationError,
)
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
    settlement_postings,
)
from dcp_projections.state import (
    ENDED,
    LEASED,
    Job,
    Provider,
    State,
    gpu_key,
)

Presence = Literal["online", "stale", "offline"]

MIN_DURATION_S = 60
MAX_DURATION_S = 86400
MAX_GPU_COUNT = 64
MAX_TEXT = 256


def presence(provider: Provider, now_us: int, settings: Settings) -> Presence:
    """online / stale / offline from the age of the provider's last heartbeat."""
    if provider.last_heartbeat_us is None:
        return "offline"
    age_us = now_us - provider.last_heartbeat_us
    if age_us <= settings.online_s * US_PER_S:
        return "online"
    if age_us <= settings.stale_s * US_PER_S:
        return "stale"
    return "offline"


def takes_new_jobs(provider: Provider, now_us: int, settings: Settings) -> bool:
    """Only approved, unpaused, unsuspended, online providers that accept jobs get new ones."""
    return (
        provider.approved
        and not provider.paused
        and not provider.suspended
        and provider.accepting_jobs
        and presence(provider, now_us, settings) == "online"
    )


# --- validation helpers --------------------------------------------------------------------


def _text(field: str, value: str, *, required: bool = True, max_len: int = MAX_TEXT) -> None:
    if required and not value.strip():
        raise ValidationError(field, "must not be empty")
    if len(value) > max_len:
        raise ValidationError(field, f"at most {max_len} characters")


def _amount(field: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(field, "must be an integer number of halala")
    if value < minimum or value > MAX_HALALA:
        raise ValidationError(field, f"must be between {minimum} and {MAX_HALALA}")


_IBAN = re.compile(r"SA[0-9]{22}")


def iban_is_valid(iban: str) -> bool:
    """A Saudi IBAN: "SA" + 22 digits with a valid ISO 13616 mod-97 check."""
    if not _IBAN.fullmatch(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    digits = "".join(str(int(c, 36)) for c in rearranged)
    return int(digits) % 97 == 1


def _renter(state: State, renter_id: str) -> None:
    if renter_id not in state.renters:
        raise NotFound(f"renter {renter_id} not found")


def _provider(state: State, provider_id: str) -> Provider:
    p = state.providers.get(provider_id)
    if p is None:
        raise NotFound(f"provider {provider_id} not found")
    return p


# --- renters -------------------------------------------------------------------------------


def decide_register_renter(state: State, c: cmd.RegisterRenter, now_us: int) -> list[Event]:
    """A new renter; raises ValidationError on an empty name or email, Conflict on a reused id."""
    _text("name", c.name)
    _text("email", c.email)
    if "@" not in c.email:
        raise ValidationError("email", "must be an email address")
    if c.renter_id in state.renters or c.key_hash in state.credentials:
        raise Conflict("renter id or key already in use")
    return [
        ev.RenterRegistered(
            renter_id=c.renter_id, name=c.name, email=c.email, key_hash=c.key_hash, at_us=now_us
        )
    ]


def decide_credit(state: State, c: cmd.CreditDeposit, now_us: int) -> list[Event]:
    """An admin credit. The same reference again credits nothing (returns []); a reference
    reused for another renter or amount raises Conflict."""
    _renter(state, c.renter_id)
    _amount("amount_halala", c.amount_halala)
    _text("reference", c.reference)
    seen = state.deposit_refs.get(c.reference)
    if seen is not None:
        if seen.renter_id == c.renter_id and seen.amount_halala == c.amount_halala:
            return []
        raise Conflict(f"reference {c.reference!r} already credited a different deposit")
    return [
        ev.DepositCredited(
            renter_id=c.renter_id,
            amount_halala=c.amount_halala,
            reference=c.reference,
            reason=c.reason,
            at_us=now_us,
            postings=(
                Posting(ledger.WORLD_DEPOSITS, -c.amount_halala),
                Posting(ledger.renter_available(c.renter_id), c.amount_halala),
            ),
        )
    ]


def decide_topup(state: State, c: cmd.TopUp, now_us: int, settings: Settings) -> list[Event]:
    """A sandbox self top-up; Forbidden unless `settings.sandbox`."""
    if not settings.sandbox:
        raise Forbidden("top-up is only available in sandbox mode")
    _renter(state, c.renter_id)
    _amount("amount_halala", c.amount_halala)
    if c.amount_halala > settings.sandbox_topup_max_halala:
        raise ValidationError(
            "amount_halala", f"at most {settings.sandbox_topup_max_halala} per top-up"
        )
    return [
        ev.SandboxToppedUp(
            renter_id=c.renter_id,
            amount_halala=c.amount_halala,
            at_us=now_us,
            postings=(
                Posting(ledger.PLATFORM_ADJUSTMENTS, -c.amount_halala),
                Posting(ledger.renter_available(c.renter_id), c.amount_halala),
            ),
        )
    ]


# --- providers -----------------------------------------------------------------------------


def decide_register_provider(
    state: State, c: cmd.RegisterProvider, now_us: int, settings: Settings
) -> list[Event]:
    """A new provider, approved at once when `settings.auto_approve`."""
    _text("name", c.name)
    _text("email", c.email)
    if "@" not in c.email:
        raise ValidationError("email", "must be an email address")
    _text("gpu_model", c.gpu_model)
    if not 1 <= c.gpu_count <= MAX_GPU_COUNT:
        raise ValidationError("gpu_count", f"must be between 1 and {MAX_GPU_COUNT}")
    if not 1 <= c.vram_gb <= 4096:
        raise ValidationError("vram_gb", "must be between 1 and 4096")
    if c.provider_id in state.providers or c.key_hash in state.credentials:
        raise Conflict("provider id or key already in use")
    return [
        ev.ProviderRegistered(
            provider_id=c.provider_id,
            name=c.name,
            email=c.email,
            gpu_model=c.gpu_model,
            gpu_count=c.gpu_count,
            vram_gb=c.vram_gb,
            key_hash=c.key_hash,
            approved=settings.auto_approve,
            at_us=now_us,
        )
    ]


def decide_provider_flag(state: State, c: cmd.SetProviderFlag, now_us: int) -> list[Event]:
    """Approve, suspend, unsuspend, pause or resume; [] when the flag already has that value."""
    p = _provider(state, c.provider_id)
    pid = c.provider_id
    if c.flag == "approve":
        return [] if p.approved else [ev.ProviderApproved(provider_id=pid, at_us=now_us)]
    if c.flag == "suspend":
        if p.suspended:
            return []
        return [ev.ProviderSuspended(provider_id=pid, reason=c.reason, at_us=now_us)]
    if c.flag == "unsuspend":
        return [ev.ProviderUnsuspended(provider_id=pid, at_us=now_us)] if p.suspended else []
    if c.flag == "pause":
        return [] if p.paused else [ev.ProviderPaused(provider_id=pid, at_us=now_us)]
    return [ev.ProviderResumed(provider_id=pid, at_us=now_us)] if p.paused else []


def decide_heartbeat(
    state: State, c: cmd.Heartbeat, now_us: int, settings: Settings
) -> list[Event]:
    """Record a heartbeat and renew the lease of every listed job this provider holds."""
    _provider(state, c.provider_id)
    if len(c.running_job_ids) > 1000 or len(c.gpus) > MAX_GPU_COUNT:
        raise ValidationError("running_job_ids", "too many entries")
    renewals = []
    for job_id in dict.fromkeys(c.running_job_ids):
        job = state.jobs.get(job_id)
        if job is not None and job.status in LEASED and job.provider_id == c.provider_id:
            renewals.append(
                ev.LeaseRenewal(
                    job_id=job_id,
                    attempt=job.attempt,
                    lease_expires_us=now_us + settings.lease_ttl_s * US_PER_S,
                )
            )
    return [
        ev.ProviderHeartbeat(
            provider_id=c.provider_id,
            at_us=now_us,
            gpus=c.gpus,
            running_job_ids=c.running_job_ids,
            daemon_version=c.daemon_version,
            accepting_jobs=c.accepting_jobs,
            renewals=tuple(renewals),
        )
    ]


def jobs_to_cancel(state: State, provider_id: str, running_job_ids: tuple[str, ...]) -> list[str]:
    """Of the jobs a provider says it runs, those it should stop: ended, or leased elsewhere."""
    out = []
    for job_id in dict.fromkeys(running_job_ids):
        job = state.jobs.get(job_id)
        if job is None or job.status not in LEASED or job.provider_id != provider_id:
            out.append(job_id)
    return out


# --- platform ------------------------------------------------------------------------------


def decide_set_price(state: State, c: cmd.SetPrice, now_us: int) -> list[Event]:
    """Set a GPU model's price for jobs submitted from now on."""
    _text("gpu_model", c.gpu_model)
    _amount("halala_per_gpu_hour", c.halala_per_gpu_hour, minimum=0)
    if c.halala_per_gpu_hour > 10_000_000:
        raise ValidationError("halala_per_gpu_hour", "at most 10000000")
    return [
        ev.PriceSet(gpu_model=c.gpu_model, halala_per_gpu_hour=c.halala_per_gpu_hour, at_us=now_us)
    ]


def decide_allow_image(state: State, c: cmd.AllowImage, now_us: int) -> list[Event]:
    """Add an image reference (exact, "prefix*" or "repo@sha256:") to the allowlist."""
    _text("reference", c.reference, max_len=512)
    if c.reference in state.images:
        return []
    return [ev.ImageAllowed(reference=c.reference, at_us=now_us)]


def decide_remove_image(state: State, c: cmd.RemoveImage, now_us: int) -> list[Event]:
    """Remove an allowlist entry; NotFound if it is not on the list."""
    if c.reference not in state.images:
        raise NotFound(f"image {c.reference!r} is not on the allowlist")
    return [ev.ImageRemoved(reference=c.reference, at_us=now_us)]


# --- jobs ----------------------------------------------------------------------------------


def decide_submit(state: State, c: cmd.SubmitJob, now_us: int, settings: Settings) -> list[Event]:
    """Queue a job and hold its reserve.

    Returns [] when the renter already submitted with this idempotency key (the caller
    answers with that job). Raises ValidationError, ImageNotAllowed, NotFound (requested
    provider) or InsufficientFunds with the exact shortfall.
    """
    _renter(state, c.renter_id)
    if c.idempotency_key is not None:
        _text("idempotency_key", c.idempotency_key)
        if (c.renter_id, c.idempotency_key) in state.submit_keys:
            return []
    if c.job_id in state.jobs:
        raise Conflict(f"job id {c.job_id} already in use")
    spec, req = c.container_spec, c.gpu_requirements
    _text("container_spec.image", spec.image, max_len=512)
    if len(spec.command) > 256 or any(len(a) > 4096 for a in spec.command):
        raise ValidationError("container_spec.command", "too long")
    if len(spec.env) > 128:
        raise ValidationError("container_spec.env", "at most 128 variables")
    if not MIN_DURATION_S <= c.max_duration_seconds <= MAX_DURATION_S:
        raise ValidationError(
            "max_duration_seconds", f"must be between {MIN_DURATION_S} and {MAX_DURATION_S}"
        )
    if not 1 <= req.gpu_count <= MAX_GPU_COUNT:
        raise ValidationError("gpu_requirements.gpu_count", f"between 1 and {MAX_GPU_COUNT}")
    if not 0 <= req.min_vram_gb <= 4096:
        raise ValidationError("gpu_requirements.min_vram_gb", "between 0 and 4096")
    _text("gpu_requirements.gpu_type", req.gpu_type, required=False, max_len=64)
    if c.priority not in ("priority", "standard", "economy"):
        raise ValidationError("priority", "one of priority, standard, economy")
    if c.provider_id is not None and c.provider_id not in state.providers:
        raise ValidationError("provider_id", "no such provider")
    if not state.image_allowed(spec.image):
        raise ImageNotAllowed(spec.image)
    price = state.price_for(req.gpu_type)
    rate = rate_halala_per_hour(price, req.gpu_count, c.priority)
    reserve = reserve_halala(rate, c.max_duration_seconds)
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
            postings=_hold(c.renter_id, reserve),
        )
    ]


def _hold(renter_id: str, reserve: int) -> tuple[Posting, ...]:
    """Available -> held; no legs at all for a free job (a zero leg is noise in the ledger)."""
    if reserve == 0:
        return ()
    return (
        Posting(ledger.renter_available(renter_id), -reserve),
        Posting(ledger.renter_held(renter_id), reserve),
    )


def _measured_s(job: Job, now_us: int) -> int:
    """Server-measured runtime: from the start (or the claim, if no start came) to now."""
    since = job.started_at_us if job.started_at_us is not None else job.assigned_at_us
    return measured_seconds(since if since is not None else now_us, now_us)


def _settle(
    job: Job, ending: Ending, provider_id: str | None, reported_s: int | None, measured_s: int
) -> tuple[ev.Settlement, tuple[Posting, ...]]:
    s = settle_ending(
        ending,
        reserve=job.cost_halala,
        rate=job.rate_halala_per_hour,
        max_duration_seconds=job.max_duration_seconds,
        reported_s=reported_s,
        measured_s=measured_s,
    )
    return s, settlement_postings(job.renter_id, provider_id, job.cost_halala, s)


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
                postings=settlement_postings(job.renter_id, None, job.cost_halala, s),
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


def _fits(job: Job, p: Provider, p_key: str, free_gpus: int) -> bool:
    req = job.gpu_requirements
    if job.requested_provider_id is not None and job.requested_provider_id != p.provider_id:
        return False
    if job.gpu_key and job.gpu_key != p_key:
        return False
    return req.min_vram_gb <= p.vram_gb and req.gpu_count <= free_gpus


def decide_claim(state: State, c: cmd.ClaimJobs, now_us: int, settings: Settings) -> list[Event]:
    """Lease queued jobs to a provider that takes new jobs, in queue order, up to its free
    GPUs (at most `settings.claim_scan_limit` queue entries looked at). Raises NotFound.

    The caller then answers with every job leased to the provider and not ended, so a
    repeated poll returns the same leases.
    """
    p = _provider(state, c.provider_id)
    if not takes_new_jobs(p, now_us, settings):
        return []
    free = p.gpu_count - p.leased_gpus
    out: list[Event] = []
    lease_expires_us = now_us + settings.lease_ttl_s * US_PER_S
    p_key = gpu_key(p.gpu_model)
    for scanned, (_, _, job_id) in enumerate(state.queue):
        if free <= 0 or scanned >= settings.claim_scan_limit:
            break
        job = state.jobs[job_id]
        if _fits(job, p, p_key, free):
            free -= job.gpu_requirements.gpu_count
            out.append(
                ev.JobClaimed(
                    job_id=job_id,
                    renter_id=job.renter_id,
                    provider_id=p.provider_id,
                    attempt=job.attempt,
                    lease_expires_us=lease_expires_us,
                    at_us=now_us,
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


def _cap(text: str, cap_bytes: int) -> tuple[str, bool]:
    data = text.encode()
    if len(data) <= cap_bytes:
        return text, False
    return data[:cap_bytes].decode(errors="ignore"), True


def output_sha256(stdout: str, stderr: str) -> str:
    """Hex sha256 over stdout then stderr, each as UTF-8 preceded by its 8-byte length."""
    h = hashlib.sha256()
    for part in (stdout.encode(), stderr.encode()):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def result_fingerprint(c: cmd.ReportResult) -> str:
    """What makes two reports "the same result": outcome, exit code, runtime, output, error."""
    h = hashlib.sha256()
    for part in (
        c.outcome,
        repr(c.exit_code),
        str(ceil_seconds(c.runtime_seconds)),
        output_sha256(c.stdout, c.stderr),
        repr(c.truncated),
        c.error,
    ):
        data = part.encode()
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


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
    stdout, cut_out = _cap(c.stdout, settings.output_cap_bytes)
    stderr, cut_err = _cap(c.stderr, settings.output_cap_bytes)
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
            postings=_hold(job.renter_id, job.cost_halala),
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
                    postings=settlement_postings(job.renter_id, None, job.cost_halala, s),
                    at_us=now_us,
                )
            )
    return out


# --- withdrawals ---------------------------------------------------------------------------


def decide_withdraw(
    state: State, c: cmd.RequestWithdrawal, now_us: int, settings: Settings
) -> list[Event]:
    """Move earnings to payout_pending. Raises NotFound, ValidationError (amount under the
    minimum, bad IBAN) or InsufficientFunds (more than the earnings)."""
    _provider(state, c.provider_id)
    _amount("amount_halala", c.amount_halala, minimum=settings.min_withdrawal_halala)
    iban = c.iban.replace(" ", "").upper()
    if not iban_is_valid(iban):
        raise ValidationError("iban", "must be a valid Saudi IBAN (SA + 22 digits)")
    if c.withdrawal_id in state.withdrawals:
        raise Conflict(f"withdrawal id {c.withdrawal_id} already in use")
    earnings = state.earnings(c.provider_id)
    if c.amount_halala > earnings:
        raise InsufficientFunds(c.amount_halala, earnings)
    return [
        ev.WithdrawalRequested(
            withdrawal_id=c.withdrawal_id,
            provider_id=c.provider_id,
            amount_halala=c.amount_halala,
            iban=iban,
            at_us=now_us,
            postings=(
                Posting(ledger.provider_earnings(c.provider_id), -c.amount_halala),
                Posting(ledger.provider_payout_pending(c.provider_id), c.amount_halala),
            ),
        )
    ]


def decide_withdrawal(state: State, c: cmd.DecideWithdrawal, now_us: int) -> list[Event]:
    """Complete (paid out) or reject (back to earnings) a pending withdrawal. Returns [] when
    it was already decided the same way; InvalidTransition when decided the other way."""
    w = state.withdrawals.get(c.withdrawal_id)
    if w is None:
        raise NotFound(f"withdrawal {c.withdrawal_id} not found")
    want = "completed" if c.approve else "rejected"
    if w.status == want:
        return []
    if w.status != "pending":
        raise InvalidTransition(f"withdrawal {c.withdrawal_id} is already {w.status}")
    pending = ledger.provider_payout_pending(w.provider_id)
    if c.approve:
        return [
            ev.WithdrawalCompleted(
                withdrawal_id=w.withdrawal_id,
                provider_id=w.provider_id,
                amount_halala=w.amount_halala,
                at_us=now_us,
                postings=(
                    Posting(pending, -w.amount_halala),
                    Posting(ledger.WORLD_PAYOUTS, w.amount_halala),
                ),
            )
        ]
    return [
        ev.WithdrawalRejected(
            withdrawal_id=w.withdrawal_id,
            provider_id=w.provider_id,
            amount_halala=w.amount_halala,
            reason=c.reason,
            at_us=now_us,
            postings=(
                Posting(pending, -w.amount_halala),
                Posting(ledger.provider_earnings(w.provider_id), w.amount_halala),
            ),
        )
    ]


def decide(state: State, c: cmd.Command, now_us: int, settings: Settings) -> list[Event]:
    """Dispatch any command to its decision."""
    match c:
        case cmd.RegisterRenter():
            return decide_register_renter(state, c, now_us)
        case cmd.CreditDeposit():
            return decide_credit(state, c, now_us)
        case cmd.TopUp():
            return decide_topup(state, c, now_us, settings)
        case cmd.RegisterProvider():
            return decide_register_provider(state, c, now_us, settings)
        case cmd.SetProviderFlag():
            return decide_provider_flag(state, c, now_us)
        case cmd.Heartbeat():
            return decide_heartbeat(state, c, now_us, settings)
        case cmd.SetPrice():
            return decide_set_price(state, c, now_us)
        case cmd.AllowImage():
            return decide_allow_image(state, c, now_us)
        case cmd.RemoveImage():
            return decide_remove_image(state, c, now_us)
        case cmd.SubmitJob():
            return decide_submit(state, c, now_us, settings)
        case cmd.CancelJob():
            return decide_cancel(state, c, now_us)
        case cmd.ClaimJobs():
            return decide_claim(state, c, now_us, settings)
        case cmd.StartJob():
            return decide_start(state, c, now_us)
        case cmd.ReportResult():
            return decide_result(state, c, now_us, settings)
        case cmd.RequeueJob():
            return decide_requeue(state, c, now_us)
        case cmd.RequestWithdrawal():
            return decide_withdraw(state, c, now_us, settings)
        case cmd.DecideWithdrawal():
            return decide_withdrawal(state, c, now_us)
        case cmd.Sweep():
            return decide_sweep(state, c, now_us, settings)
    raise TypeError(f"unknown command {type(c).__name__}")
