"""Commands: what a caller asks the domain to do, as msgspec structs.

The service fills in server-made values (ids, key hashes) before deciding, so decisions stay
pure. Field limits are checked by the decisions (struct construction does not validate); the
HTTP layer validates request bodies with its own decoders before building these.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from dcp_events.catalogue import ContainerSpec, GpuInfo, GpuRequirements, Outcome, Priority


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every command."""


class RegisterRenter(Command, frozen=True, kw_only=True):
    renter_id: str
    name: str
    email: str
    key_hash: str


class CreditDeposit(Command, frozen=True, kw_only=True):
    renter_id: str
    amount_halala: int
    reference: str
    reason: str = ""


class TopUp(Command, frozen=True, kw_only=True):
    renter_id: str
    amount_halala: int


class RegisterProvider(Command, frozen=True, kw_only=True):
    provider_id: str
    name: str
    email: str
    gpu_model: str
    gpu_count: int
    vram_gb: int
    key_hash: str


ProviderFlag = Literal["approve", "suspend", "unsuspend", "pause", "resume"]


class SetProviderFlag(Command, frozen=True, kw_only=True):
    """approve / suspend / unsuspend (admin) or pause / resume (the provider)."""

    provider_id: str
    flag: ProviderFlag
    reason: str = ""


class Heartbeat(Command, frozen=True, kw_only=True):
    provider_id: str
    gpus: tuple[GpuInfo, ...] = ()
    running_job_ids: tuple[str, ...] = ()
    daemon_version: str = ""
    accepting_jobs: bool = True


class SetPrice(Command, frozen=True, kw_only=True):
    gpu_model: str
    halala_per_gpu_hour: int


class AllowImage(Command, frozen=True, kw_only=True):
    reference: str


class RemoveImage(Command, frozen=True, kw_only=True):
    reference: str


class SubmitJob(Command, frozen=True, kw_only=True):
    job_id: str
    renter_id: str
    container_spec: ContainerSpec
    gpu_requirements: GpuRequirements = GpuRequirements()
    priority: Priority = "standard"
    max_duration_seconds: int = 1800
    provider_id: str | None = None
    idempotency_key: str | None = None


class CancelJob(Command, frozen=True, kw_only=True):
    """By its renter (`renter_id` set: only their own job) or an admin (`renter_id` None)."""

    job_id: str
    renter_id: str | None = None


class ClaimJobs(Command, frozen=True, kw_only=True):
    provider_id: str


class StartJob(Command, frozen=True, kw_only=True):
    provider_id: str
    job_id: str
    attempt: int


class ReportResult(Command, frozen=True, kw_only=True):
    provider_id: str
    job_id: str
    attempt: int
    outcome: Outcome
    exit_code: int | None = None
    runtime_seconds: float = 0
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    error: str = ""


class RequeueJob(Command, frozen=True, kw_only=True):
    job_id: str


class RequestWithdrawal(Command, frozen=True, kw_only=True):
    withdrawal_id: str
    provider_id: str
    amount_halala: int
    iban: str


class DecideWithdrawal(Command, frozen=True, kw_only=True):
    withdrawal_id: str
    approve: bool  # True: completed (paid out); False: rejected (back to earnings)
    reason: str = ""


class Sweep(Command, frozen=True, kw_only=True):
    """End expired leases, jobs past their deadline and jobs queued too long."""


# --- gateway top-ups (dcp_projections.topups) ---------------------------------------------


class TopUpCommand(Command, frozen=True, kw_only=True):
    """Base of the gateway top-up commands; `decide` sends them to dcp_projections.topups."""

    topup_id: str


class RequestTopUp(TopUpCommand, frozen=True, kw_only=True):
    renter_id: str
    amount_halala: int
    idempotency_key: str | None = None


class RecordInvoice(TopUpCommand, frozen=True, kw_only=True):
    """The gateway made the top-up's invoice (its id and hosted checkout URL)."""

    invoice_id: str
    checkout_url: str


class ObserveTopUp(TopUpCommand, frozen=True, kw_only=True):
    """What the gateway's own API said about a top-up's invoice or payment, never what a
    notification's body claimed. Empty fields: the gateway did not say."""

    source: Literal["webhook", "sweep", "request"] = "sweep"
    invoice_id: str = ""
    invoice_status: str = ""
    payment_id: str = ""
    payment_status: str = ""
    amount_halala: int = 0
    currency: str = ""
    reason: str = ""


class RefundTopUp(TopUpCommand, frozen=True, kw_only=True):
    """Admin: refund a paid top-up (ledgered before the gateway is asked)."""


class SettleRefund(TopUpCommand, frozen=True, kw_only=True):
    """The gateway's answer to a refund: done (`succeeded`) or definitively refused."""

    succeeded: bool
    reason: str = ""
