"""Money in through the payment gateway: the flows between our ledger and the gateway's API
(docs/payments.md).

- Create: the top-up is recorded first (`renter.topup_requested`), then the invoice is created
  with our top-up id in its metadata, then recorded. The invoice-creating POST is never sent
  twice for one top-up: a repeat of the request (same Idempotency-Key) whose invoice is
  unknown looks the invoice up by that metadata instead, and the reconcile sweep ends a
  top-up whose invoice the gateway does not know.
- Notify: a webhook is believed only for its secret token, and only for the payment id it
  names: the payment is fetched from the gateway's API and that answer is what the ledger
  decides on (paid, SAR, exactly the amount -> credited once per payment id).
- Reconcile: a bounded sweep asks the gateway about top-ups pending (or refunding) longer than
  `topup_reconcile_after_s`, so a paid top-up whose webhook never came is credited anyway.
- Refund: ledgered first, then asked of the gateway; a definitive refusal reverses it.

Every decision goes through the ledger service, whose single batch loop (one process) and
store head check (several processes) make a credit happen at most once however webhooks,
sweeps and nodes interleave.
"""

from __future__ import annotations

import datetime as dt
import hmac
from typing import Literal

import structlog

from dcp_app.queries import Queries
from dcp_app.service import LedgerService
from dcp_app.topups import TopUps
from dcp_app.views import TopUpView
from dcp_events.catalogue import TopUpStatus
from dcp_events.errors import DcpError
from dcp_http.config import ServerConfig
from dcp_http.errors import ApiError, Unauthorized
from dcp_http.logs import redactor
from dcp_http.moyasar import GatewayError, GatewayRefused, Invoice, MoyasarClient, Payment
from dcp_projections import commands as cmd
from dcp_projections.settlement import US_PER_S
from dcp_projections.topups import CURRENCY, PAID_STATUSES

log = structlog.get_logger("dcp_http.payments")

METADATA_KEY = "dcp_topup_id"
MAX_PAYMENTS_PER_INVOICE = 5  # payments of one invoice looked at per reconcile


class PaymentsDisabled(ApiError):
    """No gateway secret key (or, for the webhook, no token) is configured: 503."""

    status = 503
    code = "payments_disabled"


