"""The app factory: routes, middleware, the lifespan that opens the service, and the sweeps."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dcp_events import redact
from dcp_http import endpoints
from dcp_http.auth import Authenticator
from dcp_http.config import ServerConfig
from dcp_http.cors import JsonCorsMiddleware
from dcp_http.errors import ApiError, MethodNotAllowed, NotFound, encode_error
from dcp_http.logs import redactor
from dcp_http.metrics import METRICS_PATH, Metrics, metrics_endpoint
from dcp_http.middleware import BodyGuardMiddleware, RequestContextMiddleware
from dcp_http.openapi import build_openapi
from dcp_http.ratelimit import RateLimitMiddleware
from dcp_http.routing import RouteTable
from dcp_http.service import ServiceAdapter, open_service
from dcp_http.web.shared import Site
from dcp_http.web.site import is_web_path, not_found, web_routes

log = structlog.get_logger("dcp_http")

RESULT_PATH = "/api/providers/job-result"


async def sweep_loop(service: ServiceAdapter, interval_s: float) -> None:
    """Run the lease, deadline and queue-timeout sweeps every `interval_s`, forever.

    A failing sweep is logged and tried again next period; it never stops the loop.
    """
    while True:
        await asyncio.sleep(interval_s)
        try:
            ended = await service.sweep()
            if ended:
                log.info("sweep", changed=ended)
        except Exception as exc:
            log.error("sweep_failed", exc_info=exc)


async def topup_sweep_loop(service: ServiceAdapter, interval_s: float) -> None:
    """Reconcile pending and refunding top-ups with the gateway every `interval_s`, forever
    (dcp_http.payments.Payments.sweep: bounded per round). A failing round is logged and
    tried again next period."""
    payments = service.payments
    if payments is None:
        return
    while True:
        await asyncio.sleep(interval_s)
        try:
            changed = await payments.sweep(service.ledger.clock())
            if changed:
                log.info("topup_sweep", changed=changed)
        except Exception as exc:
            log.error("topup_sweep_failed", exc_info=exc)


async def gc_loop(freeze_s: float, full_s: float) -> None:
    """Keep CPython's full collections from scanning the whole in-memory domain state.

    The ledger's state lives in memory and grows with the log; a full (generation 2)
    collection scans all of it, which paused the loop for ~100 ms at 20,000 jobs and set the
    API's p99 latency. Every `freeze_s` the objects alive are moved out of the collector's
    reach (`gc.freeze`), so collections scan only what is new. Cyclic garbage that was alive
    at a freeze is reclaimed every `full_s` by one unfreeze and full collection.
    """
    loop = asyncio.get_running_loop()
    last_full = loop.time()
    while True:
        await asyncio.sleep(freeze_s)
        if loop.time() - last_full >= full_s:
            gc.unfreeze()
            gc.collect()
            last_full = loop.time()
        gc.freeze()


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404 and is_web_path(request.url.path):
        return await not_found(request)  # a browser gets the web plane's page
    mapped: ApiError
    if exc.status_code == 405:
        mapped = MethodNotAllowed("method not allowed for this path")
    elif exc.status_code == 404:
        mapped = NotFound("no such endpoint")
    else:
        mapped = ApiError(str(exc.detail), code="http_error")
        mapped.status = exc.status_code
    status, body, headers = encode_error(mapped)
    return Response(body, status, headers | dict(exc.headers or {}), "application/json")


def _crash(request: Request, exc: Exception) -> Response:
    status, body, headers = encode_error(exc)
    return Response(body, status, headers, "application/json")


def create_app(config: ServerConfig, service: ServiceAdapter | None = None) -> Starlette:
    """The ASGI app. Without `service`, the lifespan opens one on `config.db` and closes it."""
    redactor.add_secret(config.admin_token)
    redactor.add_secret(config.metrics_token)
    metrics = Metrics()
    openapi_bytes = msgspec.json.encode(build_openapi(endpoints.api))
    holder: dict[str, Any] = {"service": service}

    def authenticator() -> Authenticator:
        return holder["authenticator"]  # type: ignore[no-any-return]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = holder["service"] is None
        svc = await open_service(config) if owned else holder["service"]
        app.state.service = svc
        app.state.config = config
        app.state.openapi = openapi_bytes
        app.state.metrics = metrics
        metrics.attach(svc)
        app.state.web = Site(config)
        holder["authenticator"] = Authenticator(
            svc.lookup_key, config.admin_token, svc.ledger.catch_up
        )
        tasks = [asyncio.create_task(sweep_loop(svc, config.sweep_interval_s))]
        if svc.payments is not None:
            tasks.append(asyncio.create_task(topup_sweep_loop(svc, config.topup_sweep_interval_s)))
        if config.gc_freeze_s > 0:
            tasks.append(asyncio.create_task(gc_loop(config.gc_freeze_s, config.gc_full_s)))
        log.info("api_started", db=redact(config.db), sandbox=config.sandbox)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if owned:
                await svc.close()

    table = RouteTable(endpoints.api.routes(authenticator))

    middleware = [
        Middleware(RequestContextMiddleware, resolve_route=table.template, observer=metrics),
    ]
    if config.cors_origins:
        middleware.append(Middleware(JsonCorsMiddleware, origins=list(config.cors_origins)))
    if config.rate_limits:
        middleware.append(Middleware(RateLimitMiddleware, limits=config.rate_limit_table))
    middleware.append(
        Middleware(
            BodyGuardMiddleware,
            max_body_bytes=config.max_body_bytes,
            large_paths={RESULT_PATH: config.max_result_body_bytes},
            form_paths=is_web_path,
            dispatch=table.dispatch,
        )
    )
    return Starlette(
        routes=[Route(METRICS_PATH, metrics_endpoint, methods=["GET"]), table, *web_routes()],
        middleware=middleware,
        exception_handlers={HTTPException: _http_exception, Exception: _crash},
        lifespan=lifespan,
    )
