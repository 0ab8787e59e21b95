"""Gateway top-up commands of the application service (docs/payments.md).

`TopUps` puts the top-up commands through the ledger service's batch loop and answers with
the top-up's view (`dcp_app.views.TopUpView`, the Struct the reads answer with too) from the
state right after its events were folded. It does no I/O of its own: the gateway is called by
`dcp_http.payments`, which tells this module what the gateway said.
"""

from __future__ import annotations

from dcp_app.service import LedgerService
from dcp_app.views import TopUpView, topup_view
from dcp_events.event import Event
from dcp_projections import commands as cmd
from dcp_projections.errors import NotFound
from dcp_projections.history import TopUpLookup
from dcp_projections.state import State


def _view(state: State, topup_id: str) -> TopUpView:
    return topup_view(state.topups[topup_id])


class TopUps:
    """The top-up commands of one ledger service."""

    def __init__(self, ledger: LedgerService) -> None:
        self.ledger = ledger

    async def request(
        self, renter_id: str, amount_halala: int, idempotency_key: str | None = None
    ) -> tuple[TopUpView, bool]:
        """A pending top-up: (its view, True when new). A repeated idempotency key with the
        same amount returns the first top-up (False). Raises ValidationError (amount out of
        bounds), IdempotencyKeyReused (422: the key was used for another amount), NotFound."""
        c = cmd.RequestTopUp(
            topup_id=self.ledger.new_id("tu"),
            renter_id=renter_id,
            amount_halala=amount_halala,
            idempotency_key=idempotency_key,
        )

        def answer(s: State, new: list[Event]) -> tuple[TopUpView, bool]:
            if new:
                return _view(s, c.topup_id), True
            assert idempotency_key is not None
            return _view(s, s.topup_keys[(renter_id, idempotency_key)]), False

        result: tuple[TopUpView, bool] = await self.ledger.execute(c, answer, f"renter:{renter_id}")
        return result

    async def record_invoice(self, topup_id: str, invoice_id: str, url: str) -> TopUpView:
        """Record the gateway's invoice; raises Conflict if the top-up has another."""
        c = cmd.RecordInvoice(topup_id=topup_id, invoice_id=invoice_id, checkout_url=url)
        return await self._run(c, "system")

    async def observe(self, observation: cmd.ObserveTopUp) -> tuple[TopUpView, bool]:
        """Decide on what the gateway said: (the view, True when it changed the top-up)."""

        def answer(s: State, new: list[Event]) -> tuple[TopUpView, bool]:
            return _view(s, observation.topup_id), bool(new)

        result: tuple[TopUpView, bool] = await self.ledger.execute(
            observation, answer, f"gateway:{observation.source}"
        )
        return result

    async def refund(self, topup_id: str) -> TopUpView:
        """Admin: ledger the refund of a paid top-up. Raises InvalidTransition (not paid),
        InsufficientFunds (the available balance no longer covers it), NotFound."""
        return await self._run(cmd.RefundTopUp(topup_id=topup_id), "admin")

    async def settle_refund(self, topup_id: str, succeeded: bool, reason: str = "") -> TopUpView:
        """The gateway's answer to the refund: confirmed, or reversed (credited back)."""
        c = cmd.SettleRefund(topup_id=topup_id, succeeded=succeeded, reason=reason)
        return await self._run(c, "system")

    async def _run(self, c: cmd.TopUpCommand, actor: str) -> TopUpView:
        result: TopUpView = await self.ledger.execute(c, lambda s, e: _view(s, c.topup_id), actor)
        return result

    def get(self, topup_id: str) -> TopUpView:
        """The top-up from memory (may be one batch ahead of disk). Raises NotFound."""
        if topup_id not in self.ledger.state.topups:
            raise NotFound(f"top-up {topup_id} not found")
        return _view(self.ledger.state, topup_id)

    async def by_invoice(self, invoice_id: str) -> str | None:
        """The top-up whose gateway invoice this is, or None (not one of ours): from memory,
        else (a settled top-up a bounded state let go of) from the read models."""
        found = self.ledger.state.topup_invoices.get(invoice_id)
        history = self.ledger.history
        if found is None and history is not None:
            t = await history.topup_entity(TopUpLookup("invoice_id", invoice_id))
            found = None if t is None else t.topup_id
        return found