class Payments:
    """The gateway flows of one server process."""

    def __init__(
        self, config: ServerConfig, topups: TopUps, queries: Queries, client: MoyasarClient
    ) -> None:
        self.config = config
        self.topups = topups
        self.queries = queries
        self.client = client
        self._cursor: tuple[int, str] = (0, "")

    async def close(self) -> None:
        await self.client.close()

    # --- create ----------------------------------------------------------------------------

    async def create(
        self, renter_id: str, amount_halala: int, idempotency_key: str | None
    ) -> TopUpView:
        """A top-up with its hosted invoice. Raises GatewayRefused (the gateway refused the
        invoice: the top-up is failed), GatewayError (outcome unknown: the top-up stays
        pending, and a repeat with the same Idempotency-Key or the sweep finds its invoice),
        and the domain's errors."""
        view, new = await self.topups.request(renter_id, amount_halala, idempotency_key)
        if view.invoice_id is not None or view.status != "pending":
            return view
        if not new:
            found = await self._recover_invoice(view)
            if found is None:
                raise GatewayError(
                    f"the invoice of top-up {view.topup_id} is not confirmed yet; retry later"
                )
            return found
        try:
            invoice = await self.client.create_invoice(
                amount_halala=amount_halala,
                currency=CURRENCY,
                description=f"DCP balance top-up {view.topup_id}",
                metadata={METADATA_KEY: view.topup_id},
                success_url=self._return_url(view.topup_id),
                back_url=self._return_url(view.topup_id),
                expired_at=self._expiry(view.created_at_us),
            )
        except GatewayRefused as e:
            await self.topups.observe(
                cmd.ObserveTopUp(
                    topup_id=view.topup_id,
                    source="request",
                    invoice_status="failed",
                    reason=f"the gateway refused the invoice (HTTP {e.http_status})",
                )
            )
            raise
        except GatewayError:
            log.warning("topup_invoice_unknown", topup_id=view.topup_id)
            raise
        return await self._record(view.topup_id, invoice)

    async def _record(self, topup_id: str, invoice: Invoice) -> TopUpView:
        return await self.topups.record_invoice(topup_id, invoice.id, invoice.url)

    async def _recover_invoice(self, view: TopUpView) -> TopUpView | None:
        """The invoice the gateway holds for this top-up (by our metadata), recorded; None if
        it holds none. Raises GatewayError."""
        for invoice in await self.client.invoices_with(METADATA_KEY, view.topup_id):
            meta = invoice.metadata or {}
            if meta.get(METADATA_KEY) == view.topup_id:
                return await self._record(view.topup_id, invoice)
        return None

    def _return_url(self, topup_id: str) -> str:
        base = self.config.public_url or f"http://{self.config.host}:{self.config.port}"
        return f"{base.rstrip('/')}/wallet?topup={topup_id}"

    def _expiry(self, created_at_us: int) -> str:
        at = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
            microseconds=created_at_us, seconds=self.config.topup_invoice_ttl_s
        )
        return at.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    # --- notify ----------------------------------------------------------------------------

    def check_token(self, token: str) -> None:
        """Raises Unauthorized unless `token` is the configured webhook token (compared in
        constant time), PaymentsDisabled when none is configured."""
        expected = self.config.moyasar_webhook_token
        if not expected:
            raise PaymentsDisabled("no webhook token is configured")
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise Unauthorized("invalid webhook token")

    async def notified(
        self, payment_id: str
    ) -> tuple[str | None, TopUpStatus | Literal["ignored"]]:
        """Decide on the payment the gateway says `payment_id` is: (top-up id, its status),
        (None, "ignored") for a payment that is not of one of our invoices. Raises
        GatewayError when the gateway cannot be asked (the gateway retries the webhook, and
        the sweep asks anyway)."""
        try:
            payment = await self.client.payment(payment_id)
        except GatewayRefused as e:
            if e.http_status != 404:
                raise
            log.info("webhook_ignored", payment_id=payment_id, reason="unknown to the gateway")
            return None, "ignored"
        topup_id = await self.topups.by_invoice(payment.invoice_id) if payment.invoice_id else None
        if topup_id is None:
            log.info("webhook_ignored", payment_id=payment_id)
            return None, "ignored"
        view, changed = await self.topups.observe(_observation(topup_id, payment, "webhook"))
        log.info("webhook", topup_id=topup_id, status=view.status, changed=changed)
        return topup_id, view.status

    # --- reconcile -------------------------------------------------------------------------

    async def reconcile(self, view: TopUpView, now_us: int) -> bool:
        """Ask the gateway about one pending or refunding top-up and decide on the answer.
        True when the top-up changed. Raises GatewayError."""
        topup_id = view.topup_id
        if view.status == "refunding":
            return await self._reconcile_refund(view, now_us)
        if view.invoice_id is None:
            # Its invoice POST may still be in flight (whatever the reconcile delay is set to):
            # wait until that request has surely timed out.
            if self._in_flight(view.created_at_us, now_us):
                return False
            found = await self._recover_invoice(view)
            if found is None:
                # Older than the reconcile delay, so the POST that would have made it is long
                # over: the gateway has no invoice and nobody ever got a checkout URL.
                _, changed = await self.topups.observe(
                    cmd.ObserveTopUp(
                        topup_id=topup_id,
                        source="sweep",
                        invoice_status="failed",
                        reason="the gateway has no invoice for this top-up",
                    )
                )
                return changed
            view = found
        assert view.invoice_id is not None  # it had one, or `_recover_invoice` recorded one
        invoice = await self.client.invoice(view.invoice_id)
        changed = False
        for payment_id in _paid_payment_ids(invoice):
            payment = await self.client.payment(payment_id)
            _, did = await self.topups.observe(_observation(topup_id, payment, "sweep"))
            changed = changed or did
        if not changed:
            _, changed = await self.topups.observe(
                cmd.ObserveTopUp(
                    topup_id=topup_id,
                    source="sweep",
                    invoice_id=invoice.id,
                    invoice_status=invoice.status,
                )
            )
        return changed

    async def sweep(self, now_us: int) -> int:
        """One bounded round of the reconcile sweep: at most `topup_sweep_limit` top-ups,
        continuing after the last one the previous round asked about (so an old pending
        top-up cannot starve the others). Returns how many changed; a gateway fault skips that
        top-up until the next round."""
        cutoff = now_us - self.config.topup_reconcile_after_s * US_PER_S
        limit = self.config.topup_sweep_limit
        rows = await self.queries.topups_to_reconcile(cutoff, self._cursor, limit)
        # A short page is the end: the next round starts from the oldest again.
        last = rows[-1] if len(rows) == limit else None
        self._cursor = (last.updated_at_us, last.topup_id) if last else (0, "")
        changed = 0
        for row in rows:
            try:
                changed += await self.reconcile(row, now_us)
            except GatewayError as e:
                log.warning("topup_reconcile_deferred", topup_id=row.topup_id, error=str(e))
            except DcpError as e:  # a domain refusal: logged, never stops the round
                log.error("topup_reconcile_refused", topup_id=row.topup_id, error=str(e))
        return changed

    # --- refund ----------------------------------------------------------------------------

    async def refund(self, topup_id: str) -> TopUpView:
        """Admin: refund a paid top-up. Ledgered first (402 if the available balance no
        longer covers it, 409 unless paid), then asked of the gateway: refunded, reversed
        (refused) or still refunding (outcome unknown: the sweep settles it)."""
        view = await self.topups.refund(topup_id)
        return await self._send_refund(view)

    async def _send_refund(self, view: TopUpView) -> TopUpView:
        topup_id = view.topup_id
        assert view.payment_id is not None  # refunding: the credited payment is recorded
        try:
            payment = await self.client.refund(view.payment_id, view.amount_halala)
        except GatewayRefused as e:
            return await self.topups.settle_refund(
                topup_id, False, f"the gateway refused the refund (HTTP {e.http_status})"
            )
        except GatewayError:
            log.warning("topup_refund_unknown", topup_id=topup_id)
            return view
        if _refunded(payment, view.amount_halala):
            return await self.topups.settle_refund(topup_id, True)
        return view

    async def _reconcile_refund(self, view: TopUpView, now_us: int) -> bool:
        assert view.payment_id is not None  # refunding: the credited payment is recorded
        payment = await self.client.payment(view.payment_id)
        if _refunded(payment, view.amount_halala):
            await self.topups.settle_refund(view.topup_id, True)
            return True
        if (
            payment.status in PAID_STATUSES
            and payment.refunded == 0
            and not self._in_flight(view.updated_at_us, now_us)
        ):
            # The gateway shows no refund, and our refund request is older than the reconcile
            # delay and any gateway timeout, so none of ours is still in flight: ask again
            # (refused -> reversed).
            after = await self._send_refund(view)
            return after.status != "refunding"
        return False

    def _in_flight(self, since_us: int, now_us: int) -> bool:
        """Whether a gateway request we sent at `since_us` may still be under way."""
        return now_us - since_us < 2 * self.config.moyasar_timeout_s * US_PER_S


