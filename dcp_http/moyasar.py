"""The payment gateway's HTTP API (Moyasar, https://docs.moyasar.com), as far as top-ups use it.

Every call is HTTP Basic auth with the secret key as the user name and an empty password, JSON
in and out, amounts in the smallest currency unit (halala). The base URL (`/v1`) is where
`/invoices` and `/payments/{id}` hang from.

Bounds: every request has a timeout; GETs are retried a bounded number of times on a
connection fault, a timeout or a 5xx, with a short backoff; a POST (create an invoice, refund a
payment) is sent once and never retried here, because a retry of a request whose outcome is
unknown could create a second invoice or a second refund. Its caller recovers instead (looks
the invoice up by our metadata, or the payment's refunded state). The secret key never appears
in a log line, an error message or a response.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any, TypeVar

import httpx
import msgspec

from dcp_http.errors import ApiError

T = TypeVar("T")

GET_ATTEMPTS = 3
BACKOFF_S = 0.2


class GatewayError(ApiError):
    """The gateway could not be asked, or did not answer, or answered 5xx: the outcome of the
    request is unknown (503 `gateway_unavailable`); try again later."""

    status = 503
    code = "gateway_unavailable"


class GatewayRefused(GatewayError):
    """The gateway definitively refused the request (a 4xx answer): 502 `gateway_refused`."""

    status = 502
    code = "gateway_refused"

    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status  # the gateway's status, not ours


class Payment(msgspec.Struct, kw_only=True):
    """The part of the gateway's payment object we read."""

    id: str
    status: str
    amount: int
    currency: str
    invoice_id: str | None = None
    refunded: int = 0
    metadata: dict[str, Any] | None = None


class Invoice(msgspec.Struct, kw_only=True):
    """The part of the gateway's invoice object we read."""

    id: str
    status: str
    amount: int
    currency: str
    url: str = ""
    payment_id: str | None = None
    payments: list[Payment] = msgspec.field(default_factory=list)
    metadata: dict[str, Any] | None = None


class InvoiceList(msgspec.Struct, kw_only=True):
    invoices: list[Invoice] = msgspec.field(default_factory=list)


class MoyasarClient:
    """One connection pool to the gateway. `close()` when done."""

    def __init__(
        self,
        base_url: str,
        secret_key: str,
        *,
        timeout_s: float = 10.0,
        get_attempts: int = GET_ATTEMPTS,
        backoff_s: float = BACKOFF_S,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            auth=httpx.BasicAuth(secret_key, ""),
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            headers={"accept": "application/json"},
            follow_redirects=False,
        )
        self._get_attempts = max(1, get_attempts)
        self._backoff_s = backoff_s

    async def close(self) -> None:
        await self._http.aclose()

    # --- the calls -------------------------------------------------------------------------

    async def create_invoice(
        self,
        *,
        amount_halala: int,
        currency: str,
        description: str,
        metadata: dict[str, str],
        success_url: str | None = None,
        back_url: str | None = None,
        expired_at: str | None = None,
    ) -> Invoice:
        """POST /invoices, once. Raises GatewayRefused (4xx) or GatewayError (unknown)."""
        body: dict[str, Any] = {
            "amount": amount_halala,
            "currency": currency,
            "description": description,
            "metadata": metadata,
        }
        for name, value in (
            ("success_url", success_url),
            ("back_url", back_url),
            ("expired_at", expired_at),
        ):
            if value:
                body[name] = value
        return await self._send("POST", "invoices", Invoice, json=body)

    async def invoice(self, invoice_id: str) -> Invoice:
        """GET /invoices/{id}."""
        return await self._get(f"invoices/{_segment(invoice_id)}", Invoice)

    async def invoices_with(self, key: str, value: str) -> list[Invoice]:
        """GET /invoices filtered by one metadata key (the first page is enough: our
        metadata values are unique)."""
        found = await self._get("invoices", InvoiceList, params={f"metadata[{key}]": value})
        return found.invoices

    async def payment(self, payment_id: str) -> Payment:
        """GET /payments/{id}."""
        return await self._get(f"payments/{_segment(payment_id)}", Payment)

    async def refund(self, payment_id: str, amount_halala: int) -> Payment:
        """POST /payments/{id}/refund, once, for `amount_halala`."""
        return await self._send(
            "POST",
            f"payments/{_segment(payment_id)}/refund",
            Payment,
            json={"amount": amount_halala},
        )

    # --- transport -------------------------------------------------------------------------

    async def _get(self, path: str, t: type[T], params: dict[str, str] | None = None) -> T:
        for attempt in range(1, self._get_attempts + 1):
            try:
                return await self._send("GET", path, t, params=params)
            except GatewayRefused:
                raise
            except GatewayError:
                if attempt == self._get_attempts:
                    raise
                await asyncio.sleep(self._backoff_s * attempt)
        raise AssertionError("unreachable")

    async def _send(self, method: str, path: str, t: type[T], **kw: Any) -> T:
        try:
            r = await self._http.request(method, path, **kw)
        except httpx.HTTPError as e:
            # The exception's text can name the URL but never the credentials.
            raise GatewayError(f"gateway {method} /{path}: {type(e).__name__}") from e
        if r.status_code >= 500:
            raise GatewayError(f"gateway {method} /{path}: HTTP {r.status_code}")
        if r.status_code >= 400:
            raise GatewayRefused(
                f"gateway {method} /{path} refused: HTTP {r.status_code}", r.status_code
            )
        try:
            return msgspec.json.decode(r.content, type=t)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            # A 2xx we cannot read: we do not know what the gateway did.
            raise GatewayError(f"gateway {method} /{path}: unreadable answer ({e})") from e


def _segment(value: str) -> str:
    """An id as one URL path segment (an id from a notification is untrusted text)."""
    return urllib.parse.quote(value, safe="")
