"""Which local read-model tables are mirrored, and how their columns map to the target's.

Every mirrored row carries `last_seq`. `credentials` (key hashes) and `job_outputs` are never
mirrored. Local SQLite stores flags as 0/1 and JSON as text; the target has BOOLEAN and JSONB.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Kind = Literal["int", "text", "bool", "json"]


class Column(msgspec.Struct, frozen=True):
    """One mirrored column: its local name, its target name, and its kind."""

    local: str
    target: str
    kind: Kind


class TableSpec(msgspec.Struct, frozen=True):
    """One mirrored table: local and target names, key columns, and every column in order."""

    local: str
    target: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    # Postings have no last_seq column locally: a posting never changes, so its seq is its
    # last_seq. `seq_expr` is the SQL for the row's last_seq in the local table.
    seq_expr: str = "last_seq"

    @property
    def target_columns(self) -> tuple[str, ...]:
        """Target column names, in order."""
        return tuple(c.target for c in self.columns)

    @property
    def target_key(self) -> tuple[str, ...]:
        """Target names of the key columns."""
        return tuple(next(c.target for c in self.columns if c.local == k) for k in self.key)


def _cols(spec: str) -> tuple[Column, ...]:
    """Parse "name:kind[>target], ..." into columns (the target name defaults to the local)."""
    out = []
    for part in spec.split(","):
        name, _, rest = part.strip().partition(":")
        kind, _, target = rest.partition(">")
        out.append(Column(local=name, target=target or name, kind=kind))  # type: ignore[arg-type]
    return tuple(out)


RENTERS = TableSpec(
    local="renters",
    target="dcp_renters",
    key=("renter_id",),
    columns=_cols("renter_id:text, name:text, email:text, created_at_us:int, last_seq:int"),
)

PROVIDERS = TableSpec(
    local="providers",
    target="dcp_providers",
    key=("provider_id",),
    columns=_cols(
        "provider_id:text, name:text, email:text, gpu_model:text, gpu_count:int, vram_gb:int,"
        " approval_status:text, paused:bool, suspended:bool, accepting_jobs:bool,"
        " daemon_version:text, last_heartbeat_us:int, gpus_json:json>gpus, created_at_us:int,"
        " last_seq:int"
    ),
)

JOBS = TableSpec(
    local="jobs",
    target="dcp_jobs",
    key=("job_id",),
    columns=_cols(
        "job_id:text, renter_id:text, provider_id:text, requested_provider_id:text,"
        " status:text, image:text, command_json:json>command, gpu_type:text, min_vram_gb:int,"
        " gpu_count:int, priority:text, max_duration_seconds:int, rate_halala_per_hour:int,"
        " cost_halala:int, actual_cost_halala:int, refunded_halala:int,"
        " provider_earned_halala:int, platform_fee_halala:int, attempt:int,"
        " lease_expires_us:int, submitted_at_us:int, submit_seq:int, assigned_at_us:int,"
        " started_at_us:int, ended_at_us:int, exit_code:int, error:text, last_seq:int"
    ),
)

ACCOUNTS = TableSpec(
    local="accounts",
    target="dcp_accounts",
    key=("account_id",),
    columns=_cols("account_id:text, balance_halala:int, last_seq:int"),
)

POSTINGS = TableSpec(
    local="postings",
    target="dcp_postings",
    key=("seq", "idx"),
    columns=_cols(
        "seq:int, idx:int, account_id:text, amount_halala:int, event_type:text, job_id:text,"
        " recorded_at_us:int, seq:int>last_seq"
    ),
    seq_expr="seq",
)

WITHDRAWALS = TableSpec(
    local="withdrawals",
    target="dcp_withdrawals",
    key=("withdrawal_id",),
    columns=_cols(
        "withdrawal_id:text, provider_id:text, amount_halala:int, iban:text, status:text,"
        " requested_at_us:int, decided_at_us:int, last_seq:int"
    ),
)

PRICING = TableSpec(
    local="pricing",
    target="dcp_pricing",
    key=("gpu_model",),
    columns=_cols("gpu_model:text, halala_per_gpu_hour:int, last_seq:int"),
)

TOPUPS = TableSpec(
    local="topups",
    target="dcp_topups",
    key=("topup_id",),
    columns=_cols(
        "topup_id:text, renter_id:text, amount_halala:int, status:text, invoice_id:text,"
        " checkout_url:text, payment_id:text, reason:text, gateway_amount_halala:int,"
        " gateway_currency:text, created_at_us:int, updated_at_us:int, last_seq:int"
    ),
)

MIRRORED: tuple[TableSpec, ...] = (
    RENTERS,
    PROVIDERS,
    JOBS,
    ACCOUNTS,
    POSTINGS,
    WITHDRAWALS,
    PRICING,
    TOPUPS,
)

NEVER_MIRRORED = frozenset({"credentials", "job_outputs"})
