"""The admin console: providers, renters, jobs, withdrawals, pricing, images, reconciliation
and the event log. Every action is a POST form with the session's CSRF token."""

from __future__ import annotations

import msgspec
from starlette.responses import Response

from dcp_http import requests as inp
from dcp_http.auth import ADMIN
from dcp_http.errors import NotFound
from dcp_http.web import charts
from dcp_http.web.forms import Invalid, convert, field_errors, sar_to_halala, whole
from dcp_http.web.page import Ctx, page
from dcp_http.web.pages.renter import STATUSES
from dcp_projections.errors import DomainError

PAGE = 50


def _offset(c: Ctx) -> int:
    raw = c.request.query_params.get("offset", "0")
    return int(raw) if raw.isdigit() and len(raw) < 10 else 0


@page(ADMIN)
async def overview(c: Ctx) -> Response:
    counts = await c.service.queries.job_counts()
    chart = charts.bars([(s, counts.get(s, 0)) for s in STATUSES])
    recon = await c.service.reconciliation()
    pending = await c.service.withdrawals(inp.WithdrawalsQuery(status="pending", limit=200))
    return c.render(
        "admin_overview.html",
        chart=chart,
        counts=counts,
        recon=recon,
        pending=len(pending.withdrawals),
    )


@page(ADMIN)
async def providers(c: Ctx) -> Response:
    if c.request.method == "POST":
        action, pid = c.field("action"), c.field("provider_id")
        if action not in ("approve", "suspend", "unsuspend"):
            raise NotFound("no such action")
        await c.service.provider_flag(pid, action, "")
        done = {
            "approve": c._("Provider approved."),
            "suspend": c._("Provider suspended."),
            "unsuspend": c._("Provider unsuspended."),
        }[action]
        return c.redirect("/admin/providers", done)
    offset = _offset(c)
    rows = await c.service.providers(PAGE, offset)
    return c.render("admin_providers.html", providers=rows, offset=offset, more=len(rows) == PAGE)


async def _renters_page(c: Ctx, status: int = 200, **extra: object) -> Response:
    offset = _offset(c)
    rows = await c.service.renters(PAGE, offset)
    return c.render(
        "admin_renters.html", status, renters=rows, offset=offset, more=len(rows) == PAGE, **extra
    )


@page(ADMIN)
async def renters(c: Ctx) -> Response:
    if c.request.method == "GET":
        return await _renters_page(c)
    rid = c.field("renter_id")
    values = {
        "renter_id": rid,
        "amount": c.field("amount"),
        "reference": c.field("reference"),
        "reason": c.field("reason"),
    }
    errors: dict[str, str] = {}
    amount = sar_to_halala(c, "amount", errors)
    fields = {"amount_halala": "amount", "reference": "reference", "reason": "reason"}
    try:
        if errors:
            raise Invalid(errors)
        body = convert(
            c,
            {"amount_halala": amount, "reference": values["reference"], "reason": values["reason"]},
            inp.Credit,
            fields,
        )
        reply = await c.service.credit(rid, body)
    except Invalid as bad:
        return await _renters_page(c, 400, values=values, errors=bad.errors, target=rid)
    except DomainError as bad:
        if bad.status == 404:
            raise
        errs = field_errors(
            c, getattr(bad, "fields", [{"field": "reference", "message": str(bad)}]), fields
        )
        return await _renters_page(c, bad.status, values=values, errors=errs, target=rid)
    message = (
        c._("This reference was already credited; nothing changed.")
        if reply.duplicate
        else c._("Renter credited.")
    )
    return c.redirect("/admin/renters", message)


@page(ADMIN)
async def jobs(c: Ctx) -> Response:
    if c.request.method == "POST":
        action, job_id = c.field("action"), c.field("job_id")
        if action == "cancel":
            await c.service.cancel_job(c.identity, job_id)
            return c.redirect("/admin/jobs", c._("Job cancelled."))
        if action == "requeue":
            await c.service.requeue_job(job_id)
            return c.redirect("/admin/jobs", c._("Job requeued."))
        raise NotFound("no such action")
    status = c.request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        raise NotFound("no such status")
    offset = _offset(c)
    rows = await c.service.all_jobs(status, PAGE, offset)
    return c.render(
        "admin_jobs.html",
        jobs=rows,
        status=status or "",
        statuses=STATUSES,
        offset=offset,
        more=len(rows) == PAGE,
    )


