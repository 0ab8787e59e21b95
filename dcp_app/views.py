"""The typed answers of `dcp_app`: one msgspec Struct per thing a caller is shown.

The same Struct comes from a command (`dcp_app.service`, built from the in-memory state) and
from a read (`dcp_app.queries`, built from the read-model rows), so an answer right after a
command and a later read are the same type with the same fields. They are the API's bodies as
they go on the wire: the HTTP layer encodes them as they are (SPEC: amounts in integer
halala, times as RFC 3339 strings in UTC with microseconds, `*_at`).

The builders at the end build each view from its read-model row (`job_view_of_row`,
`provider_view_of_row`, `withdrawal_view_of_row`, `topup_view_of_row`: `dcp_app.queries` calls
these), and the command path's builders (`job_view`, `provider_view`, ...) go through the same
ones with the row `dcp_projections.rows` makes of the state: one mapping of each view's fields,
so the two paths cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, overload

import msgspec

from dcp_events.catalogue import Priority, TopUpStatus
from dcp_projections.presence import Presence, presence
from dcp_projections.rows import Row, job_row, provider_row, topup_row, withdrawal_row
from dcp_projections.settings import Settings
from dcp_projections.state import Job, JobStatus, Price, Provider, State, TopUp, Withdrawal

ApprovalStatus = Literal["pending", "approved"]
WithdrawalStatus = Literal["pending", "completed", "rejected"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@overload
def rfc3339(us: int) -> str: ...
@overload
def rfc3339(us: None) -> None: ...
@overload
def rfc3339(us: int | None) -> str | None: ...
def rfc3339(us: int | None) -> str | None:
    """Integer microseconds since the epoch (UTC) -> `2026-01-01T00:00:00.000000Z`.

    Always with six fraction digits (msgspec's own datetime encoding drops a zero fraction,
    which would change the wire for times on a whole second)."""
    if us is None:
        return None
    return (_EPOCH + dt.timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def micros(at: str) -> int:
    """The inverse of `rfc3339`: `2026-01-01T00:00:00.000000Z` -> integer microseconds since
    the epoch (exact: the string carries all six fraction digits)."""
    t = dt.datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return (t - _EPOCH) // dt.timedelta(microseconds=1)


# The class names and docstrings are the OpenAPI document's component names and descriptions
# (dcp_http.openapi): renaming one changes the published schema.
class View(msgspec.Struct, kw_only=True):
    """Base of the answers."""


# --- renters -------------------------------------------------------------------------------


class RenterCreated(View):
    renter_id: str
    api_key: str


class Balance(View):
    balance_halala: int
    held_halala: int
    available_halala: int


class RenterProfile(View):
    renter_id: str
    name: str
    email: str
    created_at: str | None
    balance_halala: int
    held_halala: int
    available_halala: int


class CreditReply(View):
    renter_id: str
    amount_halala: int
    reference: str
    duplicate: bool  # the reference was credited before: nothing changed
    available_halala: int


class LedgerEntry(View):
    seq: int
    account: str
    amount_halala: int
    event_type: str
    job_id: str | None
    recorded_at: str | None


class LedgerPage(View):
    entries: list[LedgerEntry]
    next_cursor: str | None


# --- jobs ----------------------------------------------------------------------------------


class JobView(View):
    """A job with its money. The settlement fields are null until the job is settled."""

    job_id: str
    renter_id: str
    status: JobStatus
    provider_id: str | None
    requested_provider_id: str | None
    image: str
    command: list[str]
    gpu_type: str
    min_vram_gb: int
    gpu_count: int
    priority: Priority
    max_duration_seconds: int
    rate_halala_per_hour: int
    cost_halala: int
    actual_cost_halala: int | None
    refunded_halala: int | None
    provider_earned_halala: int | None
    platform_fee_halala: int | None
    attempt: int
    queue_position: int | None  # 1-based, null unless queued
    lease_expires_at: str | None
    submitted_at: str | None
    assigned_at: str | None
    started_at: str | None
    ended_at: str | None
    exit_code: int | None
    error: str | None


class JobsPage(View):
    jobs: list[JobView]
    next_cursor: str | None


class JobEvent(View):
    """One event of a job's timeline, from the log."""

    seq: int
    type: str
    recorded_at: str | None
    actor: str
    attempt: int | None


class JobOutputView(View):
    job_id: str
    exit_code: int | None
    stdout: str
    stderr: str
    truncated: bool
    sha256: str

    @property
    def empty(self) -> bool:
        """The result carried nothing: no exit code and both streams empty."""
        return self.exit_code is None and not self.stdout and not self.stderr


