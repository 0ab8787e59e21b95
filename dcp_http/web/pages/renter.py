"""The renter's pages: dashboard, jobs, submit, a job with its money and output, statement,
sandbox top-up."""

from __future__ import annotations

import csv
import datetime as dt
import io
import secrets
import shlex
from typing import Any

import msgspec
from starlette.responses import JSONResponse, Response

from dcp_http import requests as inp
from dcp_http import responses as out
from dcp_http.auth import RENTER
from dcp_http.errors import InvalidRequest, NotFound
from dcp_http.service import Gone
from dcp_http.web import charts
from dcp_http.web.forms import Invalid, convert, field_errors, sar_to_halala, whole
from dcp_http.web.i18n import sar
from dcp_http.web.page import Ctx, page
from dcp_projections.errors import InsufficientFunds, ValidationError
from dcp_projections.jobs import quote

STATUSES = ("queued", "assigned", "running", "completed", "timed_out", "failed", "cancelled")
SUBMIT_FIELDS = {
    "container_spec.image": "image",
    "container_spec.command": "command",
    "container_spec.env": "env",
    "container_spec": "command",
    "gpu_requirements.gpu_type": "gpu_type",
    "gpu_requirements.gpu_count": "gpu_count",
    "gpu_requirements.min_vram_gb": "min_vram_gb",
    "gpu_requirements": "gpu_count",
    "max_duration_seconds": "max_duration_seconds",
    "priority": "priority",
}
CSV_MAX_ROWS = 10_000


@page(RENTER)
async def dashboard(c: Ctx) -> Response:
    rid = c.session.subject_id
    balance = await c.service.renter_balance(rid)
    recent = await c.service.list_jobs(rid, inp.JobsQuery(limit=200))
    today = dt.datetime.now(dt.UTC).date()
    spend = charts.per_day(
        ((j.ended_at, j.actual_cost_halala or 0) for j in recent.jobs), 14, today
    )
    return c.render(
        "renter_dashboard.html",
        balance=balance,
        jobs=recent.jobs[:10],
        chart=charts.bars(spend, money=True),
        sandbox=c.site.config.sandbox,
    )


@page(RENTER)
async def jobs(c: Ctx) -> Response:
    q = c.request.query_params
    status = q.get("status") or None
    try:
        query = msgspec.convert(
            {"status": status, "limit": 20, "cursor": q.get("cursor") or None}, inp.JobsQuery
        )
        page_ = await c.service.list_jobs(c.session.subject_id, query)
    except (msgspec.ValidationError, InvalidRequest):  # a status or cursor not of this list
        raise NotFound("no such page of jobs") from None
    return c.render(
        "renter_jobs.html",
        jobs=page_.jobs,
        next_cursor=page_.next_cursor,
        status=status or "",
        statuses=STATUSES,
    )


def _command(text: str) -> list[str]:
    """The command as the shell would split it (quotes group words), without running one."""
    return shlex.split(text)


def _env(text: str, errors: dict[str, str], c: Ctx) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            errors["env"] = c._("Write one NAME=value per line; names are letters, digits and _.")
            break
        env[name.strip()] = value
    return env


async def _form_data(c: Ctx) -> tuple[dict[str, Any], dict[str, str]]:
    errors: dict[str, str] = {}
    try:
        command = _command(c.field("command"))
    except ValueError:
        command = []
    if not command:
        errors["command"] = c._("Enter the command to run.")
    data = {
        "container_spec": {
            "image": c.field("image"),
            "command": command,
            "env": _env(c.form.get("env", "") or "", errors, c),  # type: ignore[arg-type]
        },
        "gpu_requirements": {
            "gpu_type": c.field("gpu_type") or "any",
            "gpu_count": whole(c, "gpu_count", errors, default=1),
            "min_vram_gb": whole(c, "min_vram_gb", errors, default=0),
        },
        "max_duration_seconds": whole(c, "max_duration_seconds", errors, default=1800),
        "priority": c.field("priority") or "standard",
    }
    return data, errors


def _quote(c: Ctx, body: inp.SubmitJob) -> dict[str, int]:
    state = c.service.ledger.state
    req = body.gpu_requirements
    price, rate, reserve = quote(
        state, req.gpu_type, req.gpu_count, body.priority, body.max_duration_seconds,
        body.provider_id,
    )  # fmt: skip
    return {
        "price_halala": price,
        "rate_halala": rate,
        "reserve_halala": reserve,
        "available_halala": state.available(c.session.subject_id),
    }


async def _submit_form(c: Ctx, status: int = 200, **extra: Any) -> Response:
    values = {
        "image": c.field("image"),
        "command": c.field("command"),
        "env": (c.form.get("env") or "") if c.form else "",
        "gpu_type": c.field("gpu_type", "any"),
        "gpu_count": c.field("gpu_count") or "1",
        "min_vram_gb": c.field("min_vram_gb") or "0",
        "max_duration_seconds": c.field("max_duration_seconds") or "1800",
        "priority": c.field("priority") or "standard",
        "token": c.field("token") or secrets.token_urlsafe(16),
        **extra.pop("values", {}),
    }
    models = [p.gpu_model for p in await c.service.queries.pricing() if p.gpu_model != "default"]
    return c.render(
        "renter_submit.html",
        status,
        values=values,
        images=(await c.service.images()).images,
        models=models,
        **extra,
    )


