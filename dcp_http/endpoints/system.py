"""Liveness, readiness and the schema."""

from __future__ import annotations

from typing import Any

import msgspec

from dcp_http import responses as out
from dcp_http.endpoints import api
from dcp_http.routing import Call, Reply


@api.endpoint("GET", "/healthz", "Liveness", returns=out.Health, tag="system")
async def healthz(call: Call) -> out.Health:
    return out.Health()


@api.endpoint(
    "GET",
    "/readyz",
    "Readiness: the store is writable and the projections are caught up",
    responses={200: out.Readiness, 503: out.Readiness},
    tag="system",
)
async def readyz(call: Call) -> Reply:
    ready = await call.service.readiness()
    return Reply(200 if ready.status == "ready" else 503, ready)


@api.endpoint(
    "GET",
    "/openapi.json",
    "This API's OpenAPI document",
    responses={200: dict[str, Any]},
    tag="system",
)
async def openapi(call: Call) -> msgspec.Raw:
    return msgspec.Raw(call.request.app.state.openapi)