class ContainerSpecOut(View):
    image: str
    command: list[str]
    env: dict[str, str]


class GpuRequirementsOut(View):
    gpu_type: str
    min_vram_gb: int
    gpu_count: int


class LeasedJob(View):
    """A job leased to the calling provider: everything its worker needs to run it."""

    job_id: str
    status: JobStatus
    attempt: int
    lease_expires_at: str | None
    container_spec: ContainerSpecOut
    gpu_requirements: GpuRequirementsOut
    max_duration_seconds: int
    rate_halala_per_hour: int
    cost_halala: int
    assigned_at: str | None
    started_at: str | None


# --- providers -----------------------------------------------------------------------------


class ProviderCreated(View):
    provider_id: str
    api_key: str
    approval_status: ApprovalStatus


class HeartbeatReply(View):
    timestamp: str
    approval_status: ApprovalStatus
    paused: bool
    suspended: bool
    cancel_jobs: list[str]  # listed jobs the provider should stop (ended, or not its lease)


class GpuInfoOut(View):
    model: str
    count: int
    vram_total_mb: int
    vram_free_mb: int
    utilization_pct: int
    temperature_c: int
    driver_version: str
    cuda_version: str


class ProviderProfile(View):
    provider_id: str
    name: str
    email: str
    gpu_model: str
    gpu_count: int
    vram_gb: int
    approval_status: ApprovalStatus
    paused: bool
    suspended: bool
    state: Presence
    accepting_jobs: bool
    daemon_version: str
    last_heartbeat_at: str | None
    gpus: list[GpuInfoOut]
    created_at: str | None
    earnings_halala: int
    payout_pending_halala: int


class MarketplaceEntry(View):
    provider_id: str
    name: str
    gpu_model: str
    gpu_count: int
    vram_gb: int
    halala_per_gpu_hour: int
    state: Presence
    paused: bool


class WithdrawalView(View):
    withdrawal_id: str
    provider_id: str
    amount_halala: int
    iban: str
    status: WithdrawalStatus
    requested_at: str | None
    decided_at: str | None


# --- gateway top-ups ------------------------------------------------------------------------


class TopUpView(View):
    topup_id: str
    renter_id: str
    status: TopUpStatus
    amount_halala: int
    checkout_url: str | None
    invoice_id: str | None
    payment_id: str | None
    reason: str
    # What the gateway said about a disputed payment (null otherwise).
    gateway_amount_halala: int | None
    gateway_currency: str | None
    created_at: str
    updated_at: str

    # The gateway flows (dcp_http.payments) time their requests and cursors in microseconds.
    @property
    def created_at_us(self) -> int:
        return micros(self.created_at)

    @property
    def updated_at_us(self) -> int:
        return micros(self.updated_at)


class TopUpsPage(View):
    topups: list[TopUpView]
    next_cursor: str | None


# --- platform ------------------------------------------------------------------------------


class PriceView(View):
    gpu_model: str
    halala_per_gpu_hour: int


class AccountBalance(View):
    account: str
    balance_halala: int


class Reconciliation(View):
    sum_halala: int
    accounts: list[AccountBalance]
    events: int
    head_seq: int
    head_hash: str
    invariants_ok: bool


# --- from the in-memory state (the command answers) ----------------------------------------


# The JSON columns of the read models, decoded into the views' types.
_command = msgspec.json.Decoder(list[str])
_gpus = msgspec.json.Decoder(list[GpuInfoOut])


def job_view_of_row(row: Row, queue_position: int | None) -> JobView:
    """A `jobs` read-model row as the job view, with its place in the queue (None unless
    queued)."""
    return JobView(
        job_id=row["job_id"],
        renter_id=row["renter_id"],
        status=row["status"],
        provider_id=row["provider_id"],
        requested_provider_id=row["requested_provider_id"],
        image=row["image"],
        command=_command.decode(row["command_json"]),
        gpu_type=row["gpu_type"],
        min_vram_gb=row["min_vram_gb"],
        gpu_count=row["gpu_count"],
        priority=row["priority"],
        max_duration_seconds=row["max_duration_seconds"],
        rate_halala_per_hour=row["rate_halala_per_hour"],
        cost_halala=row["cost_halala"],
        actual_cost_halala=row["actual_cost_halala"],
        refunded_halala=row["refunded_halala"],
        provider_earned_halala=row["provider_earned_halala"],
        platform_fee_halala=row["platform_fee_halala"],
        attempt=row["attempt"],
        queue_position=queue_position,
        lease_expires_at=rfc3339(row["lease_expires_us"]),
        submitted_at=rfc3339(row["submitted_at_us"]),
        assigned_at=rfc3339(row["assigned_at_us"]),
        started_at=rfc3339(row["started_at_us"]),
        ended_at=rfc3339(row["ended_at_us"]),
        exit_code=row["exit_code"],
        error=row["error"],
    )