@page(RENTER)
async def submit(c: Ctx) -> Response:
    if c.request.method == "GET":
        return await _submit_form(c)
    data, errors = await _form_data(c)
    try:
        if errors:
            raise Invalid(errors)
        body = convert(c, data, inp.SubmitJob, SUBMIT_FIELDS)
    except Invalid as bad:
        return await _submit_form(c, 400, errors={**errors, **bad.errors})
    estimate = _quote(c, body)
    if c.field("action") == "estimate":
        return await _submit_form(c, estimate=estimate)
    try:
        reply = await c.service.submit_job(
            c.session.subject_id, body, "web-" + c.field("token")[:100]
        )
    except InsufficientFunds as short:
        message = c._(
            "The reserve is %(reserve)s SAR but your available balance is %(available)s SAR:"
            " %(short)s SAR short. Top up or choose a shorter maximum duration.",
            reserve=sar(estimate["reserve_halala"]),
            available=sar(estimate["available_halala"]),
            short=sar(short.shortfall_halala),
        )
        return await _submit_form(
            c,
            402,
            estimate=estimate,
            errors={"max_duration_seconds": message},
            shortfall_halala=short.shortfall_halala,
        )
    except ValidationError as bad:
        return await _submit_form(c, 400, errors=field_errors(c, bad.fields, SUBMIT_FIELDS))
    return c.redirect(f"/renter/jobs/{reply.job.job_id}", c._("Job submitted."))


@page(RENTER)
async def estimate(c: Ctx) -> Response:
    """The reserve for the terms in the query, as JSON, for the submit form's live estimate."""
    c.form = c.request.query_params  # type: ignore[assignment]
    data, errors = await _form_data(c)
    # Only the terms count here: any image and command stand in for the ones not typed yet.
    data["container_spec"] = {"image": "x", "command": ["x"]}
    errors.pop("command", None)
    try:
        if errors:
            raise Invalid(errors)
        body = convert(c, data, inp.SubmitJob, SUBMIT_FIELDS)
    except Invalid:
        return JSONResponse({"error": "invalid"}, 400)
    q = _quote(c, body)
    return JSONResponse(
        {**q, "reserve_sar": sar(q["reserve_halala"]), "rate_sar": sar(q["rate_halala"])}
    )


async def _output(c: Ctx, job_id: str) -> out.JobOutputView | None:
    try:
        found = await c.service.job_output(c.identity, job_id)
    except Gone:
        return None
    return found if isinstance(found, out.JobOutputView) else None


@page(RENTER)
async def job(c: Ctx) -> Response:
    job_id = c.request.path_params["job_id"]
    view = await c.service.get_job(c.identity, job_id)
    output = await _output(c, job_id)
    steps = await c.service.job_timeline(c.identity, job_id)
    return c.render(
        "renter_job.html",
        job=view,
        output=output,
        steps=steps,
        command_line=shlex.join(view.command),
    )


@page(RENTER)
async def job_status(c: Ctx) -> Response:
    """The job's status as JSON, for the job page's live refresh."""
    view = await c.service.get_job(c.identity, c.request.path_params["job_id"])
    return JSONResponse({"status": view.status})


@page(RENTER)
async def cancel(c: Ctx) -> Response:
    job_id = c.request.path_params["job_id"]
    await c.service.cancel_job(c.identity, job_id)
    return c.redirect(f"/renter/jobs/{job_id}", c._("Job cancelled."))


@page(RENTER)
async def download(c: Ctx) -> Response:
    job_id, stream = c.request.path_params["job_id"], c.request.path_params["stream"]
    if stream not in ("stdout", "stderr"):
        raise NotFound("no such output")
    output = await _output(c, job_id)
    if output is None:
        raise NotFound("no output yet")
    return Response(
        getattr(output, stream),
        media_type="text/plain; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{job_id}-{stream}.txt"'},
    )


@page(RENTER)
async def statement(c: Ctx) -> Response:
    cursor = c.request.query_params.get("cursor") or None
    try:
        ledger = await c.service.renter_ledger(
            c.session.subject_id, inp.PageQuery(limit=50, cursor=cursor)
        )
    except InvalidRequest:  # a cursor not of this list
        raise NotFound("no such page of the statement") from None
    return c.render("renter_statement.html", entries=ledger.entries, next_cursor=ledger.next_cursor)


@page(RENTER)
async def statement_csv(c: Ctx) -> Response:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["seq", "recorded_at", "account", "event_type", "job_id", "amount_halala", "amount_sar"]
    )
    cursor: str | None = None
    rows = 0
    while rows < CSV_MAX_ROWS:
        page_ = await c.service.renter_ledger(
            c.session.subject_id, inp.PageQuery(limit=200, cursor=cursor)
        )
        for e in page_.entries:
            w.writerow(
                [
                    e.seq,
                    e.recorded_at,
                    e.account,
                    e.event_type,
                    e.job_id or "",
                    e.amount_halala,
                    sar(e.amount_halala).replace(",", ""),
                ]
            )
        rows += len(page_.entries)
        cursor = page_.next_cursor
        if cursor is None:
            break
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="dcp-statement.csv"'},
    )


@page(RENTER)
async def topup(c: Ctx) -> Response:
    errors: dict[str, str] = {}
    amount = sar_to_halala(c, "amount", errors)
    if amount is not None and amount < 1:
        errors["amount"] = c._("Enter an amount of at least 0.01 SAR.")
    if not errors:
        try:
            body = convert(c, {"amount_halala": amount}, inp.TopUp, {"amount_halala": "amount"})
            await c.service.topup(c.session.subject_id, body)
            return c.redirect("/renter", c._("Your balance was topped up."))
        except Invalid as bad:
            errors = bad.errors
    rid = c.session.subject_id
    recent = await c.service.list_jobs(rid, inp.JobsQuery(limit=10))
    return c.render(
        "renter_dashboard.html",
        400,
        balance=await c.service.renter_balance(rid),
        jobs=recent.jobs,
        chart=charts.bars([]),
        sandbox=c.site.config.sandbox,
        errors=errors,
        values={"amount": c.field("amount")},
    )
