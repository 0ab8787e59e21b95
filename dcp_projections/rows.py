"""Read-model rows (schemas/002_projections.sql) as pure functions of the state.

Each `*_row` returns a dict keyed by column name, in the table's column order; `TABLES`
names each table's columns and key. `changed_rows(state, touched)` gives the upserts and
deletes for the entities a batch touched; `all_rows(state)` gives every row (rebuild).
Rows depend only on the events folded (never on a clock), so a rebuild yields identical rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from dcp_events.event import Event
from dcp_projections.state import (
    Credential,
    Job,
    Price,
    Provider,
    Renter,
    State,
    TopUp,
    Touched,
    Withdrawal,
)

Row = dict[str, Any]

_json = msgspec.json.Encoder()

# table -> (key column, columns in order)
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "credentials": ("key_hash", ("key_hash", "role", "subject_id", "last_seq")),
    "renters": ("renter_id", ("renter_id", "name", "email", "created_at_us", "last_seq")),
    "providers": (
        "provider_id",
        (
            "provider_id",
            "name",
            "email",
            "gpu_model",
            "gpu_count",
            "vram_gb",
            "approval_status",
            "paused",
            "suspended",
            "accepting_jobs",
            "daemon_version",
            "last_heartbeat_us",
            "gpus_json",
            "created_at_us",
            "last_seq",
        ),
    ),
    "jobs": (
        "job_id",
        (
            "job_id",
            "renter_id",
            "provider_id",
            "requested_provider_id",
            "status",
            "image",
            "command_json",
            "gpu_type",
            "min_vram_gb",
            "gpu_count",
            "priority",
            "max_duration_seconds",
            "rate_halala_per_hour",
            "cost_halala",
            "actual_cost_halala",
            "refunded_halala",
            "provider_earned_halala",
            "platform_fee_halala",
            "attempt",
            "lease_expires_us",
            "submitted_at_us",
            "submit_seq",
            "assigned_at_us",
            "started_at_us",
            "ended_at_us",
            "exit_code",
            "error",
            "last_seq",
        ),
    ),
    "job_outputs": (
        "job_id",
        ("job_id", "exit_code", "stdout", "stderr", "truncated", "sha256", "last_seq"),
    ),
    "accounts": ("account_id", ("account_id", "balance_halala", "last_seq")),
    "withdrawals": (
        "withdrawal_id",
        (
            "withdrawal_id",
            "provider_id",
            "amount_halala",
            "iban",
            "status",
            "requested_at_us",
            "decided_at_us",
            "last_seq",
        ),
    ),
    "pricing": ("gpu_model", ("gpu_model", "halala_per_gpu_hour", "last_seq")),
    "image_allowlist": ("reference", ("reference", "last_seq")),
    "topups": (
        "topup_id",
        (
            "topup_id",
            "renter_id",
            "amount_halala",
            "status",
            "invoice_id",
            "checkout_url",
            "payment_id",
            "reason",
            "gateway_amount_halala",
            "gateway_currency",
            "created_at_us",
            "updated_at_us",
            "last_seq",
        ),
    ),
}

POSTING_COLUMNS = (
    "seq",
    "idx",
    "account_id",
    "amount_halala",
    "event_type",
    "job_id",
    "recorded_at_us",
)


def credential_row(key_hash: str, c: Credential) -> Row:
    return {
        "key_hash": key_hash,
        "role": c.role,
        "subject_id": c.subject_id,
        "last_seq": c.last_seq,
    }


def renter_row(r: Renter) -> Row:
    return {
        "renter_id": r.renter_id,
        "name": r.name,
        "email": r.email,
        "created_at_us": r.created_at_us,
        "last_seq": r.last_seq,
    }


def provider_row(p: Provider) -> Row:
    return {
        "provider_id": p.provider_id,
        "name": p.name,
        "email": p.email,
        "gpu_model": p.gpu_model,
        "gpu_count": p.gpu_count,
        "vram_gb": p.vram_gb,
        "approval_status": "approved" if p.approved else "pending",
        "paused": int(p.paused),
        "suspended": int(p.suspended),
        "accepting_jobs": int(p.accepting_jobs),
        "daemon_version": p.daemon_version,
        "last_heartbeat_us": p.last_heartbeat_us,
        "gpus_json": _json.encode(p.gpus).decode(),
        "created_at_us": p.created_at_us,
        "last_seq": p.last_seq,
    }


def job_row(j: Job) -> Row:
    s = j.settlement
    return {
        "job_id": j.job_id,
        "renter_id": j.renter_id,
        "provider_id": j.provider_id,
        "requested_provider_id": j.requested_provider_id,
        "status": j.status,
        "image": j.container_spec.image,
        "command_json": _json.encode(j.container_spec.command).decode(),
        "gpu_type": j.gpu_requirements.gpu_type,
        "min_vram_gb": j.gpu_requirements.min_vram_gb,
        "gpu_count": j.gpu_requirements.gpu_count,
        "priority": j.priority,
        "max_duration_seconds": j.max_duration_seconds,
        "rate_halala_per_hour": j.rate_halala_per_hour,
        "cost_halala": j.cost_halala,
        "actual_cost_halala": s.actual_cost_halala if s else None,
        "refunded_halala": s.refunded_halala if s else None,
        "provider_earned_halala": s.provider_earned_halala if s else None,
        "platform_fee_halala": s.platform_fee_halala if s else None,
        "attempt": j.attempt,
        "lease_expires_us": j.lease_expires_us,
        "submitted_at_us": j.submitted_at_us,
        "submit_seq": j.submit_seq,  # the domain's queue order within a priority
        "assigned_at_us": j.assigned_at_us,
        "started_at_us": j.started_at_us,
        "ended_at_us": j.ended_at_us,
        "exit_code": j.output.exit_code if j.output else None,
        "error": j.error,
        "last_seq": j.last_seq,
    }


def job_output_row(j: Job) -> Row | None:
    o = j.output
    if o is None:
        return None
    return {
        "job_id": j.job_id,
        "exit_code": o.exit_code,
        "stdout": o.stdout,
        "stderr": o.stderr,
        "truncated": int(o.truncated),
        "sha256": o.sha256,
        "last_seq": j.last_seq,
    }


def account_row(state: State, account: str) -> Row:
    return {
        "account_id": account,
        "balance_halala": state.balances.get(account, 0),
        "last_seq": state.account_seq.get(account, 0),
    }


def withdrawal_row(w: Withdrawal) -> Row:
    return {
        "withdrawal_id": w.withdrawal_id,
        "provider_id": w.provider_id,
        "amount_halala": w.amount_halala,
        "iban": w.iban,
        "status": w.status,
        "requested_at_us": w.requested_at_us,
        "decided_at_us": w.decided_at_us,
        "last_seq": w.last_seq,
    }


def price_row(p: Price) -> Row:
    return {
        "gpu_model": p.gpu_model,
        "halala_per_gpu_hour": p.halala_per_gpu_hour,
        "last_seq": p.last_seq,
    }


def topup_row(t: TopUp) -> Row:
    return {
        "topup_id": t.topup_id,
        "renter_id": t.renter_id,
        "amount_halala": t.amount_halala,
        "status": t.status,
        "invoice_id": t.invoice_id,
        "checkout_url": t.checkout_url,
        "payment_id": t.payment_id,
        "reason": t.reason,
        "gateway_amount_halala": t.gateway_amount_halala,
        "gateway_currency": t.gateway_currency,
        "created_at_us": t.created_at_us,
        "updated_at_us": t.updated_at_us,
        "last_seq": t.last_seq,
    }


class RowChanges(msgspec.Struct):
    """Rows to upsert and keys to delete, per table."""

    upserts: dict[str, list[Row]]
    deletes: dict[str, list[str]]


def _rows_of(state: State, kind: str, key: str) -> Iterator[tuple[str, Row | None]]:
    """(table, row or None for "delete this key") for one touched entity."""
    if kind == "job":
        job = state.jobs[key]
        yield "jobs", job_row(job)
        out = job_output_row(job)
        yield "job_outputs", out  # None (delete) after an admin requeue cleared the output
    elif kind == "account":
        yield "accounts", account_row(state, key)
    elif kind == "provider":
        yield "providers", provider_row(state.providers[key])
    elif kind == "renter":
        yield "renters", renter_row(state.renters[key])
    elif kind == "withdrawal":
        yield "withdrawals", withdrawal_row(state.withdrawals[key])
    elif kind == "credential":
        yield "credentials", credential_row(key, state.credentials[key])
    elif kind == "topup":
        yield "topups", topup_row(state.topups[key])
    elif kind == "price":
        yield "pricing", price_row(state.pricing[key])
    elif kind == "image":
        seq = state.images.get(key)
        yield "image_allowlist", None if seq is None else {"reference": key, "last_seq": seq}
    else:
        raise ValueError(f"unknown entity kind {kind!r}")


def _key_of(table: str, kind: str, key: str, state: State) -> str:
    if table == "pricing":
        return state.pricing[key].gpu_model
    return key


def changed_rows(state: State, touched: Touched) -> RowChanges:
    """The upserts and deletes that bring the read models up to `state` for `touched`."""
    changes = RowChanges(upserts={t: [] for t in TABLES}, deletes={t: [] for t in TABLES})
    for kind, key in sorted(touched):
        for table, row in _rows_of(state, kind, key):
            if row is None:
                changes.deletes[table].append(_key_of(table, kind, key, state))
            else:
                changes.upserts[table].append(row)
    return changes


def all_rows(state: State) -> dict[str, list[Row]]:
    """Every read-model row of `state` (what a rebuild writes), per table."""
    out: dict[str, list[Row]] = {t: [] for t in TABLES}
    out["credentials"] = [credential_row(k, c) for k, c in state.credentials.items()]
    out["renters"] = [renter_row(r) for r in state.renters.values()]
    out["providers"] = [provider_row(p) for p in state.providers.values()]
    for j in state.jobs.values():
        out["jobs"].append(job_row(j))
        o = job_output_row(j)
        if o is not None:
            out["job_outputs"].append(o)
    out["accounts"] = [account_row(state, a) for a in state.balances]
    out["withdrawals"] = [withdrawal_row(w) for w in state.withdrawals.values()]
    out["pricing"] = [price_row(p) for p in state.pricing.values()]
    out["image_allowlist"] = [{"reference": r, "last_seq": s} for r, s in state.images.items()]
    out["topups"] = [topup_row(t) for t in state.topups.values()]
    return out


def posting_rows(
    seq: int, event: Event, recorded_at_us: int
) -> Iterable[tuple[int, int, str, int, str, str | None, int]]:
    """The `postings` rows of one event, in POSTING_COLUMNS order."""
    postings = getattr(event, "postings", ())
    if not postings:
        return ()
    tag = str(event.__struct_config__.tag)
    job_id = getattr(event, "job_id", None)
    return [
        (seq, i, p.account, p.amount_halala, tag, job_id, recorded_at_us)
        for i, p in enumerate(postings)
    ]
