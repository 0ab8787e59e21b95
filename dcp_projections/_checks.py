"""Field checks shared by the decisions: each raises ValidationError naming the field."""

from __future__ import annotations

from dcp_events.event import MAX_HALALA
from dcp_projections.errors import NotFound, ValidationError
from dcp_projections.state import Provider, State
from dcp_projections.text import is_printable

MIN_DURATION_S = 60
MAX_DURATION_S = 86400
MAX_GPU_COUNT = 64
MAX_TEXT = 256
MAX_REASON = 500


def text(field: str, value: str, *, required: bool = True, max_len: int = MAX_TEXT) -> None:
    """A printable string: not blank (when required), at most `max_len` characters, and no
    control character (a `ref\\n` must not pass for a second reference beside `ref`)."""
    if required and not value.strip():
        raise ValidationError(field, "must not be empty")
    if len(value) > max_len:
        raise ValidationError(field, f"at most {max_len} characters")
    if not is_printable(value):
        raise ValidationError(field, "must not contain control characters (newlines, tabs...)")


def amount(field: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(field, "must be an integer number of halala")
    if value < minimum or value > MAX_HALALA:
        raise ValidationError(field, f"must be between {minimum} and {MAX_HALALA}")


def require_renter(state: State, renter_id: str) -> None:
    """Raises NotFound unless the renter exists."""
    if renter_id not in state.renters:
        raise NotFound(f"renter {renter_id} not found")


def require_provider(state: State, provider_id: str) -> Provider:
    """The provider, or NotFound."""
    p = state.providers.get(provider_id)
    if p is None:
        raise NotFound(f"provider {provider_id} not found")
    return p
