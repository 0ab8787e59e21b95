"""Domain errors: why a decision refused a command.

Each carries a snake_case `code` and an HTTP-ish `status`, so `dcp_http` maps every one in a
single handler (`{"error": str(e), "code": e.code, **e.extra()}`).
"""

from __future__ import annotations

from typing import Any

from dcp_events.errors import DcpError


class DomainError(DcpError):
    """A command the domain refuses. Never raised after events were appended."""

    code = "domain_error"
    status = 400

    def extra(self) -> dict[str, Any]:
        """Fields to add to the JSON error body besides `error` and `code`."""
        return {}


class ValidationError(DomainError):
    """A command's fields are malformed or out of range (400)."""

    code = "validation_error"
    status = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.fields = [{"field": field, "message": message}]

    def extra(self) -> dict[str, Any]:
        return {"fields": self.fields}


class InsufficientFunds(DomainError):
    """A reserve or withdrawal exceeds what is available (402), with the exact shortfall."""

    code = "insufficient_funds"
    status = 402

    def __init__(self, needed_halala: int, available_halala: int) -> None:
        super().__init__(f"needs {needed_halala} halala, {available_halala} available")
        self.shortfall_halala = needed_halala - available_halala

    def extra(self) -> dict[str, Any]:
        return {"shortfall_halala": self.shortfall_halala}


class Forbidden(DomainError):
    """The caller may not do this (403): sandbox top-up off, provider suspended, ..."""

    code = "forbidden"
    status = 403


class NotFound(DomainError):
    """The object does not exist, or is not the caller's (404: never reveal other tenants)."""

    code = "not_found"
    status = 404


class Conflict(DomainError):
    """The object is in a state that does not allow the command (409)."""

    code = "conflict"
    status = 409


class InvalidTransition(Conflict):
    """The job (or withdrawal) cannot move from its status by this command (409)."""

    code = "invalid_transition"


class LeaseLost(Conflict):
    """A start, result or acknowledgement names an attempt that no longer holds the lease."""

    code = "lease_lost"


class IdempotencyKeyReused(DomainError):
    """An Idempotency-Key already used for a different request (422, SPEC section 5): the
    first request stands and nothing changes."""

    code = "idempotency_key_reused"
    status = 422


class ImageNotAllowed(ValidationError):
    """The image is not on the admin-managed allowlist (400, field `container_spec.image`)."""

    code = "image_not_allowed"

    def __init__(self, image: str) -> None:
        super().__init__("container_spec.image", f"image {image!r} is not on the allowlist")


class InvariantError(DcpError):
    """A fold found the state breaking a money rule: a bug, never a user error."""
