"""Public pages: home with live figures, the marketplace, pricing, and the docs."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

from dcp_http.web.forms import sar_to_halala, whole
from dcp_http.web.page import Ctx, page


@page()
async def home(c: Ctx) -> Response:
    market = await c.service.marketplace()
    counts = await c.service.queries.job_counts()
    figures = {
        "providers": len(market.providers),
        "gpus": sum(p.gpu_count for p in market.providers),
        "queued": counts.get("queued", 0),
        "running": counts.get("running", 0) + counts.get("assigned", 0),
        "completed": counts.get("completed", 0),
    }
    return c.render("home.html", figures=figures)


@page()
async def marketplace(c: Ctx) -> Response:
    q = c.request.query_params
    values = {k: q.get(k, "").strip() for k in ("gpu", "min_vram", "max_price")}
    errors: dict[str, str] = {}
    c.form = q  # type: ignore[assignment]  # the filters read like a form's fields
    min_vram = whole(c, "min_vram", errors, default=0)
    max_price = sar_to_halala(c, "max_price", errors) if values["max_price"] else None
    online = (await c.service.marketplace()).providers
    rows = list(online)
    if values["gpu"]:
        rows = [p for p in rows if values["gpu"].lower() in p.gpu_model.lower()]
    if min_vram:
        rows = [p for p in rows if p.vram_gb >= min_vram]
    if max_price is not None:
        rows = [p for p in rows if p.halala_per_gpu_hour <= max_price]
    models = sorted({p.gpu_model for p in online})
    return c.render(
        "marketplace.html",
        400 if errors else 200,
        providers=rows,
        models=models,
        values=values,
        errors=errors,
    )


@page()
async def pricing(c: Ctx) -> Response:
    prices = await c.service.queries.pricing()
    return c.render("pricing.html", prices=prices)


@page()
async def docs_renters(c: Ctx) -> Response:
    return c.render("docs_renters.html", base=str(c.request.base_url).rstrip("/"))


@page()
async def docs_providers(c: Ctx) -> Response:
    return c.render("docs_providers.html", base=str(c.request.base_url).rstrip("/"))


def _operations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The schema's operations as rows for the reference page, grouped by tag order."""
    ops = []
    for path, methods in doc.get("paths", {}).items():
        for method, op in methods.items():
            if not isinstance(op, dict):
                continue
            body = (
                op.get("requestBody", {})
                .get("content", {})
                .get("application/json", {})
                .get("schema", {})
            )
            ops.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary", ""),
                    "tag": (op.get("tags") or [""])[0],
                    "auth": bool(op.get("security")),
                    "body": body.get("$ref", "").rsplit("/", 1)[-1],
                    "responses": sorted(op.get("responses", {})),
                }
            )
    return ops


@page()
async def docs_api(c: Ctx) -> Response:
    doc = msgspec.json.decode(c.request.app.state.openapi)
    ops = _operations(doc)
    tags: list[str] = []
    for op in ops:
        if op["tag"] not in tags:
            tags.append(op["tag"])
    schemas = doc.get("components", {}).get("schemas", {})
    return c.render("docs_api.html", ops=ops, tags=tags, info=doc.get("info", {}), schemas=schemas)
