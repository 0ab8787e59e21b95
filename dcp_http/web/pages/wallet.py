"""The renter's wallet: the balance, top-ups through the payment gateway and their states
(docs/payments.md, docs/web.md).

Starting a top-up calls `Payments.create`, the very call behind `POST /api/renters/topups`:
the amount's bounds are the domain's (its ValidationError is shown next to the field), the
form's one-time token is the Idempotency-Key (a double click invoices once), and the browser
is sent to the gateway's checkout page. The gateway sends it back to `/wallet?topup=<id>`,
which shows that top-up's state as the ledger knows it (the webhook or the sweep decides it,
never the return itself).
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.responses import Response

from dcp_http.auth import RENTER
from dcp_http.errors import NotFound
from dcp_http.moyasar import GatewayError, GatewayRefused
from dcp_http.payments import PaymentsDisabled
from dcp_http.topup_types import TopUpView
from dcp_http.web.forms import sar_to_halala
from dcp_http.web.headers import CSP
from dcp_http.web.i18n import sar
from dcp_http.web.page import Ctx, page
from dcp_projections.errors import IdempotencyKeyReused, ValidationError

LISTED = 50  # the newest top-ups the wallet lists


def labels(c: Ctx) -> dict[str, str]:
    """Each top-up status in the user's language."""
    return {
        "pending": c._("pending"),
        "paid": c._("paid"),
        "failed": c._("failed"),
        "expired": c._("expired"),
        "disputed": c._("disputed"),
        "refunding": c._("refunding"),
        "refunded": c._("refunded"),
    }


def _explain(c: Ctx, topup: TopUpView) -> str:
    """What the state of a top-up means for the renter's balance."""
    amount = sar(topup.amount_halala)
    return {
        "pending": c._(
            "Waiting for the payment gateway to confirm the payment. Nothing has been added"
            " to your balance yet; refresh this page in a moment."
        ),
        "paid": c._("Paid: %(amount)s SAR was added to your available balance.", amount=amount),
        "failed": c._("The payment did not go through. Nothing was added to your balance."),
        "expired": c._(
            "The checkout expired before it was paid. Nothing was added to your balance."
        ),
        "disputed": c._(
            "The gateway's payment does not match this top-up, so nothing was added to your"
            " balance. An operator will review it."
        ),
        "refunding": c._("A refund of %(amount)s SAR is in progress.", amount=amount),
        "refunded": c._("%(amount)s SAR was refunded to your card.", amount=amount),
    }[topup.status]


def bounds_message(c: Ctx) -> str:
    config = c.site.config
    return c._(
        "Enter an amount from %(min)s to %(max)s SAR.",
        min=sar(config.topup_min_halala),
        max=sar(config.topup_max_halala),
    )


async def _wallet(c: Ctx, status: int = 200, **extra: Any) -> Response:
    rid = c.session.subject_id
    payments = c.service.payments is not None
    topups: list[TopUpView] = []
    shown, explain = None, ""
    if payments:
        topups = (await c.service.queries.topups(rid, None, LISTED, None)).topups
        wanted = c.request.query_params.get("topup")
        if wanted:
            # Another renter's top-up is not there, like an unknown one.
            shown = await c.service.queries.topup(wanted[:100], renter_id=rid)
            if shown is None:
                raise NotFound("top-up not found")
            explain = _explain(c, shown)
    values = {
        "amount": c.field("amount"),
        "token": c.field("token") or secrets.token_urlsafe(16),
        **extra.pop("values", {}),
    }
    response = c.render(
        "renter_wallet.html",
        status,
        balance=await c.service.renter_balance(rid),
        payments=payments,
        topups=topups,
        shown=shown,
        explain=explain,
        labels=labels(c),
        hint=bounds_message(c),
        values=values,
        **{"problem": "", **extra},
    )
    # The browser checks a form's redirect against the form-action of the page the form is
    # on: this page's form may also be sent on to the gateway's checkout, and nowhere else.
    origin = c.site.config.moyasar_checkout_origin
    response.headers["content-security-policy"] = CSP.replace(
        "form-action 'self'", f"form-action 'self' {origin}"
    )
    return response


@page(RENTER)
async def wallet(c: Ctx) -> Response:
    return await _wallet(c)


@page(RENTER)
async def start_topup(c: Ctx) -> Response:
    payments = c.service.payments
    if payments is None:
        raise PaymentsDisabled("payments are not configured on this server")
    checkout = c.site.config.moyasar_checkout_origin
    errors: dict[str, str] = {}
    amount = sar_to_halala(c, "amount", errors)
    if amount is None:
        return await _wallet(c, 400, errors=errors)
    token = c.field("token")[:100]
    fresh = {"token": secrets.token_urlsafe(16)}
    try:
        topup = await payments.create(
            c.session.subject_id, amount, f"web-{token}" if token else None
        )
    except ValidationError:  # the domain's bounds: no top-up recorded, nothing sent
        return await _wallet(c, 400, errors={"amount": bounds_message(c)})
    except IdempotencyKeyReused:  # this form was sent before with another amount
        message = c._("This form was already used for another amount. Please send it again.")
        return await _wallet(c, 422, errors={"amount": message}, values=fresh)
    except GatewayRefused:  # the top-up is failed; a new one needs a new form
        problem = c._(
            "The payment gateway refused this top-up. Nothing was charged; please try again"
            " later or with another amount."
        )
        return await _wallet(c, 502, problem=problem, values=fresh)
    except GatewayError:  # outcome unknown: the same token again finds the invoice if made
        problem = c._(
            "The payment gateway cannot be reached right now. Nothing was added to your"
            " balance; please try again in a moment."
        )
        return await _wallet(c, 503, problem=problem)
    url = topup.checkout_url
    if topup.status == "pending" and url and url.startswith(checkout + "/"):
        return c.redirect(url)
    # A repeat of a form whose top-up is already decided: show it rather than pay again (or
    # a checkout elsewhere than configured, which the browser would refuse to follow: the
    # wallet links to it instead).
    return c.redirect(f"/wallet?topup={topup.topup_id}")
