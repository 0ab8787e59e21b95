"""Security headers on every web response (pages, errors and static files), as plain ASGI.

The policy allows scripts, styles and images from this origin only: no inline script, no
`unsafe-inline`, nothing from a CDN; forms post only here; no page may be framed.
`X-Content-Type-Options: nosniff` is not here: the request middleware sends it on every reply.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
NO_STORE = (b"cache-control", b"no-store")


class WebHeaders:
    """Adds HEADERS to each response of `app`; pages (not static files) also get no-store,
    so a signed-in page is not kept in the browser's cache."""

    def __init__(self, app: ASGIApp, *, no_store: bool = True) -> None:
        self.app = app
        self.no_store = no_store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", ())}
                extra = [h for h in HEADERS if h[0] not in names]
                if self.no_store and b"cache-control" not in names:
                    extra.append(NO_STORE)
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
