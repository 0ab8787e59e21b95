"""The provider's pages: onboarding and dashboard, pause/resume, earnings and withdrawals."""

from __future__ import annotations

import datetime as dt

from starlette.responses import JSONResponse, Response

from dcp_http import requests as inp
from dcp_http.auth import PROVIDER
from dcp_http.web import charts
from dcp_http.web.forms import Invalid, convert, field_errors, sar_to_halala
from dcp_http.web.i18n import sar
from dcp_http.web.page import Ctx, page
from dcp_projections.decisions import iban_is_valid
from dcp_projections.errors import InsufficientFunds, ValidationError
from dcp_projections.state import ENDED

WITHDRAW_FIELDS = {"amount_halala": "amount", "iban": "iban"}


def _age_s(when: str | None) -> int | None:
    if not when:
        return None
    t = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    return max(0, int((dt.datetime.now(dt.UTC) - t).total_seconds()))


@page(PROVIDER)
async def dashboard(c: Ctx) -> Response:
    pid = c.session.subject_id
    me = await c.service.provider_profile(pid)
    jobs = await c.service.provider_job_list(pid, 50)
    return c.render(
        "provider_dashboard.html",
        me=me,
        age_s=_age_s(me.last_heartbeat_at),
        running=[j for j in jobs if j.status not in ENDED],
        recent=[j for j in jobs if j.status in ENDED][:10],
        base=str(c.request.base_url).rstrip("/"),
    )


@page(PROVIDER)
async def status(c: Ctx) -> Response:
    """State and heartbeat as JSON, for the onboarding page's "waiting" refresh."""
    me = await c.service.provider_profile(c.session.subject_id)
    return JSONResponse({"state": me.state, "last_heartbeat_at": me.last_heartbeat_at})


@page(PROVIDER)
async def pause(c: Ctx) -> Response:
    await c.service.set_paused(c.session.subject_id, True)
    return c.redirect("/provider", c._("Paused: you get no new jobs until you resume."))


@page(PROVIDER)
async def resume(c: Ctx) -> Response:
    await c.service.set_paused(c.session.subject_id, False)
    return c.redirect("/provider", c._("Resumed: you take new jobs again."))


async def _earnings_page(c: Ctx, status: int = 200, **extra: object) -> Response:
    pid = c.session.subject_id
    me = await c.service.provider_profile(pid)
    jobs = await c.service.provider_job_list(pid, 500)
    today = dt.datetime.now(dt.UTC).date()
    daily = charts.per_day(((j.ended_at, j.provider_earned_halala or 0) for j in jobs), 14, today)
    return c.render(
        "provider_earnings.html",
        status,
        me=me,
        chart=charts.bars(daily, money=True),
        withdrawals=list(reversed(await c.service.provider_withdrawals(pid))),
        **extra,
    )


@page(PROVIDER)
async def earnings(c: Ctx) -> Response:
    if c.request.method == "GET":
        return await _earnings_page(c)
    values = {"amount": c.field("amount"), "iban": c.field("iban").replace(" ", "").upper()}
    errors: dict[str, str] = {}
    amount = sar_to_halala(c, "amount", errors)
    try:
        if errors:
            raise Invalid(errors)
        body = convert(
            c, {"amount_halala": amount, "iban": values["iban"]}, inp.Withdraw, WITHDRAW_FIELDS
        )
        await c.service.withdraw(c.session.subject_id, body)
    except Invalid as bad:
        return await _earnings_page(c, 400, values=values, errors=bad.errors)
    except InsufficientFunds as short:
        message = c._(
            "That is more than your earnings (short by %(short)s SAR).",
            short=sar(short.shortfall_halala),
        )
        return await _earnings_page(c, 402, values=values, errors={"amount": message})
    except ValidationError as bad:
        errs = field_errors(c, bad.fields, WITHDRAW_FIELDS)
        if "amount" in errs:
            errs["amount"] = c._(
                "The minimum withdrawal is %(min)s SAR.",
                min=sar(c.service.settings.min_withdrawal_halala),
            )
        return await _earnings_page(c, 400, values=values, errors=errs)
    return c.redirect("/provider/earnings", c._("Withdrawal requested; an admin pays it out."))


@page(PROVIDER)
async def iban(c: Ctx) -> Response:
    """Whether an IBAN passes the domain's check, as JSON, for the withdraw form."""
    value = c.request.query_params.get("iban", "").replace(" ", "").upper()[:64]
    valid = iban_is_valid(value)
    message = (
        ""
        if valid
        else c._("This is not a valid Saudi IBAN (SA followed by 22 digits, with a valid check).")
    )
    return JSONResponse({"valid": valid, "message": message})
