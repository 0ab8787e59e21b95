"""Errors of the HTTP layer, and the one function that turns any error into a response.

Every error reaches the client as `{"error": "human message", "code": "snake_case"}` plus the
extras SPEC section 5 names (`fields`, `shortfall_halala`, `retry_after_seconds`). Domain errors
carry their own `code`; `STATUS_BY_CODE` says which HTTP status each one gets. Anything not
raised on purpose becomes a 500 `internal` with no detail, and is logged with its trace.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import structlog

from dcp_events.errors import ConcurrencyError, DcpError, StaleHeadError

log = structlog.get_logger("dcp_http")


class FieldError(msgspec.Struct, frozen=True):
    """One invalid input field: where (`container_spec.image`) and what is wrong with it."""

    field: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """The body of every error response."""

    error: str
    code: str
    fields: list[FieldError] | msgspec.UnsetType = msgspec.UNSET
    shortfall_halala: int | msgspec.UnsetType = msgspec.UNSET
    retry_after_seconds: int | msgspec.UnsetType = msgspec.UNSET


class ApiError(DcpError):
    """An error the HTTP layer raises itself; `status` and `code` say how it is answered."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self._extra = extra

    def extra(self) -> dict[str, Any]:
        """Fields added to the error body besides `error` and `code`."""
        return self._extra


class InvalidRequest(ApiError):
    """The body, query or path does not fit its schema (400 with `fields`)."""

    status = 400
    code = "invalid_request"


class InvalidJson(ApiError):
    """The body is not well-formed UTF-8 JSON."""

    status = 400
    code = "invalid_json"


class Unauthorized(ApiError):
    """Credentials are missing or unknown (401); `wrong_key_type` for a key of another role."""

    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    """The caller is known but may not do this (403), e.g. top-up outside sandbox mode."""

    status = 403
    code = "forbidden"


class NotFound(ApiError):
    """Unknown, or not the caller's: both answer the same, so no tenant learns of another's."""

    status = 404
    code = "not_found"


class MethodNotAllowed(ApiError):
    """The path exists but not with this method."""

    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(ApiError):
    """The body is larger than the route's limit (413)."""

    status = 413
    code = "body_too_large"


class UnsupportedMediaType(ApiError):
    """A body that is not `application/json` (415)."""

    status = 415
    code = "unsupported_media_type"


class RateLimited(ApiError):
    """Too many requests from this key or IP (429, with `retry_after_seconds`)."""

    status = 429
    code = "rate_limited"


class Unavailable(ApiError):
    """The server cannot answer now (503): admin API without a token, or not ready."""

    status = 503
    code = "unavailable"


# Domain error codes -> HTTP status. A code not listed falls back on its class name (below),
# then on 409: most refusals of the domain are state conflicts.
STATUS_BY_CODE: dict[str, int] = {
    "invalid_request": 400,
    "validation_error": 400,
    "invalid_iban": 400,
    "invalid_amount": 400,
    "invalid_image": 400,
    "amount_too_small": 400,
    "below_minimum": 400,
    "withdrawal_too_small": 400,
    "insufficient_funds": 402,
    "insufficient_balance": 402,
    "payment_required": 402,
    "forbidden": 403,
    "not_allowed": 403,
    "image_not_allowed": 403,
    "sandbox_only": 403,
    "not_approved": 403,
    "provider_suspended": 403,
    "suspended": 403,
    "not_found": 404,
    "unknown_job": 404,
    "unknown_renter": 404,
    "unknown_provider": 404,
    "unknown_withdrawal": 404,
    "job_not_found": 404,
    "renter_not_found": 404,
    "provider_not_found": 404,
    "withdrawal_not_found": 404,
    "lease_lost": 409,
    "conflict": 409,
    "invalid_transition": 409,
    "invalid_state": 409,
    "already_ended": 409,
    "result_conflict": 409,
    "conflicting_result": 409,
    "gone": 410,
    "no_output": 410,
    "rate_limited": 429,
    "unavailable": 503,
    "not_ready": 503,
}

_STATUS_BY_CLASS_WORD: tuple[tuple[str, int], ...] = (
    ("Validation", 400),
    ("Invalid", 400),
    ("Insufficient", 402),
    ("Funds", 402),
    ("Forbidden", 403),
    ("NotAllowed", 403),
    ("NotFound", 404),
    ("Unknown", 404),
    ("LeaseLost", 409),
    ("Conflict", 409),
    ("Gone", 410),
)

_EXTRA_FIELDS = ("fields", "shortfall_halala", "retry_after_seconds")


def status_for(exc: BaseException) -> int:
    """The HTTP status for an error raised on purpose (ApiError or a domain error)."""
    if isinstance(exc, ApiError):
        return exc.status
    status = getattr(exc, "http_status", None) or getattr(exc, "status", None)
    if isinstance(status, int) and 400 <= status < 600:
        return status
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code in STATUS_BY_CODE:
        return STATUS_BY_CODE[code]
    name = type(exc).__name__
    for word, st in _STATUS_BY_CLASS_WORD:
        if word in name:
            return st
    return 409


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    s = "".join(out)
    return s.removesuffix("_error") or "error"


def error_body(exc: BaseException) -> tuple[int, ErrorBody, dict[str, str]]:
    """(status, body, extra headers) for any exception; unexpected ones are logged here."""
    if isinstance(exc, (ConcurrencyError, StaleHeadError)):
        # Another writer moved the log between decide and append; the client may retry.
        return 409, ErrorBody(error="conflicting concurrent update, retry", code="conflict"), {}
    if isinstance(exc, DcpError) and not type(exc).__module__.startswith("dcp_events"):
        status = status_for(exc)
        code = getattr(exc, "code", None)
        if not isinstance(code, str) or not code:
            code = _snake(type(exc).__name__)
        message = getattr(exc, "message", None) or str(exc) or code.replace("_", " ")
        extra_of = getattr(exc, "extra", None)
        extra: dict[str, Any] = dict(extra_of() if callable(extra_of) else extra_of or {})
        for name in _EXTRA_FIELDS:
            value = getattr(exc, name, None)
            if value is not None and name not in extra:
                extra[name] = value
        headers: dict[str, str] = {}
        kwargs: dict[str, Any] = {}
        if status == 400 and "fields" in extra:
            kwargs["fields"] = [
                f if isinstance(f, FieldError) else msgspec.convert(f, FieldError)
                for f in extra["fields"]
            ]
        if status == 402 and extra.get("shortfall_halala") is not None:
            kwargs["shortfall_halala"] = int(extra["shortfall_halala"])
        if status == 429:
            retry = max(1, math.ceil(float(extra.get("retry_after_seconds") or 1)))
            kwargs["retry_after_seconds"] = retry
            headers["retry-after"] = str(retry)
        return status, ErrorBody(error=str(message), code=code, **kwargs), headers
    log.error("unhandled_error", exc_info=exc)
    return 500, ErrorBody(error="internal error", code="internal"), {}


_encoder = msgspec.json.Encoder()


def encode_error(exc: BaseException) -> tuple[int, bytes, dict[str, str]]:
    """(status, JSON bytes, headers) of the error response for `exc`."""
    status, body, headers = error_body(exc)
    return status, _encoder.encode(body), headers
