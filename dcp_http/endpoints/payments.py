"""Money in through the payment gateway: renters' top-ups, the gateway's webhook, and the
admin's view and refunds (docs/payments.md). Without a gateway secret key every route here
answers 503 `payments_disabled`."""

from __future__ import annotations

from dcp_http import topup_types as tt
from dcp_http.auth import ADMIN, RENTER
from dcp_http.endpoints._api import api
from dcp_http.endpoints.jobs import idempotency_key
from dcp_http.errors import InvalidRequest, NotFound
from dcp_http.payments import Payments, PaymentsDisabled
from dcp_http.routing import Call

R = (RENTER,)
A = (ADMIN,)


def _payments(call: Call) -> Payments:
    payments = call.service.payments
    if payments is None:
        raise PaymentsDisabled("payments are not configured on this server")
    return payments


def _cursor(raw: str | None) -> tuple[int, str] | None:
    if raw is None:
        return None
    at, sep, topup_id = raw.partition(":")
    if not (sep and at.isdigit() and len(at) <= 18 and 0 < len(topup_id) <= 100):
        raise InvalidRequest(
            "invalid cursor", fields=[{"field": "cursor", "message": "not a cursor of this list"}]
        )
    return int(at), topup_id


async def _page(
    call: Call, renter_id: str | None, status: str | None, q: tt.TopUpsQuery
) -> tt.TopUpsPage:
    _payments(call)
    return await call.service.queries.topups(renter_id, status, q.limit, _cursor(q.cursor))


@api.endpoint(
    "POST",
    "/api/renters/topups",
    "Start a top-up: answers the gateway's hosted checkout URL; credited once it is paid",
    roles=R,
    body=tt.CreateTopUp,
    status=201,
    returns=tt.TopUpReply,
    errors=(422, 502, 503),
    headers={
        "Idempotency-Key": "the same key again returns the first top-up, invoiced once; with"
        " another amount it is 422 idempotency_key_reused"
    },
    tag="payments",
)
async def create_topup(call: Call) -> tt.TopUpReply:
    payments = _payments(call)
    key = idempotency_key(call)
    return tt.TopUpReply(topup=await payments.create(call.subject, call.body.amount_halala, key))


@api.endpoint(
    "GET",
    "/api/renters/topups",
    "The renter's own top-ups, newest first",
    roles=R,
    query=tt.TopUpsQuery,
    returns=tt.TopUpsPage,
    errors=(503,),
    tag="payments",
)
async def list_topups(call: Call) -> tt.TopUpsPage:
    return await _page(call, call.subject, None, call.query)


@api.endpoint(
    "GET",
    "/api/renters/topups/{topup_id}",
    "One of the renter's own top-ups",
    roles=R,
    returns=tt.TopUpReply,
    errors=(404, 503),
    tag="payments",
)
async def get_topup(call: Call) -> tt.TopUpReply:
    _payments(call)
    topup = await call.service.queries.topup(call.path["topup_id"], renter_id=call.subject)
    if topup is None:
        raise NotFound("top-up not found")
    return tt.TopUpReply(topup=topup)


@api.endpoint(
    "POST",
    "/api/payments/moyasar/webhook",
    "The gateway's payment notification: checked by its secret token, then the payment is"
    " fetched from the gateway and only that answer counts",
    body=tt.WebhookBody,
    returns=tt.WebhookReply,
    errors=(401, 503),
    tag="payments",
)
async def webhook(call: Call) -> tt.WebhookReply:
    payments = _payments(call)
    payments.check_token(call.body.secret_token)
    topup_id, status = await payments.notified(call.body.data.id)
    return tt.WebhookReply(topup_id=topup_id, status=status)


@api.endpoint(
    "GET",
    "/api/admin/topups",
    "Every top-up, newest first, optionally by status (disputed ones need a look)",
    roles=A,
    query=tt.AdminTopUpsQuery,
    returns=tt.TopUpsPage,
    errors=(503,),
    tag="admin",
)
async def admin_topups(call: Call) -> tt.TopUpsPage:
    return await _page(call, None, call.query.status, call.query)


@api.endpoint(
    "POST",
    "/api/admin/topups/{topup_id}/refund",
    "Refund a paid top-up while the renter's available balance covers it (402 if not)",
    roles=A,
    returns=tt.TopUpReply,
    errors=(402, 404, 409, 503),
    tag="admin",
)
async def refund_topup(call: Call) -> tt.TopUpReply:
    return tt.TopUpReply(topup=await _payments(call).refund(call.path["topup_id"]))
