"""Errors of the HTTP layer, and the one function that turns any error into a response.

Every error reaches the client as `{"error": "human message", "code": "snake_case"}` plus the
extras SPEC section 5 names (`fields`, `shortfall_halala`, `retry_after_seconds`). Domain errors
carry their own `code` and `status`. A store clash is 409 `conflict`, any other store fault 503
`store_unavailable`; anything not raised on purpose becomes a 500 `internal` with no detail.
Both are logged with their trace.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import structlog

from dcp_events.errors import ConcurrencyError, DcpError, StaleHeadError, StoreError

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


_EXTRA_FIELDS = ("fields", "shortfall_halala", "retry_after_seconds")


def on_purpose(exc: BaseException) -> bool:
    """True for errors that say what went wrong: ours, and the domain's (a `code` and an HTTP
    `status`). Anything else (an InvariantError, a bug) is answered 500 and logged."""
    if isinstance(exc, ApiError):
        return True
    status = getattr(exc, "status", None)
    return (
        isinstance(exc, DcpError)
        and isinstance(getattr(exc, "code", None), str)
        and isinstance(status, int)
        and 400 <= status < 500
    )


def error_body(exc: BaseException) -> tuple[int, ErrorBody, dict[str, str]]:
    """(status, body, extra headers) for any exception; unexpected ones are logged here."""
    if isinstance(exc, (ConcurrencyError, StaleHeadError)):
        # Another writer moved the log between decide and append; the client may retry.
        return 409, ErrorBody(error="conflicting concurrent update, retry", code="conflict"), {}
    if isinstance(exc, StoreError):
        # The log cannot be written or read now (I/O fault, service stopping): retryable.
        log.error("store_unavailable", exc_info=exc)
        return 503, ErrorBody(error="the event store is unavailable", code="store_unavailable"), {}
    if on_purpose(exc):
        status = int(exc.status)  # type: ignore[attr-defined]
        code = str(exc.code)  # type: ignore[attr-defined]
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
