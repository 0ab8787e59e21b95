"""The admin console's top-ups: every top-up by status (disputed ones need a look) and the
refund of a paid one, by `Payments.refund`, the same call as `POST
/api/admin/topups/{id}/refund` (ledgered first, then asked of the gateway)."""

from __future__ import annotations

from starlette.responses import Response

from dcp_http.auth import ADMIN
from dcp_http.errors import NotFound
from dcp_http.payments import PaymentsDisabled
from dcp_http.web.page import Ctx, page
from dcp_http.web.pages.wallet import labels

PAGE = 50
STATUSES = ("pending", "paid", "disputed", "failed", "expired", "refunding", "refunded")


@page(ADMIN)
async def topups(c: Ctx) -> Response:
    payments = c.service.payments
    if c.request.method == "POST":
        if payments is None:
            raise PaymentsDisabled("payments are not configured on this server")
        if c.field("action") != "refund":
            raise NotFound("no such action")
        # InsufficientFunds (402) and a top-up not paid (409) become the error page with
        # their message; nothing is ledgered for either.
        topup = await payments.refund(c.field("topup_id")[:100])
        done = {
            "refunded": c._("Top-up refunded."),
            "refunding": c._("Refund asked of the gateway; its answer is not in yet."),
        }.get(topup.status, c._("The gateway refused the refund; the balance was restored."))
        return c.redirect("/admin/topups?status=" + topup.status, done)
    status = c.request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        raise NotFound("no such status")
    listed = await c.service.queries.topups(None, status, PAGE, None) if payments else None
    return c.render(
        "admin_topups.html",
        payments=payments is not None,
        topups=listed.topups if listed else [],
        status=status or "",
        statuses=STATUSES,
        labels=labels(c),
    )
