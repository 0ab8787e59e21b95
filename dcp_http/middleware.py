"""Plain ASGI middleware: request context, access log and metrics, and the body guard.

Plain ASGI rather than Starlette's BaseHTTPMiddleware, which its own docs warn about (it breaks
contextvars and streams bodies through an extra task). The request's metrics are taken by the
context middleware itself (its `observer`) rather than by one more layer around it: every
layer costs each request a coroutine call, and each response message a wrapper call.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dcp_http import logs
from dcp_http.errors import PayloadTooLarge, UnsupportedMediaType
from dcp_http.logs import redact_path
from dcp_http.respond import send_error


class Dispatch(Protocol):
    """What the body guard needs of an API endpoint (dcp_http.routing.Dispatch): answering
    with the body in hand. A protocol, so this module does not import the router's."""

    async def asgi(
        self, scope: Scope, receive: Receive, send: Send, body: bytes | None
    ) -> None: ...


access_log = structlog.get_logger("dcp_http.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

# Sent on every reply: no browser may guess a JSON body to be HTML or script.
_NOSNIFF = (b"x-content-type-options", b"nosniff")
# Sent on every /api/ reply: they carry keys (registration), balances, ledgers and jobs, which
# no browser or proxy cache may keep. A reply that sets its own Cache-Control keeps it.
_NO_STORE = (b"cache-control", b"no-store")
_PRIVATE_PREFIX = "/api/"


def new_request_id() -> str:
    """A random request id: 128 bits from the OS, so ids reveal nothing about request volume
    (a counter would: two requests' ids tell how many came between them)."""
    return os.urandom(16).hex()  # what secrets.token_hex(16) does, without its two calls


class RequestObserver(Protocol):
    """What is told about every HTTP request (dcp_http.metrics.Metrics)."""

    def request_started(self) -> None: ...

    def request_finished(
        self, scope: Scope, route: str | None, status: int, seconds: float
    ) -> None: ...


class RequestInfo:
    """What the layers below learn about a request, for its access-log line."""

    __slots__ = ("actor", "request_id", "route")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.route: str | None = None
        self.actor: str | None = None


def request_info(scope: Scope) -> RequestInfo | None:
    """The RequestInfo the context middleware put in `scope`, if it ran."""
    return scope.get("dcp.info")


class RequestContextMiddleware:
    """Gives each request an id, logs one JSON line for it, and turns a crash into a 500.

    The id comes from a well-formed `x-request-id` header or is made here; it is bound to
    structlog's context variables for every log line of the request and echoed in the response.
    With an `observer`, it is told when each request starts and how it ended (the metrics).
    """

    def __init__(
        self,
        app: ASGIApp,
        resolve_route: Callable[[Scope], str | None] | None = None,
        observer: RequestObserver | None = None,
    ) -> None:
        self.app = app
        # For requests answered before routing (413, 415, 429): the route they were meant for.
        self.resolve_route = resolve_route
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        rid = incoming if incoming and _REQUEST_ID.fullmatch(incoming) else new_request_id()
        private = scope["path"].startswith(_PRIVATE_PREFIX)
        info = RequestInfo(rid)
        scope["dcp.info"] = info
        status = 0
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", rid.encode()))
                headers.append(_NOSNIFF)
                if private:  # a loop, not any() over a generator: once per reply
                    for k, _ in headers:
                        if k.lower() == b"cache-control":
                            break
                    else:
                        headers.append(_NO_STORE)
                message = {**message, "headers": headers}
            await send(message)

        observer = self.observer
        if observer is not None:
            observer.request_started()
        structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:  # the last line of defence: never a trace to the client
            if not started:
                await send_error(send_wrapper, exc)
            else:
                access_log.error("response_aborted", exc_info=exc)
        finally:
            if info.route is None and self.resolve_route is not None:
                info.route = self.resolve_route(scope)
            fields: dict[str, Any] = {
                "method": scope["method"],
                "route": info.route,
                "path": redact_path(scope["path"], scope.get("query_string", b"")),
                "status": status,
                "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                "request_id": rid,
                "actor": info.actor,
            }
            writer = logs.access_writer
            if writer is not None:
                writer.info("http_request", fields)
            else:
                access_log.info("http_request", **fields)
            structlog.contextvars.unbind_contextvars("request_id")
            if observer is not None:
                # 500: what the client sees if the app died (cancelled) before answering.
                observer.request_finished(
                    scope, info.route, status or 500, time.perf_counter() - start
                )


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return str(v.decode("latin-1"))
    return None


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_json_content_type(value: str | None) -> bool:
    """True for `application/json` and `application/*+json`, charset utf-8 if given."""
    if not value:
        return False
    media, _, params = value.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        return False
    for param in params.split(";"):
        name, _, val = param.partition("=")
        if name.strip().lower() == "charset" and val.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


def is_form_content_type(value: str | None) -> bool:
    """True for an HTML form's `application/x-www-form-urlencoded` (no files are taken)."""
    media = (value or "").partition(";")[0].strip().lower()
    return media == "application/x-www-form-urlencoded"


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than {limit} bytes")


class BodyGuardMiddleware:
    """Refuses bodies over the route's size limit (413) and bodies that are not JSON (415),
    or not an urlencoded form on the web plane's paths.

    The body is read here, bounded, and replayed to the app, so nothing below ever holds more
    than the limit. Job results get a larger limit than everything else.

    With `dispatch` (dcp_http.routing.RouteTable.dispatch), a request for one of the API's
    endpoints is answered here, with the body in hand (Dispatch.asgi), rather than through
    Starlette's exception middleware, router, Request and Response: the same answer, less
    than half the work. Everything else (the web plane, /metrics, 404 and 405) goes on below.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        large_paths: dict[str, int] | None = None,
        form_paths: Callable[[str], bool] | None = None,
        dispatch: Callable[[Scope], Dispatch | None] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.large_paths = large_paths or {}
        # Paths whose bodies are HTML forms (the web plane), not JSON.
        self.form_paths = form_paths or (lambda path: False)
        self.dispatch = dispatch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in _BODY_METHODS:
            await self._forward(scope, receive, send, None)
            return
        limit = self.large_paths.get(scope["path"], self.max_body_bytes)
        declared = content_type = None
        for k, v in scope.get("headers", ()):  # one pass for both headers
            if k == b"content-length" and declared is None:
                declared = v.decode("latin-1")
            elif k == b"content-type" and content_type is None:
                content_type = v.decode("latin-1")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await send_error(send, _too_large(limit))
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await send_error(send, _too_large(limit))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self.form_paths(scope["path"]):
            acceptable = is_form_content_type(content_type)
        else:
            acceptable = is_json_content_type(content_type)
        if body.strip() and not acceptable:
            await send_error(send, UnsupportedMediaType("request bodies must be application/json"))
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self._forward(scope, replay, send, body)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, body: bytes | None
    ) -> None:
        """To the API's endpoint with the body in hand when `dispatch` names one, else on
        down the stack."""
        api = self.dispatch(scope) if self.dispatch is not None else None
        if api is None:
            await self.app(scope, receive, send)
        else:
            await api.asgi(scope, receive, send, body)
