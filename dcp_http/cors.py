"""CORS by an allowlist of origins: Starlette's CORSMiddleware, with its refusals in our shape.

Starlette answers a preflight it refuses (an unlisted origin, method or header) with a 400
`text/plain` "Disallowed CORS origin". Every error of this API is a JSON `{error, code}`
body, so the refusal is re-encoded here; what is allowed and which headers go out stay
Starlette's.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from dcp_http.errors import ApiError, encode_error

ALLOW_METHODS = ["GET", "POST", "PUT"]
ALLOW_HEADERS = [
    "authorization",
    "content-type",
    "idempotency-key",
    "x-renter-key",
    "x-provider-key",
    "x-admin-token",
    "x-request-id",
]
EXPOSE_HEADERS = ["retry-after", "x-request-id"]


class CorsRefused(ApiError):
    """A CORS preflight asked for an origin, method or header that is not allowed (400)."""

    status = 400
    code = "cors_refused"


class JsonCorsMiddleware(CORSMiddleware):
    """CORSMiddleware for `origins`, answering a refused preflight with `{error, code}`."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=ALLOW_METHODS,
            allow_headers=ALLOW_HEADERS,
            expose_headers=EXPOSE_HEADERS,
            max_age=600,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        # Starlette's body says what failed: "Disallowed CORS origin, headers".
        reason = bytes(response.body).decode("utf-8", "replace")
        failed = reason.removeprefix("Disallowed CORS ").strip() or "request"
        refused = CorsRefused(f"CORS preflight refused: {failed} not allowed")
        status, body, extra = encode_error(refused)
        kept = {
            k: v for k, v in response.headers.items() if k not in ("content-type", "content-length")
        }
        return Response(body, status, {**kept, **extra}, media_type="application/json")
