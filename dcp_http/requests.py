"""Request bodies and query strings, as msgspec types that validate where data enters.

Every body forbids unknown fields; every number and string is bounded (`Meta`), so floats,
negatives, huge numbers, wrong types and oversized strings are refused with 400 before any
handler runs. These types are also the OpenAPI request schemas.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from dcp_projections.decisions import iban_is_valid
from dcp_projections.text import CONTROL, ENV_KEY, PRINTABLE, whole

# Amounts: integers only, far below 2**53 so every JSON reader keeps them exact.
MAX_AMOUNT_HALALA = 10**12
AmountHalala = Annotated[
    int, Meta(ge=1, le=MAX_AMOUNT_HALALA, description="integer halala (1 SAR = 100 halala)")
]
PriceHalala = Annotated[int, Meta(ge=0, le=10_000_000, description="halala per GPU hour")]

# Printable text: no control characters (NUL, newlines, escapes) in names and ids. Every
# pattern is `whole()`: anchored at the true end, so no trailing newline slips through.
_EMAIL_PART = rf"[^@\s{CONTROL}]+"
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=PRINTABLE)]
Email = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=254,
        pattern=whole(rf"{_EMAIL_PART}@{_EMAIL_PART}\.{_EMAIL_PART}"),
    ),
]
Id = Annotated[str, Meta(min_length=1, max_length=100, pattern=whole(r"[A-Za-z0-9_.:-]+"))]
ShortText = Annotated[str, Meta(max_length=500, pattern=PRINTABLE)]
ImageRef = Annotated[
    str, Meta(min_length=1, max_length=500, pattern=whole(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*"))
]
Iban = Annotated[
    str,
    Meta(
        pattern=whole(r"SA[0-9]{22}"),
        description="Saudi IBAN: SA + 22 digits, valid ISO 13616 mod-97 check",
        examples=["SA0380000000608010167519"],
    ),
]
Priority = Literal["priority", "standard", "economy"]
Outcome = Literal["completed", "timed_out", "cancelled", "failed"]
JobStatus = Literal[
    "queued", "assigned", "running", "completed", "timed_out", "failed", "cancelled"
]
WithdrawalStatus = Literal["pending", "completed", "rejected"]

MAX_OUTPUT_CHARS = 1024 * 1024


class Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: unknown fields are an error."""


class Query(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of query strings."""


# --- registration --------------------------------------------------------------------------


class RegisterRenter(Body):
    name: Name
    email: Email


class RegisterProvider(Body):
    name: Name
    email: Email
    gpu_model: Annotated[str, Meta(min_length=1, max_length=100, pattern=PRINTABLE)]
    gpu_count: Annotated[int, Meta(ge=1, le=64)]
    vram_gb: Annotated[int, Meta(ge=1, le=4096)]


class TopUp(Body):
    amount_halala: AmountHalala


# --- jobs ----------------------------------------------------------------------------------


class ContainerSpecIn(Body):
    image: ImageRef
    command: Annotated[list[Annotated[str, Meta(max_length=4096)]], Meta(max_length=256)] = (
        msgspec.field(default_factory=list)
    )
    env: Annotated[
        dict[
            Annotated[str, Meta(min_length=1, max_length=256, pattern=ENV_KEY)],
            Annotated[str, Meta(max_length=8192)],
        ],
        Meta(max_length=128),
    ] = msgspec.field(default_factory=dict)


class GpuRequirementsIn(Body):
    gpu_type: Annotated[str, Meta(min_length=1, max_length=64, pattern=PRINTABLE)] = "any"
    min_vram_gb: Annotated[int, Meta(ge=0, le=4096)] = 0
    gpu_count: Annotated[int, Meta(ge=1, le=64)] = 1


class SubmitJob(Body):
    container_spec: ContainerSpecIn
    gpu_requirements: GpuRequirementsIn = msgspec.field(default_factory=GpuRequirementsIn)
    provider_id: Id | None = None
    max_duration_seconds: Annotated[int, Meta(ge=60, le=86400)] = 1800
    priority: Priority = "standard"


class JobsQuery(Query):
    status: JobStatus | None = None
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    cursor: Annotated[str, Meta(max_length=100)] | None = None


class PageQuery(Query):
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    cursor: Annotated[str, Meta(max_length=100)] | None = None


# --- providers -----------------------------------------------------------------------------


class GpuInfoIn(Body):
    model: Annotated[str, Meta(min_length=1, max_length=100, pattern=PRINTABLE)]
    count: Annotated[int, Meta(ge=1, le=64)] = 1
    vram_total_mb: Annotated[int, Meta(ge=0, le=10**7)] = 0
    vram_free_mb: Annotated[int, Meta(ge=0, le=10**7)] = 0
    utilization_pct: Annotated[int, Meta(ge=0, le=100)] = 0
    temperature_c: Annotated[int, Meta(ge=-100, le=300)] = 0
    driver_version: Annotated[str, Meta(max_length=64, pattern=PRINTABLE)] = ""
    cuda_version: Annotated[str, Meta(max_length=64, pattern=PRINTABLE)] = ""


class Heartbeat(Body):
    gpus: Annotated[list[GpuInfoIn], Meta(max_length=64)] = msgspec.field(default_factory=list)
    running_job_ids: Annotated[list[Id], Meta(max_length=1024)] = msgspec.field(
        default_factory=list
    )
    daemon_version: Annotated[str, Meta(max_length=64, pattern=PRINTABLE)] = ""
    accepting_jobs: bool = True


class JobStarted(Body):
    attempt: Annotated[int, Meta(ge=1, le=10**6)]


class JobResult(Body):
    job_id: Id
    attempt: Annotated[int, Meta(ge=1, le=10**6)]
    outcome: Outcome
    exit_code: Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)] | None = None
    runtime_seconds: Annotated[
        float, Meta(ge=0, le=864_000, description="wall-clock seconds the container ran")
    ] = 0
    stdout: Annotated[str, Meta(max_length=MAX_OUTPUT_CHARS)] = ""
    stderr: Annotated[str, Meta(max_length=MAX_OUTPUT_CHARS)] = ""
    truncated: bool = False
    error: Annotated[str, Meta(max_length=4096)] | None = None


class Withdraw(Body):
    amount_halala: AmountHalala
    iban: Iban

    def __post_init__(self) -> None:
        # The pattern has already checked the shape; the domain's check is the one rule.
        if not iban_is_valid(self.iban):
            raise ValueError("iban: fails the ISO 13616 mod-97 check")


# --- admin ---------------------------------------------------------------------------------


class Credit(Body):
    amount_halala: AmountHalala
    reference: Annotated[str, Meta(min_length=1, max_length=200, pattern=PRINTABLE)]
    reason: ShortText = ""


class Reason(Body):
    reason: ShortText = ""


class SetPrice(Body):
    halala_per_gpu_hour: PriceHalala


class ImageBody(Body):
    reference: ImageRef


class WithdrawalsQuery(Query):
    status: WithdrawalStatus | None = None
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    cursor: Annotated[str, Meta(max_length=100)] | None = None


class EventsQuery(Query):
    after: Annotated[int, Meta(ge=0, le=2**62)] = 0
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100
