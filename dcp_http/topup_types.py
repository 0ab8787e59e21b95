"""Request and response types of the top-up and payment-gateway routes (docs/payments.md).

Our own request bodies forbid unknown fields like every other (`dcp_http.requests.Body`). The
gateway's notification does not: the gateway adds fields as it likes, and we read only the
payment id and the secret token from it, never an amount or a status.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

# A top-up as the API shows it is dcp_app's own view Struct, encoded as it is: the same one
# answers a command (dcp_app.topups) and a read (dcp_app.queries).
from dcp_app.views import TopUpsPage, TopUpView
from dcp_events.catalogue import TopUpStatus
from dcp_http.requests import AmountHalala, Body, Query
from dcp_http.responses import Out

__all__ = [
    "AdminTopUpsQuery",
    "CreateTopUp",
    "TopUpReply",
    "TopUpStatus",
    "TopUpView",
    "TopUpsPage",
    "TopUpsQuery",
    "WebhookBody",
    "WebhookPayment",
    "WebhookReply",
]

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


class TopUpReply(Out):
    topup: TopUpView


class WebhookReply(Out):
    received: bool = True
    topup_id: str | None = None
    status: TopUpStatus | Literal["ignored"] = "ignored"
