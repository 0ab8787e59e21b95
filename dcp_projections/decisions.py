"""Pure decisions: given the state, a command and the time, the events to append.

Here: renters, providers, the platform's configuration, withdrawals, and `decide`, which
dispatches any command; the job decisions live in `dcp_projections.jobs`. Every `decide_*`
returns a list of events (empty when the command changes nothing, e.g. a repeated idempotent
request) or raises a DomainError. They read the state and never change it; the caller folds
the events. Time comes in as `now_us`, thresholds as `Settings`.
"""

from __future__ import annotations

import re

from dcp_events import catalogue as ev
from dcp_events.event import Event
from dcp_projections import commands as cmd
from dcp_projections import money
from dcp_projections._checks import (
    MAX_GPU_COUNT,
    MAX_REASON,
    amount,
    require_provider,
    require_renter,
    text,
)
from dcp_projections.errors import (
    Conflict,
    Forbidden,
    InsufficientFunds,
    InvalidTransition,
    NotFound,
    ValidationError,
)
from dcp_projections.jobs import (
    decide_cancel,
    decide_claim,
    decide_requeue,
    decide_result,
    decide_start,
    decide_submit,
    decide_sweep,
)
from dcp_projections.settings import Settings
from dcp_projections.settlement import US_PER_S
from dcp_projections.state import LEASED, State
from dcp_projections.topups import decide as decide_gateway_topup

# --- renters -------------------------------------------------------------------------------


def decide_register_renter(state: State, c: cmd.RegisterRenter, now_us: int) -> list[Event]:
    """A new renter; raises ValidationError on an empty name or email, Conflict on a reused id."""
    text("name", c.name)
    text("email", c.email)
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
    require_renter(state, c.renter_id)
    amount("amount_halala", c.amount_halala)
    text("reference", c.reference)
    text("reason", c.reason, required=False, max_len=MAX_REASON)
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
            postings=money.credit(c.renter_id, c.amount_halala),
        )
    ]


def decide_topup(state: State, c: cmd.TopUp, now_us: int, settings: Settings) -> list[Event]:
    """A sandbox self top-up; Forbidden unless `settings.sandbox`."""
    if not settings.sandbox:
        raise Forbidden("top-up is only available in sandbox mode")
    require_renter(state, c.renter_id)
    amount("amount_halala", c.amount_halala)
    if c.amount_halala > settings.sandbox_topup_max_halala:
        raise ValidationError(
            "amount_halala", f"at most {settings.sandbox_topup_max_halala} per top-up"
        )
    return [
        ev.SandboxToppedUp(
            renter_id=c.renter_id,
            amount_halala=c.amount_halala,
            at_us=now_us,
            postings=money.sandbox_credit(c.renter_id, c.amount_halala),
        )
    ]


# --- providers -----------------------------------------------------------------------------


def decide_register_provider(
    state: State, c: cmd.RegisterProvider, now_us: int, settings: Settings
) -> list[Event]:
    """A new provider, approved at once when `settings.auto_approve`."""
    text("name", c.name)
    text("email", c.email)
    if "@" not in c.email:
        raise ValidationError("email", "must be an email address")
    text("gpu_model", c.gpu_model)
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
    p = require_provider(state, c.provider_id)
    pid = c.provider_id
    if c.flag == "approve":
        return [] if p.approved else [ev.ProviderApproved(provider_id=pid, at_us=now_us)]
    if c.flag == "suspend":
        text("reason", c.reason, required=False, max_len=MAX_REASON)
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
    require_provider(state, c.provider_id)
    if len(c.running_job_ids) > 1000 or len(c.gpus) > MAX_GPU_COUNT:
        raise ValidationError("running_job_ids", "too many entries")
    text("daemon_version", c.daemon_version, required=False, max_len=64)
    for job_id in c.running_job_ids:
        text("running_job_ids", job_id, max_len=100)
    for g in c.gpus:
        text("gpus.model", g.model, max_len=100)
        text("gpus.driver_version", g.driver_version, required=False, max_len=64)
        text("gpus.cuda_version", g.cuda_version, required=False, max_len=64)
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


# --- platform ------------------------------------------------------------------------------


def decide_set_price(state: State, c: cmd.SetPrice, now_us: int) -> list[Event]:
    """Set a GPU model's price for jobs submitted from now on."""
    text("gpu_model", c.gpu_model)
    amount("halala_per_gpu_hour", c.halala_per_gpu_hour, minimum=0)
    if c.halala_per_gpu_hour > 10_000_000:
        raise ValidationError("halala_per_gpu_hour", "at most 10000000")
    return [
        ev.PriceSet(gpu_model=c.gpu_model, halala_per_gpu_hour=c.halala_per_gpu_hour, at_us=now_us)
    ]


def decide_allow_image(state: State, c: cmd.AllowImage, now_us: int) -> list[Event]:
    """Add an image reference (exact, "prefix*" or "repo@sha256:") to the allowlist."""
    text("reference", c.reference, max_len=512)
    if c.reference in state.images:
        return []
    return [ev.ImageAllowed(reference=c.reference, at_us=now_us)]


def decide_remove_image(state: State, c: cmd.RemoveImage, now_us: int) -> list[Event]:
    """Remove an allowlist entry; NotFound if it is not on the list."""
    if c.reference not in state.images:
        raise NotFound(f"image {c.reference!r} is not on the allowlist")
    return [ev.ImageRemoved(reference=c.reference, at_us=now_us)]


# --- withdrawals ---------------------------------------------------------------------------


def decide_withdraw(
    state: State, c: cmd.RequestWithdrawal, now_us: int, settings: Settings
) -> list[Event]:
    """Move earnings to payout_pending. Raises NotFound, ValidationError (amount under the
    minimum, bad IBAN) or InsufficientFunds (more than the earnings)."""
    require_provider(state, c.provider_id)
    amount("amount_halala", c.amount_halala, minimum=settings.min_withdrawal_halala)
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
            postings=money.withdraw(c.provider_id, c.amount_halala),
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
    if c.approve:
        return [
            ev.WithdrawalCompleted(
                withdrawal_id=w.withdrawal_id,
                provider_id=w.provider_id,
                amount_halala=w.amount_halala,
                at_us=now_us,
                postings=money.pay_out(w.provider_id, w.amount_halala),
            )
        ]
    return [
        ev.WithdrawalRejected(
            withdrawal_id=w.withdrawal_id,
            provider_id=w.provider_id,
            amount_halala=w.amount_halala,
            reason=c.reason,
            at_us=now_us,
            postings=money.return_withdrawal(w.provider_id, w.amount_halala),
        )
    ]


_IBAN = re.compile(r"SA[0-9]{22}")


def iban_is_valid(iban: str) -> bool:
    """A Saudi IBAN: "SA" + 22 digits with a valid ISO 13616 mod-97 check."""
    if not _IBAN.fullmatch(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    digits = "".join(str(int(c, 36)) for c in rearranged)
    return int(digits) % 97 == 1


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
        case cmd.TopUpCommand():
            return decide_gateway_topup(state, c, now_us, settings)
    raise TypeError(f"unknown command {type(c).__name__}")