def open_payments(config: ServerConfig, ledger: LedgerService, queries: Queries) -> Payments | None:
    """The gateway flows for `config`, or None without a secret key. Registers the secret
    key and the webhook token with the log redactor first, so neither can reach a log line."""
    if not config.moyasar_secret_key:
        return None
    redactor.add_secret(config.moyasar_secret_key)
    redactor.add_secret(config.moyasar_webhook_token)
    client = MoyasarClient(
        config.moyasar_api_url, config.moyasar_secret_key, timeout_s=config.moyasar_timeout_s
    )
    return Payments(config, TopUps(ledger), queries, client)


def _observation(
    topup_id: str, payment: Payment, source: Literal["webhook", "sweep"]
) -> cmd.ObserveTopUp:
    return cmd.ObserveTopUp(
        topup_id=topup_id,
        source=source,
        invoice_id=payment.invoice_id or "",
        payment_id=payment.id,
        payment_status=payment.status,
        amount_halala=payment.amount,
        currency=payment.currency,
    )


def _paid_payment_ids(invoice: Invoice) -> list[str]:
    ids = [p.id for p in invoice.payments if p.status in PAID_STATUSES]
    if invoice.payment_id:
        ids.append(invoice.payment_id)
    return list(dict.fromkeys(ids))[:MAX_PAYMENTS_PER_INVOICE]


def _refunded(payment: Payment, amount_halala: int) -> bool:
    return payment.status == "refunded" or payment.refunded >= amount_halala
