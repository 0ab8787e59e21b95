"""Response bodies, as msgspec types: what the handlers encode and what OpenAPI documents.

Amounts are integer halala (`*_halala`); times are RFC 3339 strings in UTC with microseconds
(`*_at`), rendered from the domain's integer microseconds by `rfc3339`. What dcp_app answers
with (jobs, providers, balances, ...) is defined once, in `dcp_app.views`; the wrappers and
the bodies only this layer builds are here.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

# The bodies dcp_app answers with are its own view Structs, encoded as they are.
from dcp_app.views import (
    AccountBalance,
    Balance,
    ContainerSpecOut,
    CreditReply,
    GpuInfoOut,
    GpuRequirementsOut,
    HeartbeatReply,
    JobEvent,
    JobOutputView,
    JobsPage,
    JobView,
    LeasedJob,
    LedgerEntry,
    LedgerPage,
    MarketplaceEntry,
    PriceView,
    ProviderCreated,
    ProviderProfile,
    Reconciliation,
    RenterCreated,
    RenterProfile,
    WithdrawalView,
    rfc3339,
)
from dcp_http.requests import JobStatus, Outcome

__all__ = [
    "AccountBalance",
    "Balance",
    "ContainerSpecOut",
    "CreditReply",
    "GpuInfoOut",
    "GpuRequirementsOut",
    "HeartbeatReply",
    "JobEvent",
    "JobOutputView",
    "JobView",
    "JobsPage",
    "LeasedJob",
    "LedgerEntry",
    "LedgerPage",
    "MarketplaceEntry",
    "PriceView",
    "ProviderCreated",
    "ProviderProfile",
    "Reconciliation",
    "RenterCreated",
    "RenterProfile",
    "WithdrawalView",
    "rfc3339",
]


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


class JobReply(Out):
    job: JobView


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


class LeaseReply(Out):
    job: LeasedJob


class LeasedJobs(Out):
    jobs: list[LeasedJob]


class NextJob(Out):
    job: LeasedJob | None


class Earnings(Out):
    provider_id: str
    earnings_halala: int
    payout_pending_halala: int


class WithdrawalsPage(Out):
    withdrawals: list[WithdrawalView]
    next_cursor: str | None


class Marketplace(Out):
    providers: list[MarketplaceEntry]


# --- admin ---------------------------------------------------------------------------------


class ImageList(Out):
    images: list[str]


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