def job_view(state: State, job: Job) -> JobView:
    """A job as the read model holds it (its `jobs` row: one definition of the fields for both
    paths), with its place in the queue."""
    return job_view_of_row(job_row(job), state.queue_position(job))


def lease_view(job: Job) -> LeasedJob:
    spec, req = job.container_spec, job.gpu_requirements
    return LeasedJob(
        job_id=job.job_id,
        status=job.status,
        attempt=job.attempt,
        lease_expires_at=rfc3339(job.lease_expires_us),
        container_spec=ContainerSpecOut(
            image=spec.image, command=list(spec.command), env=dict(spec.env)
        ),
        gpu_requirements=GpuRequirementsOut(
            gpu_type=req.gpu_type, min_vram_gb=req.min_vram_gb, gpu_count=req.gpu_count
        ),
        max_duration_seconds=job.max_duration_seconds,
        rate_halala_per_hour=job.rate_halala_per_hour,
        cost_halala=job.cost_halala,
        assigned_at=rfc3339(job.assigned_at_us),
        started_at=rfc3339(job.started_at_us),
    )


def provider_view_of_row(
    row: Row, state: Presence, earnings_halala: int, payout_pending_halala: int
) -> ProviderProfile:
    """A `providers` read-model row as the provider's view, with its presence and balances."""
    return ProviderProfile(
        provider_id=row["provider_id"],
        name=row["name"],
        email=row["email"],
        gpu_model=row["gpu_model"],
        gpu_count=row["gpu_count"],
        vram_gb=row["vram_gb"],
        approval_status=row["approval_status"],
        paused=bool(row["paused"]),
        suspended=bool(row["suspended"]),
        state=state,
        accepting_jobs=bool(row["accepting_jobs"]),
        daemon_version=row["daemon_version"],
        last_heartbeat_at=rfc3339(row["last_heartbeat_us"]),
        gpus=_gpus.decode(row["gpus_json"]),
        created_at=rfc3339(row["created_at_us"]),
        earnings_halala=earnings_halala,
        payout_pending_halala=payout_pending_halala,
    )


def provider_view(state: State, p: Provider, now_us: int, settings: Settings) -> ProviderProfile:
    """A provider's own view: its `providers` row, presence, earnings and payout_pending."""
    return provider_view_of_row(
        provider_row(p),
        presence(p.last_heartbeat_us, now_us, settings),
        state.earnings(p.provider_id),
        state.payout_pending(p.provider_id),
    )


def withdrawal_view_of_row(row: Row) -> WithdrawalView:
    """A `withdrawals` read-model row as the withdrawal's view."""
    return WithdrawalView(
        withdrawal_id=row["withdrawal_id"],
        provider_id=row["provider_id"],
        amount_halala=row["amount_halala"],
        iban=row["iban"],
        status=row["status"],
        requested_at=rfc3339(row["requested_at_us"]),
        decided_at=rfc3339(row["decided_at_us"]),
    )


def withdrawal_view(w: Withdrawal) -> WithdrawalView:
    return withdrawal_view_of_row(withdrawal_row(w))


def balance_view(state: State, renter_id: str) -> Balance:
    available, held = state.available(renter_id), state.held(renter_id)
    return Balance(balance_halala=available + held, held_halala=held, available_halala=available)


def topup_view_of_row(row: Row) -> TopUpView:
    """A `topups` read-model row as the top-up view."""
    return TopUpView(
        topup_id=row["topup_id"],
        renter_id=row["renter_id"],
        status=row["status"],
        amount_halala=row["amount_halala"],
        checkout_url=row["checkout_url"],
        invoice_id=row["invoice_id"],
        payment_id=row["payment_id"],
        reason=row["reason"],
        gateway_amount_halala=row["gateway_amount_halala"],
        gateway_currency=row["gateway_currency"],
        created_at=rfc3339(row["created_at_us"]),
        updated_at=rfc3339(row["updated_at_us"]),
    )


def topup_view(t: TopUp) -> TopUpView:
    return topup_view_of_row(topup_row(t))


def price_view(p: Price) -> PriceView:
    return PriceView(gpu_model=p.gpu_model, halala_per_gpu_hour=p.halala_per_gpu_hour)
