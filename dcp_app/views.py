"""The JSON-ready shapes the service answers with (built from the in-memory state).

`job_view` has the same keys as `dcp_app.queries` returns for a job, so an answer right after
a command and a later read look alike.
"""

from __future__ import annotations

from typing import Any

from dcp_projections.presence import presence
from dcp_projections.rows import job_row, provider_row, withdrawal_row
from dcp_projections.settings import Settings
from dcp_projections.state import Job, Provider, State, Withdrawal


def job_view(state: State, job: Job) -> dict[str, Any]:
    """A job with its money: the `jobs` read-model row, `command` as a list instead of
    `command_json`, and `queue_position` (1-based, None unless queued)."""
    row = job_row(job)
    row.pop("command_json")
    row["command"] = list(job.container_spec.command)
    row["queue_position"] = state.queue_position(job)
    return row


def lease_view(job: Job) -> dict[str, Any]:
    """What a provider needs to run a leased job, env included."""
    spec, req = job.container_spec, job.gpu_requirements
    return {
        "job_id": job.job_id,
        "status": job.status,
        "attempt": job.attempt,
        "lease_expires_us": job.lease_expires_us,
        "container_spec": {
            "image": spec.image,
            "command": list(spec.command),
            "env": dict(spec.env),
        },
        "gpu_requirements": {
            "gpu_type": req.gpu_type,
            "min_vram_gb": req.min_vram_gb,
            "gpu_count": req.gpu_count,
        },
        "max_duration_seconds": job.max_duration_seconds,
        "rate_halala_per_hour": job.rate_halala_per_hour,
        "cost_halala": job.cost_halala,
        "assigned_at_us": job.assigned_at_us,
        "started_at_us": job.started_at_us,
    }


def provider_view(state: State, p: Provider, now_us: int, settings: Settings) -> dict[str, Any]:
    """A provider's own view: its read-model row, `state` (online/stale/offline), earnings
    and payout_pending."""
    row = provider_row(p)
    row["state"] = presence(p, now_us, settings)
    row["earnings_halala"] = state.earnings(p.provider_id)
    row["payout_pending_halala"] = state.payout_pending(p.provider_id)
    return row


def withdrawal_view(w: Withdrawal) -> dict[str, Any]:
    """A withdrawal: its read-model row."""
    return withdrawal_row(w)