@page(ADMIN)
async def withdrawals(c: Ctx) -> Response:
    if c.request.method == "POST":
        action, wid = c.field("action"), c.field("withdrawal_id")
        if action not in ("complete", "reject"):
            raise NotFound("no such action")
        await c.service.decide_withdrawal(wid, action, c.field("reason")[:500])
        done = c._("Withdrawal completed.") if action == "complete" else c._("Withdrawal rejected.")
        return c.redirect("/admin/withdrawals", done)
    status = c.request.query_params.get("status", "pending")
    try:
        q = msgspec.convert({"status": status or None, "limit": 200}, inp.WithdrawalsQuery)
    except msgspec.ValidationError:
        raise NotFound("no such status") from None
    page_ = await c.service.withdrawals(q)
    return c.render("admin_withdrawals.html", withdrawals=page_.withdrawals, status=status)


@page(ADMIN)
async def pricing(c: Ctx) -> Response:
    errors: dict[str, str] = {}
    values: dict[str, str] = {}
    status = 200
    if c.request.method == "POST":
        values = {"gpu_model": c.field("gpu_model"), "price": c.field("price")}
        price = sar_to_halala(c, "price", errors)
        if not values["gpu_model"]:
            errors["gpu_model"] = c._("Enter the GPU model.")
        try:
            if errors:
                raise Invalid(errors)
            body = convert(
                c, {"halala_per_gpu_hour": price}, inp.SetPrice, {"halala_per_gpu_hour": "price"}
            )
            await c.service.set_price(values["gpu_model"], body.halala_per_gpu_hour)
            return c.redirect("/admin/pricing", c._("Price saved."))
        except Invalid as bad:
            errors, status = bad.errors, 400
        except DomainError as bad:
            errors, status = (
                field_errors(
                    c,
                    getattr(bad, "fields", []) or [{"field": "gpu_model", "message": str(bad)}],
                    {"gpu_model": "gpu_model"},
                ),
                400,
            )
    prices = await c.service.queries.pricing()
    return c.render("admin_pricing.html", status, prices=prices, errors=errors, values=values)


@page(ADMIN)
async def images(c: Ctx) -> Response:
    errors: dict[str, str] = {}
    values: dict[str, str] = {}
    status = 200
    if c.request.method == "POST":
        values = {"reference": c.field("reference")}
        allow = c.field("action") != "remove"
        try:
            body = convert(c, values, inp.ImageBody, {"reference": "reference"})
            await c.service.set_image(body.reference, allow)
            return c.redirect(
                "/admin/images", c._("Image allowed.") if allow else c._("Image removed.")
            )
        except Invalid as bad:
            errors, status = bad.errors, 400
        except DomainError as bad:
            errors = {"reference": c._("This value is not valid.")}
            status = bad.status
    listed = (await c.service.images()).images
    return c.render("admin_images.html", status, images=listed, errors=errors, values=values)


@page(ADMIN)
async def reconciliation(c: Ctx) -> Response:
    return c.render("admin_reconciliation.html", recon=await c.service.reconciliation())


@page(ADMIN)
async def events(c: Ctx) -> Response:
    errors: dict[str, str] = {}
    c.form = c.request.query_params  # type: ignore[assignment]
    after = whole(c, "after", errors, default=0) or 0
    q = inp.EventsQuery(after=min(after, 2**62), limit=50)
    page_ = await c.service.events(q)
    return c.render(
        "admin_events.html",
        400 if errors else 200,
        events=page_.events,
        after=q.after,
        next_after=page_.next_after,
        errors=errors,
        values={"after": c.field("after")},
    )
