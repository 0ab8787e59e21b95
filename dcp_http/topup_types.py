"""Request and response types of the top-up and payment-gateway routes (docs/payments.md).

Our own request bodies forbid unknown fields like every other (`dcp_http.requests.Body`). The
gateway's notification does not: the gateway adds fields as it likes, and we read only the
payment id and the secret token from it, never an amount or a status.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from dcp_http.requests import AmountHalala, Body, Query
from dcp_http.responses import Out

TopUpStatus = Literal["pending", "paid", "failed", "expired", "disputed", "refunding", "refunded"]
# The gateway's ids are UUIDs; anything else in a notification is not one of its payments.
GatewayId = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]


class CreateTopUp(Body):
    amount_halala: AmountHalala


class TopUpsQuery(Query):
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    cursor: Annotated[str, Meta(max_length=150)] | None = None


class AdminTopUpsQuery(TopUpsQuery):
    status: TopUpStatus | None = None


class WebhookPayment(msgspec.Struct, kw_only=True):
    id: GatewayId


class WebhookBody(msgspec.Struct, kw_only=True):
    """The gateway's notification: its event id and type, the configured secret token, and
    the payment object (`data`) of which only the id is read."""

    id: Annotated[str, Meta(max_length=200)] = ""
    type: Annotated[str, Meta(max_length=100)] = ""
    secret_token: Annotated[str, Meta(max_length=500)] = ""
    data: WebhookPayment


class TopUpView(Out):
    topup_id: str
    renter_id: str
    status: TopUpStatus
    amount_halala: int
    checkout_url: str | None
    invoice_id: str | None
    payment_id: str | None
    reason: str
    # What the gateway said about a disputed payment (null otherwise).
    gateway_amount_halala: int | None
    gateway_currency: str | None
    created_at: str
    updated_at: str


class TopUpReply(Out):
    topup: TopUpView


class TopUpsPage(Out):
    topups: list[TopUpView]
    next_cursor: str | None


class WebhookReply(Out):
    received: bool = True
    topup_id: str | None = None
    status: TopUpStatus | Literal["ignored"] = "ignored"
