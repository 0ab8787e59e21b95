"""Rate limits of SPEC section 5, as plain ASGI middleware.

Each request falls in one class (register, submit, heartbeat, admin, default) by its path and is
counted against its caller: the hash of the credential it presents, or its IP when it presents
none (registration always counts per IP). A token bucket per (class, caller) refills at
`limit / period_s` per second; an empty bucket answers 429 with `retry_after_seconds` and a
`Retry-After` header. The table of buckets is bounded (least recently used ones are dropped).

Limits are per process: they protect this node, they decide nothing about money.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from dcp_http.config import RateLimit
from dcp_http.errors import RateLimited
from dcp_http.respond import send_error


class TokenBuckets:
    """Token buckets per key, bounded to `max_keys` entries."""

    def __init__(
        self,
        limits: Mapping[str, RateLimit],
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = dict(limits)
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock

    def take(self, cls: str, caller: str) -> float:
        """Take one token; 0.0 when allowed, else the seconds until one is available."""
        limit = self._limits.get(cls) or self._limits["default"]
        rate = limit.limit / limit.period_s
        now = self._clock()
        key = (cls, caller)
        tokens, last = self._buckets.pop(key, (float(limit.limit), now))
        tokens = min(float(limit.limit), tokens + (now - last) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / rate
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait


def classify(method: str, path: str) -> str:
    """The rate-limit class of a request."""
    if method == "POST" and path in ("/api/renters/register", "/api/providers/register"):
        return "register"
    if path == "/api/jobs/submit":
        return "submit"
    if path == "/api/providers/heartbeat":
        return "heartbeat"
    if path.startswith("/api/admin/"):
        return "admin"
    return "default"


_CRED_HEADERS = (b"x-renter-key", b"x-provider-key", b"x-admin-token", b"authorization")


def caller_of(scope: Scope, cls: str) -> str:
    """Who a request counts against: a hash of its credential, else its client IP."""
    if cls != "register":
        for name, value in scope.get("headers", ()):
            if name in _CRED_HEADERS and value:
                return "k:" + hashlib.sha256(value).hexdigest()[:32]
        qs: bytes = scope.get("query_string", b"")
        for part in qs.split(b"&"):
            if part.startswith(b"key=") and len(part) > 4:
                return "k:" + hashlib.sha256(part[4:]).hexdigest()[:32]
        path: str = scope.get("path", "")
        if path.startswith("/api/providers/dcp-provider-"):
            key = path.split("/")[3]
            return "k:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


class RateLimitMiddleware:
    """Answers 429 when the caller's bucket for the request's class is empty."""

    def __init__(self, app: ASGIApp, limits: Mapping[str, RateLimit]) -> None:
        self.app = app
        self.buckets = TokenBuckets(limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        cls = classify(scope["method"], scope["path"])
        wait = self.buckets.take(cls, caller_of(scope, cls))
        if wait > 0:
            retry = max(1, math.ceil(wait))
            await send_error(
                send,
                RateLimited(f"rate limit exceeded for {cls} requests", retry_after_seconds=retry),
            )
            return
        await self.app(scope, receive, send)
