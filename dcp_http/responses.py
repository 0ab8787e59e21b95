"""Response bodies, as msgspec types: what the handlers encode and what OpenAPI documents.

Amounts are integer halala (`*_halala`); times are RFC 3339 strings in UTC with microseconds
(`*_at`), rendered from the domain's integer microseconds by `rfc3339`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec

from dcp_http.requests import JobStatus, Outcome, Priority, WithdrawalStatus

ApprovalStatus = Literal["pending", "approved"]
ProviderState = Literal["online", "stale", "offline"]


def rfc3339(us: int | None) -> str | None:
    """Integer microseconds since the epoch (UTC) -> `2026-01-01T00:00:00.000000Z`."""
    if us is None:
        return None
    t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Out(msgspec.Struct, kw_only=True):
    """Base of response bodies."""


# --- system --------------------------------------------------------------------------------


class Health(Out):
    status: Literal["ok"] = "ok"


class Readiness(Out):
    status: Literal["ready", "not_ready"]
    store_writable: bool
    projections_caught_up: bool
    head_seq: int
    projection_seq: int
    # Events of the log this node's in-memory state has not folded yet (it folds them before
    # its next decision; several nodes on one PostgreSQL log each fold the others' events).
    events_behind: int = 0


# --- renters -------------------------------------------------------------------------------


class RenterCreated(Out):
    renter_id: str
    api_key: str


class Balance(Out):
    balance_halala: int
    held_halala: int
    available_halala: int


class RenterProfile(Out):
    renter_id: str
    name: str
    email: str
    created_at: str | None
    balance_halala: int
    held_halala: int
    available_halala: int


class LedgerEntry(Out):
    seq: int
    account: str
    amount_halala: int
    event_type: str
    job_id: str | None
    recorded_at: str | None


class LedgerPage(Out):
    entries: list[LedgerEntry]
    next_cursor: str | None


# --- jobs ----------------------------------------------------------------------------------


class SubmittedJob(Out):
    job_id: str
    status: JobStatus
    cost_halala: int
    rate_halala_per_hour: int
    max_duration_seconds: int
    queue_position: int | None


class JobSubmittedReply(Out):
    job: SubmittedJob


class ContainerSpecOut(Out):
    image: str
    command: list[str]
    env: dict[str, str]


class GpuRequirementsOut(Out):
    gpu_type: str
    min_vram_gb: int
    gpu_count: int


class JobView(Out):
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
    queue_position: int | None
    lease_expires_at: str | None
    submitted_at: str | None
    assigned_at: str | None
    started_at: str | None
    ended_at: str | None
    exit_code: int | None
    error: str | None


class JobEvent(Out):
    """One event of a job's timeline, from the log."""

    seq: int
    type: str
    recorded_at: str | None
    actor: str
    attempt: int | None


class JobReply(Out):
    job: JobView


class JobsPage(Out):
    jobs: list[JobView]
    next_cursor: str | None


class JobOutputView(Out):
    job_id: str
    exit_code: int | None
    stdout: str
    stderr: str
    truncated: bool
    sha256: str


class JobPending(Out):
    job_id: str
    status: JobStatus


class SettlementView(Out):
    actual_cost_halala: int
    refunded_halala: int
    provider_earned_halala: int
    platform_fee_halala: int


class JobResultReply(Out):
    job: JobView
    outcome: Outcome
    settlement: SettlementView | None


# --- providers -----------------------------------------------------------------------------


class ProviderCreated(Out):
    provider_id: str
    api_key: str
    approval_status: ApprovalStatus


class HeartbeatReply(Out):
    timestamp: str
    approval_status: ApprovalStatus
    paused: bool
    suspended: bool
    cancel_jobs: list[str]


class LeasedJob(Out):
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


class LeaseReply(Out):
    job: LeasedJob


class LeasedJobs(Out):
    jobs: list[LeasedJob]


class NextJob(Out):
    job: LeasedJob | None


class GpuInfoOut(Out):
    model: str
    count: int
    vram_total_mb: int
    vram_free_mb: int
    utilization_pct: int
    temperature_c: int
    driver_version: str
    cuda_version: str


class ProviderProfile(Out):
    provider_id: str
    name: str
    email: str
    gpu_model: str
    gpu_count: int
    vram_gb: int
    approval_status: ApprovalStatus
    paused: bool
    suspended: bool
    state: ProviderState
    accepting_jobs: bool
    daemon_version: str
    last_heartbeat_at: str | None
    gpus: list[GpuInfoOut]
    created_at: str | None
    earnings_halala: int
    payout_pending_halala: int


class Earnings(Out):
    provider_id: str
    earnings_halala: int
    payout_pending_halala: int


class WithdrawalView(Out):
    withdrawal_id: str
    provider_id: str
    amount_halala: int
    iban: str
    status: WithdrawalStatus
    requested_at: str | None
    decided_at: str | None


class WithdrawalsPage(Out):
    withdrawals: list[WithdrawalView]
    next_cursor: str | None


class MarketplaceEntry(Out):
    provider_id: str
    name: str
    gpu_model: str
    gpu_count: int
    vram_gb: int
    halala_per_gpu_hour: int
    state: ProviderState
    paused: bool


class Marketplace(Out):
    providers: list[MarketplaceEntry]


# --- admin ---------------------------------------------------------------------------------


class CreditReply(Out):
    renter_id: str
    amount_halala: int
    reference: str
    duplicate: bool
    available_halala: int


class PriceView(Out):
    gpu_model: str
    halala_per_gpu_hour: int


class ImageList(Out):
    images: list[str]


class AccountBalance(Out):
    account: str
    balance_halala: int


class Reconciliation(Out):
    sum_halala: int
    accounts: list[AccountBalance]
    events: int
    head_seq: int
    head_hash: str
    invariants_ok: bool


class EventView(Out):
    seq: int
    stream_id: str
    stream_version: int
    type: str
    schema_version: int
    payload: dict[str, Any]
    recorded_at: str | None
    actor: str
    idempotency_key: str | None
    prev_hash: str
    hash: str


class EventsPage(Out):
    events: list[EventView]
    next_after: int
