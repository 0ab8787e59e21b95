"""Every event type of the DCP domain, so the log is self-describing.

Rules (docs/design.md): each type is a frozen, keyword-only msgspec Struct with an explicit,
stable tag; fields are only ever added, with defaults; a tag is never reused. Events record
decisions, not requests: a time-dependent event carries `at_us` (the decision's time, integer
microseconds UTC) and every number a fold needs (lease expiry, attempt, settlement), so
folding never needs a clock or the settings. Money-moving events carry `postings` summing to 0.
Registrations carry `key_hash` (hex sha256 of the API key), never the key.

Every struct here is `gc=False`: events are immutable trees that never form reference cycles,
and leaving them out of the cyclic garbage collector's lists halves decoding time when a
whole log is folded (msgspec's performance advice).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from dcp_events.event import Event, Halala, Posting, register_upcaster

Priority = Literal["priority", "standard", "economy"]
Outcome = Literal["completed", "timed_out", "cancelled", "failed"]


# --- parts ---------------------------------------------------------------------------------


class GpuInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One GPU model's line in a heartbeat's inventory."""

    model: str
    count: int = 1
    vram_total_mb: int = 0
    vram_free_mb: int = 0
    utilization_pct: int = 0
    temperature_c: int = 0
    driver_version: str = ""
    cuda_version: str = ""


