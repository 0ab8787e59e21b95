"""Whether a provider is online, stale or offline, and whether it gets new jobs (SPEC 4)."""

from __future__ import annotations

from typing import Literal

from dcp_projections.settings import Settings
from dcp_projections.settlement import US_PER_S
from dcp_projections.state import Provider

Presence = Literal["online", "stale", "offline"]


def heartbeat_bounds(now_us: int, settings: Settings) -> tuple[int, int]:
    """(online_since_us, stale_since_us): a last heartbeat at or after the first is online, at
    or after the second stale, older (or none) offline. The rule of `presence`, in the form a
    query over stored heartbeat times uses (dcp_app.queries), so the two cannot drift."""
    return now_us - settings.online_s * US_PER_S, now_us - settings.stale_s * US_PER_S


def presence(last_heartbeat_us: int | None, now_us: int, settings: Settings) -> Presence:
    """online / stale / offline from the time of a provider's last heartbeat (None: never)."""
    if last_heartbeat_us is None:
        return "offline"
    online_since, stale_since = heartbeat_bounds(now_us, settings)
    if last_heartbeat_us >= online_since:
        return "online"
    if last_heartbeat_us >= stale_since:
        return "stale"
    return "offline"


def takes_new_jobs(provider: Provider, now_us: int, settings: Settings) -> bool:
    """Only approved, unpaused, unsuspended, online providers that accept jobs get new ones."""
    return (
        provider.approved
        and not provider.paused
        and not provider.suspended
        and provider.accepting_jobs
        and presence(provider.last_heartbeat_us, now_us, settings) == "online"
    )
