"""Liveness, readiness and the schema."""

from __future__ import annotations

from typing import Any

import msgspec

from dcp_http import responses as out
from dcp_http.endpoints._api import api
from dcp_http.errors import Unavailable
from dcp_http.routing import Call


@api.endpoint("GET", "/healthz", "Liveness", returns=out.Health, tag="system")
async def healthz(call: Call) -> out.Health:
    return out.Health()


@api.endpoint(
    "GET",
    "/readyz",
    "Readiness: the store is writable and the projections are caught up",
    returns=out.Readiness,
    errors=(503,),
    tag="system",
)
async def readyz(call: Call) -> out.Readiness:
    ready = await call.service.readiness()
    if ready.status != "ready":
        raise Unavailable(
            f"not ready: store writable {ready.store_writable}, projections at "
            f"{ready.projection_seq} of {ready.head_seq}",
            code="not_ready",
        )
    return ready


@api.endpoint(
    "GET",
    "/openapi.json",
    "This API's OpenAPI document",
    responses={200: dict[str, Any]},
    tag="system",
)
async def openapi(call: Call) -> msgspec.Raw:
    return msgspec.Raw(call.request.app.state.openapi)