class ContainerSpec(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What to run: an allowlisted image, its command line and environment."""

    image: str
    command: tuple[str, ...] = ()
    env: dict[str, str] = msgspec.field(default_factory=dict)


class GpuRequirements(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What a job needs from a provider. `gpu_type` "any" runs anywhere at the default price."""

    gpu_type: str = "any"
    min_vram_gb: int = 0
    gpu_count: int = 1


class Settlement(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The numbers of one hold's settlement (SPEC section 2); all zero but the refund for
    a job that is refunded in full."""

    billable_seconds: int = 0
    actual_cost_halala: Halala = 0
    refunded_halala: Halala = 0
    provider_earned_halala: Halala = 0
    platform_fee_halala: Halala = 0


class JobOutput(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A job's captured output; `sha256` is over stdout and stderr (see settlement docs)."""

    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    sha256: str = ""


class LeaseRenewal(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A heartbeat's renewal of one lease: the attempt it renews and the new expiry."""

    job_id: str
    attempt: int
    lease_expires_us: int


# --- renters -------------------------------------------------------------------------------


class RenterRegistered(Event, tag="renter.registered", frozen=True, kw_only=True, gc=False):
    renter_id: str
    name: str
    email: str
    key_hash: str
    at_us: int


class DepositCredited(Event, tag="renter.deposit_credited", frozen=True, kw_only=True, gc=False):
    """An admin credit, idempotent by `reference`: world:deposits -> renter available."""

    renter_id: str
    amount_halala: Halala
    reference: str
    reason: str = ""
    at_us: int
    postings: tuple[Posting, ...]


class SandboxToppedUp(Event, tag="renter.sandbox_topped_up", frozen=True, kw_only=True, gc=False):
    """A renter's own top-up in sandbox mode: platform:adjustments -> renter available."""

    renter_id: str
    amount_halala: Halala
    at_us: int
    postings: tuple[Posting, ...]


# --- gateway top-ups (docs/payments.md) ----------------------------------------------------
# A renter pays through the payment gateway's hosted invoice; the money is credited only when
# the gateway's own API says the payment is paid, for exactly the amount, in SAR, once per
# gateway payment id. Every top-up event is in its renter's stream.

TopUpStatus = Literal["pending", "paid", "failed", "expired", "disputed", "refunding", "refunded"]


class TopUpRequested(Event, tag="renter.topup_requested", frozen=True, kw_only=True, gc=False):
    """A renter asked to pay `amount_halala`; recorded before the gateway's invoice is made,
    so an invoice whose creation outcome is unknown can be found again by `topup_id`."""

    topup_id: str
    renter_id: str
    amount_halala: Halala
    idempotency_key: str | None = None
    at_us: int


class TopUpInvoiceCreated(
    Event, tag="renter.topup_invoice_created", frozen=True, kw_only=True, gc=False
):
    """The gateway's invoice for a top-up: its id and hosted checkout URL."""

    topup_id: str
    renter_id: str
    invoice_id: str
    checkout_url: str
    at_us: int


class TopUpPaid(Event, tag="renter.topup_paid", frozen=True, kw_only=True, gc=False):
    """The gateway said payment `payment_id` of the top-up's invoice is paid, in SAR, for
    exactly the amount: world:deposits -> renter available. One per payment id, ever."""

    topup_id: str
    renter_id: str
    payment_id: str
    invoice_id: str = ""
    amount_halala: Halala
    source: Literal["webhook", "sweep", "request"] = "webhook"
    at_us: int
    postings: tuple[Posting, ...]


class TopUpFailed(Event, tag="renter.topup_failed", frozen=True, kw_only=True, gc=False):
    """No money came: the invoice failed, was canceled or expired at the gateway, or its
    creation was refused or never confirmed (`status` failed or expired)."""

    topup_id: str
    renter_id: str
    status: Literal["failed", "expired"]
    reason: str = ""
    at_us: int


class TopUpDisputed(Event, tag="renter.topup_disputed", frozen=True, kw_only=True, gc=False):
    """The gateway says a payment is paid, but not for the top-up's amount in SAR: nothing is
    credited and an admin must look (what the gateway said is kept)."""

    topup_id: str
    renter_id: str
    payment_id: str
    gateway_amount_halala: Halala
    gateway_currency: str
    reason: str = ""
    at_us: int


class TopUpRefundRequested(
    Event, tag="renter.topup_refund_requested", frozen=True, kw_only=True, gc=False
):
    """An admin refunds a paid top-up: renter available -> world:deposits, ledgered before
    the gateway is asked to refund."""

    topup_id: str
    renter_id: str
    payment_id: str
    amount_halala: Halala
    at_us: int
    postings: tuple[Posting, ...]


class TopUpRefunded(Event, tag="renter.topup_refunded", frozen=True, kw_only=True, gc=False):
    """The gateway confirmed the refund. No money moves here (it moved at the request)."""

    topup_id: str
    renter_id: str
    at_us: int


class TopUpRefundReversed(
    Event, tag="renter.topup_refund_reversed", frozen=True, kw_only=True, gc=False
):
    """The gateway definitively refused the refund: world:deposits -> renter available,
    and the top-up is paid again."""

    topup_id: str
    renter_id: str
    amount_halala: Halala
    reason: str = ""
    at_us: int
    postings: tuple[Posting, ...]


# --- providers -----------------------------------------------------------------------------


class ProviderRegistered(Event, tag="provider.registered", frozen=True, kw_only=True, gc=False):
    provider_id: str
    name: str
    email: str
    gpu_model: str
    gpu_count: int
    vram_gb: int
    key_hash: str
    approved: bool = False  # True when the server auto-approves (DCP_AUTO_APPROVE)
    at_us: int


class ProviderApproved(Event, tag="provider.approved", frozen=True, kw_only=True, gc=False):
    provider_id: str
    at_us: int


class ProviderSuspended(Event, tag="provider.suspended", frozen=True, kw_only=True, gc=False):
    provider_id: str
    reason: str = ""
    at_us: int


class ProviderUnsuspended(Event, tag="provider.unsuspended", frozen=True, kw_only=True, gc=False):
    provider_id: str
    at_us: int


class ProviderPaused(Event, tag="provider.paused", frozen=True, kw_only=True, gc=False):
    provider_id: str
    at_us: int


class ProviderResumed(Event, tag="provider.resumed", frozen=True, kw_only=True, gc=False):
    provider_id: str
    at_us: int


class ProviderHeartbeat(Event, tag="provider.heartbeat", frozen=True, kw_only=True, gc=False):
    """A heartbeat, with the leases it renewed (decided from `running_job_ids`)."""

    provider_id: str
    at_us: int
    gpus: tuple[GpuInfo, ...] = ()
    running_job_ids: tuple[str, ...] = ()
    daemon_version: str = ""
    accepting_jobs: bool = True
    renewals: tuple[LeaseRenewal, ...] = ()


# --- platform configuration ----------------------------------------------------------------


class PriceSet(Event, tag="platform.price_set", frozen=True, kw_only=True, gc=False):
    gpu_model: str
    halala_per_gpu_hour: Halala
    at_us: int


class ImageAllowed(Event, tag="platform.image_allowed", frozen=True, kw_only=True, gc=False):
    reference: str
    at_us: int


class ImageRemoved(Event, tag="platform.image_removed", frozen=True, kw_only=True, gc=False):
    reference: str
    at_us: int


# --- jobs ----------------------------------------------------------------------------------


class JobSubmitted(Event, tag="job.submitted", frozen=True, kw_only=True, gc=False):
    """A job enters the queue; its rate and reserve are fixed here, once, for its whole life.
    Postings move the reserve (`cost_halala`) from available to held."""

    job_id: str
    renter_id: str
    container_spec: ContainerSpec
    gpu_requirements: GpuRequirements
    priority: Priority = "standard"
    max_duration_seconds: int
    requested_provider_id: str | None = None
    idempotency_key: str | None = None
    price_halala_per_gpu_hour: Halala
    rate_halala_per_hour: Halala
    cost_halala: Halala
    attempt: int = 1
    at_us: int
    postings: tuple[Posting, ...]


class JobClaimed(Event, tag="job.claimed", frozen=True, kw_only=True, gc=False):
    """A provider's poll leased the job: attempt is the fencing number of this lease.

    v2 adds `gpu_price_halala_per_gpu_hour`, the price of the provider's GPU model at the
    claim, which the job's own price must cover (docs/ledger.md, "Any GPU"); None in a v1
    claim, made before that rule.
    """

    schema_version: ClassVar[int] = 2

    job_id: str
    renter_id: str
    provider_id: str
    attempt: int
    lease_expires_us: int
    at_us: int
    gpu_price_halala_per_gpu_hour: int | None = None


# v1 -> v2: a claim from before GPU prices were checked records none.
register_upcaster("job.claimed", 1, lambda obj: obj)


class JobStarted(Event, tag="job.started", frozen=True, kw_only=True, gc=False):
    job_id: str
    renter_id: str
    provider_id: str
    attempt: int
    at_us: int


class JobCompleted(Event, tag="job.completed", frozen=True, kw_only=True, gc=False):
    """The container ran (any exit code): charged by runtime, the rest refunded."""

    job_id: str
    renter_id: str
    provider_id: str
    attempt: int
    reported_runtime_seconds: int
    measured_runtime_seconds: int
    output: JobOutput
    settlement: Settlement
    # Identifies the provider report this came from, so a repeat is recognised.
    result_fingerprint: str = ""
    at_us: int
    postings: tuple[Posting, ...]


class JobTimedOut(Event, tag="job.timed_out", frozen=True, kw_only=True, gc=False):
    """Killed at max_duration_seconds, by the provider's report or the server's deadline
    sweep (`source`): charged up to the whole reserve."""

    job_id: str
    renter_id: str
    provider_id: str
    attempt: int
    source: Literal["provider", "deadline"] = "provider"
    reported_runtime_seconds: int | None = None
    measured_runtime_seconds: int
    output: JobOutput | None = None
    settlement: Settlement
    # Identifies the provider report this came from, so a repeat is recognised.
    result_fingerprint: str = ""
    at_us: int
    postings: tuple[Posting, ...]


class JobCancelled(Event, tag="job.cancelled", frozen=True, kw_only=True, gc=False):
    """Cancelled by its renter, an admin, or its provider's report. While queued nothing is
    charged; while assigned or running it is charged by runtime."""

    job_id: str
    renter_id: str
    provider_id: str | None = None
    attempt: int
    by: Literal["renter", "admin", "provider"]
    was_status: str
    reported_runtime_seconds: int | None = None
    measured_runtime_seconds: int = 0
    output: JobOutput | None = None
    settlement: Settlement
    # Identifies the provider report this came from, so a repeat is recognised.
    result_fingerprint: str = ""
    at_us: int
    postings: tuple[Posting, ...]


class JobAttemptFailed(Event, tag="job.attempt_failed", frozen=True, kw_only=True, gc=False):
    """The provider reported an infrastructure fault and attempts remain: back to the queue
    with `next_attempt`. No money moves."""

    job_id: str
    renter_id: str
    provider_id: str
    attempt: int
    next_attempt: int
    error: str = ""
    # Identifies the provider report this came from, so a repeat is recognised.
    result_fingerprint: str = ""
    at_us: int


class JobFailed(Event, tag="job.failed", frozen=True, kw_only=True, gc=False):
    """The job ends as failed and its hold is refunded in full: an infrastructure fault on
    the last attempt, or no provider before the queue timeout."""

    job_id: str
    renter_id: str
    provider_id: str | None = None
    attempt: int
    reason: Literal["infrastructure", "queue_timeout"]
    error: str = ""
    output: JobOutput | None = None
    settlement: Settlement
    # Identifies the provider report this came from, so a repeat is recognised.
    result_fingerprint: str = ""
    at_us: int
    postings: tuple[Posting, ...]


class JobLeaseExpired(Event, tag="job.lease_expired", frozen=True, kw_only=True, gc=False):
    """A lease ran out. `requeued`: back to the queue with `next_attempt`, no money moves;
    otherwise the attempts are spent and the job fails, refunded in full."""

    job_id: str
    renter_id: str
    provider_id: str
    attempt: int
    requeued: bool
    next_attempt: int | None = None
    settlement: Settlement | None = None
    at_us: int
    postings: tuple[Posting, ...] = ()


class JobRequeued(Event, tag="job.requeued", frozen=True, kw_only=True, gc=False):
    """An admin requeued a failed job: a new hold of the same reserve at the job's original
    rate, and fresh attempts starting at `attempt`."""

    job_id: str
    renter_id: str
    cost_halala: Halala
    attempt: int
    at_us: int
    postings: tuple[Posting, ...]


# --- withdrawals ---------------------------------------------------------------------------


class WithdrawalRequested(Event, tag="withdrawal.requested", frozen=True, kw_only=True, gc=False):
    """Earnings -> payout_pending."""

    withdrawal_id: str
    provider_id: str
    amount_halala: Halala
    iban: str
    at_us: int
    postings: tuple[Posting, ...]


class WithdrawalCompleted(Event, tag="withdrawal.completed", frozen=True, kw_only=True, gc=False):
    """payout_pending -> world:payouts (the money left the platform)."""

    withdrawal_id: str
    provider_id: str
    amount_halala: Halala
    at_us: int
    postings: tuple[Posting, ...]


class WithdrawalRejected(Event, tag="withdrawal.rejected", frozen=True, kw_only=True, gc=False):
    """payout_pending -> earnings (back to the provider)."""

    withdrawal_id: str
    provider_id: str
    amount_halala: Halala
    reason: str = ""
    at_us: int
    postings: tuple[Posting, ...]


ALL_EVENTS: tuple[type[Event], ...] = (
    RenterRegistered,
    DepositCredited,
    SandboxToppedUp,
    ProviderRegistered,
    ProviderApproved,
    ProviderSuspended,
    ProviderUnsuspended,
    ProviderPaused,
    ProviderResumed,
    ProviderHeartbeat,
    PriceSet,
    ImageAllowed,
    ImageRemoved,
    JobSubmitted,
    JobClaimed,
    JobStarted,
    JobCompleted,
    JobTimedOut,
    JobCancelled,
    JobAttemptFailed,
    JobFailed,
    JobLeaseExpired,
    JobRequeued,
    WithdrawalRequested,
    WithdrawalCompleted,
    WithdrawalRejected,
    TopUpRequested,
    TopUpInvoiceCreated,
    TopUpPaid,
    TopUpFailed,
    TopUpDisputed,
    TopUpRefundRequested,
    TopUpRefunded,
    TopUpRefundReversed,
)
