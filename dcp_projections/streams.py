"""Which stream each event belongs to (docs/design.md, "Streams").

A renter's stream holds their registration, deposits and every event of their jobs, so every
decision that spends or settles their money is checked against one stream version; a
provider's holds its registration, flags, heartbeats and withdrawals; `platform` holds pricing
and the image allowlist.
"""

from __future__ import annotations

from dcp_events import catalogue as ev
from dcp_events.event import Event

PLATFORM = "platform"


def renter_stream(renter_id: str) -> str:
    return f"renter-{renter_id}"


def provider_stream(provider_id: str) -> str:
    return f"provider-{provider_id}"


def stream_of(event: Event) -> str:
    """The stream `event` is appended to."""
    if isinstance(event, ev.PriceSet | ev.ImageAllowed | ev.ImageRemoved):
        return PLATFORM
    if isinstance(event, ev.WithdrawalRequested | ev.WithdrawalCompleted | ev.WithdrawalRejected):
        return provider_stream(event.provider_id)
    renter_id = getattr(event, "renter_id", None)
    if isinstance(renter_id, str):
        return renter_stream(renter_id)
    provider_id = getattr(event, "provider_id", None)
    if isinstance(provider_id, str):
        return provider_stream(provider_id)
    raise ValueError(f"no stream for {type(event).__name__}")
