"""Rate limits of SPEC section 5, as plain ASGI middleware.

Each request falls in one class (register, submit, heartbeat, admin, default) by its path and
is counted against its caller: the hash of the one credential it presents, wherever it
presents it, or its IP when it presents none (registration always counts per IP). Failed
authentications are counted per client address as well (`auth_failure`). A token bucket per
(class, caller) refills at `limit / period_s` per second; an empty bucket answers 429 with
`retry_after_seconds` and a `Retry-After` header. The table of buckets is bounded (least
recently used ones are dropped).

Limits are per process: they protect this node, they decide nothing about money.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dcp_http.auth import presented_in
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

    def _refill(self, cls: str, caller: str) -> tuple[tuple[str, str], float, float, RateLimit]:
        """(key, tokens now, now, limit), the key moved to the most recently used end."""
        limit = self._limits.get(cls) or self._limits["default"]
        now = self._clock()
        key = (cls, caller)
        tokens, last = self._buckets.pop(key, (float(limit.limit), now))
        tokens = min(float(limit.limit), tokens + (now - last) * limit.limit / limit.period_s)
        return key, tokens, now, limit

    def _store(self, key: tuple[str, str], tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)

    @staticmethod
    def _wait(tokens: float, limit: RateLimit) -> float:
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) * limit.period_s / limit.limit

    def take(self, cls: str, caller: str) -> float:
        """Take one token; 0.0 when allowed, else the seconds until one is available."""
        key, tokens, now, limit = self._refill(cls, caller)
        wait = self._wait(tokens, limit)
        self._store(key, tokens - 1.0 if wait == 0.0 else tokens, now)
        return wait

    def wait(self, cls: str, caller: str) -> float:
        """The seconds until `caller` has a token (0.0: now), taking none."""
        key, tokens, now, limit = self._refill(cls, caller)
        self._store(key, tokens, now)
        return self._wait(tokens, limit)

    def spend(self, cls: str, caller: str) -> None:
        """Take one token even from an empty bucket, down to one period's worth of debt:
        failures that were in flight together all count."""
        key, tokens, now, limit = self._refill(cls, caller)
        self._store(key, max(tokens - 1.0, -float(limit.limit)), now)


# Failed authentications (401) per client address: every wrong key or token is a new
# credential, so counting per credential never stopped a guesser.
AUTH_FAILURES = "auth_failure"


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


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


def caller_of(scope: Scope, cls: str) -> str:
    """Who a request counts against: a hash of its one credential, wherever it was sent
    (header, Bearer, `?key=` or path: one bucket per key), else its client address."""
    if cls != "register":
        values = {value for _, value in presented_in(scope)}
        if len(values) == 1:  # two different ones are refused (400) by the authenticator
            return "k:" + hashlib.sha256(values.pop().encode("latin-1", "replace")).hexdigest()
    return client_address(scope)


class RateLimitMiddleware:
    """Answers 429 when the caller's bucket for the request's class is empty, or when the
    client address has used up its failed authentications (`auth_failure` class).

    A 401 answer to a request that carried a credential spends one of its address's failure
    tokens; while none is left, that address's requests with a credential are refused before
    the credential is looked at, so a guesser learns nothing more. A success spends none, and
    the bucket is the address's, not the admin token's: a guesser elsewhere cannot lock the
    real admin out.
    """

    def __init__(self, app: ASGIApp, limits: Mapping[str, RateLimit]) -> None:
        self.app = app
        self.buckets = TokenBuckets(limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        cls = classify(scope["method"], scope["path"])
        address = client_address(scope)
        with_credential = bool(presented_in(scope))
        if with_credential:
            wait = self.buckets.wait(AUTH_FAILURES, address)
            if wait > 0:
                await _refuse(send, "too many failed authentications from this address", wait)
                return
        wait = self.buckets.take(cls, caller_of(scope, cls))
        if wait > 0:
            await _refuse(send, f"rate limit exceeded for {cls} requests", wait)
            return
        if not with_credential:
            await self.app(scope, receive, send)
            return

        async def count_failure(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.buckets.spend(AUTH_FAILURES, address)
            await send(message)

        await self.app(scope, receive, count_failure)


async def _refuse(send: Send, message: str, wait: float) -> None:
    await send_error(send, RateLimited(message, retry_after_seconds=max(1, math.ceil(wait))))
