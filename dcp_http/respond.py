"""Writing JSON responses straight to ASGI `send`, for middleware that answers by itself."""

from __future__ import annotations

from starlette.types import Send

from dcp_http.errors import encode_error


async def send_json(
    send: Send, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    """Send a complete JSON response."""
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, exc: BaseException) -> None:
    """Send the error response for `exc` (see dcp_http.errors)."""
    status, body, headers = encode_error(exc)
    await send_json(send, status, body, headers)
