"""Whether a provider is online, stale or offline, and whether it gets new jobs (SPEC 4)."""

from __future__ import annotations

from typing import Literal

from dcp_projections.settings import Settings
from dcp_projections.settlement import US_PER_S
from dcp_projections.state import Provider

Presence = Literal["online", "stale", "offline"]


def presence(provider: Provider, now_us: int, settings: Settings) -> Presence:
    """online / stale / offline from the age of the provider's last heartbeat."""
    if provider.last_heartbeat_us is None:
        return "offline"
    age_us = now_us - provider.last_heartbeat_us
    if age_us <= settings.online_s * US_PER_S:
        return "online"
    if age_us <= settings.stale_s * US_PER_S:
        return "stale"
    return "offline"


def takes_new_jobs(provider: Provider, now_us: int, settings: Settings) -> bool:
    """Only approved, unpaused, unsuspended, online providers that accept jobs get new ones."""
    return (
        provider.approved
        and not provider.paused
        and not provider.suspended
        and provider.accepting_jobs
        and presence(provider, now_us, settings) == "online"
    )
