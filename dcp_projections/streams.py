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


_PLATFORM_EVENTS = (ev.PriceSet, ev.ImageAllowed, ev.ImageRemoved)
_WITHDRAWAL_EVENTS = (ev.WithdrawalRequested, ev.WithdrawalCompleted, ev.WithdrawalRejected)
# Event type -> the field naming its stream's owner ("" for the platform), filled on first use:
# stream_of runs for every event the service appends, so the isinstance chain runs once a type.
_OWNER_FIELD: dict[type[Event], str] = {}


def _owner_field(cls: type[Event]) -> str:
    if issubclass(cls, _PLATFORM_EVENTS):
        return ""
    fields = cls.__struct_fields__
    if issubclass(cls, _WITHDRAWAL_EVENTS) or "renter_id" not in fields:
        if "provider_id" not in fields:
            raise ValueError(f"no stream for {cls.__name__}")
        return "provider_id"
    return "renter_id"


def stream_of(event: Event) -> str:
    """The stream `event` is appended to."""
    cls = type(event)
    field = _OWNER_FIELD.get(cls)
    if field is None:
        field = _OWNER_FIELD[cls] = _owner_field(cls)
    if not field:
        return PLATFORM
    owner = getattr(event, field)
    return renter_stream(owner) if field == "renter_id" else provider_stream(owner)
