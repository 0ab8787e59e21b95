"""An ended job folded back from its renter's stream, for a decision about it.

The service keeps only live jobs and the most recent ended ones in memory (docs/design.md,
"Bounded memory"). A decision about an older ended job (an admin requeue of a failed job, a
repeated or late result, a cancel of a cancelled job) is made on the job as this module folds
it again: the same `fold.apply` over the renter's stream (registration, credits and every event
of their jobs), in a scratch state where the providers the stream names stand in as stubs.
One fold, so the job is exactly the one a fold of the whole log holds.

A deposit reference or a decided withdrawal that left a bounded state (`history_cap`) comes
back from the read models instead, whose row is the whole entity: `row_to_recall` names it.
So does a settled top-up (`topups_to_recall` names the lookups: by its id, the payment or
invoice it holds, the renter's idempotency key). A top-up event folded at start-up or catch-up
about a top-up no longer in memory finds it folded back from its renter's stream instead
(`topup_from_stream`): the read model may already hold its later changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple

from dcp_events import catalogue as ev
from dcp_events.event import Event
from dcp_projections import commands as cmd
from dcp_projections import topups
from dcp_projections.fold import apply
from dcp_projections.state import Job, Provider, Renter, State, TopUp


def job_from_stream(events: Iterable[tuple[int, Event]], job_id: str) -> Job | None:
    """Fold one renter's stream, `(seq, event)` in order, and return job `job_id` as it stands
    after the last of them (None if the stream never names it)."""
    scratch = State(cross_stream_checks=False)  # its providers are stubs, its prices defaults
    for seq, event in events:
        provider_id = getattr(event, "provider_id", None)
        if provider_id is not None and provider_id not in scratch.providers:
            scratch.providers[provider_id] = _stub(provider_id)
        apply(scratch, seq, event)
    return scratch.jobs.get(job_id)


def _stub(provider_id: str) -> Provider:
    # The job folds touch only a provider's leases; its own events live in its stream.
    return Provider(
        provider_id=provider_id,
        name="",
        email="",
        gpu_model="",
        gpu_count=0,
        vram_gb=0,
        approved=True,
        created_at_us=0,
        last_seq=0,
    )


def jobs_to_recall(state: State, c: cmd.Command, now_us: int) -> list[str]:
    """The jobs `c` names that are not in memory: the caller folds them back (with
    `job_from_stream`) and `state.recall`s them before deciding, so the decision answers as
    it would had they never left."""
    match c:
        case cmd.SubmitJob(idempotency_key=str(key)):
            job_id = state.submitted_with_key(c.renter_id, key, now_us)
            return [job_id] if job_id is not None and job_id not in state.jobs else []
        case cmd.CancelJob() | cmd.StartJob() | cmd.ReportResult() | cmd.RequeueJob():
            return [] if c.job_id in state.jobs else [c.job_id]
    return []


def renter_named(c: cmd.Command) -> str | None:
    """The renter whose stream holds the job `c` names, when the command says so."""
    match c:
        case cmd.SubmitJob():
            return c.renter_id
        case cmd.CancelJob(renter_id=str(renter_id)):
            return renter_id
    return None


RowKind = Literal["deposit", "withdrawal"]


def row_to_recall(state: State, c: cmd.Command) -> tuple[RowKind, str] | None:
    """The deposit reference or withdrawal `c` names that a bounded state no longer holds, if
    any: the caller reads it from the read models and `state.recall_deposit`s (or
    `recall_withdrawal`s) it before deciding, so a reference stays idempotent forever and a
    decided withdrawal answers as it did."""
    if state.history_cap is None:
        return None
    match c:
        case cmd.CreditDeposit(reference=str(reference)):
            return None if reference in state.deposit_refs else ("deposit", reference)
        case (
            cmd.RequestWithdrawal(withdrawal_id=str(wid))
            | cmd.DecideWithdrawal(withdrawal_id=str(wid))
        ):
            return None if wid in state.withdrawals else ("withdrawal", wid)
    return None


class TopUpLookup(NamedTuple):
    """How to find a top-up in the `topups` read model: by its id, by the gateway payment it
    holds (credited: paid, refunding or refunded), by its invoice, or by the renter's
    idempotency key (`renter_id` then names the renter)."""

    by: Literal["topup_id", "payment_id", "invoice_id", "idempotency_key"]
    value: str
    renter_id: str = ""


def topups_to_recall(state: State, c: cmd.Command) -> list[TopUpLookup]:
    """The top-ups `c` names that a bounded state may have let go of: the caller reads each
    from the read models and `state.recall_topup`s it before deciding, so a repeated gateway
    callback, a late payment, a refund or a reused idempotency key answers as it did."""
    if state.topups_cap is None or not isinstance(c, cmd.TopUpCommand):
        return []
    out = []
    if c.topup_id not in state.topups:
        out.append(TopUpLookup("topup_id", c.topup_id))
    match c:
        case cmd.RequestTopUp(idempotency_key=str(key)):
            if (c.renter_id, key) not in state.topup_keys:
                out.append(TopUpLookup("idempotency_key", key, c.renter_id))
        case cmd.RecordInvoice():
            if c.invoice_id not in state.topup_invoices:
                out.append(TopUpLookup("invoice_id", c.invoice_id))
        case cmd.ObserveTopUp():
            paid = c.payment_status in topups.PAID_STATUSES
            if c.payment_id and paid and c.payment_id not in state.topup_payments:
                out.append(TopUpLookup("payment_id", c.payment_id))
    return out


_TOPUP_EVENTS = (
    ev.TopUpRequested,
    ev.TopUpInvoiceCreated,
    ev.TopUpPaid,
    ev.TopUpFailed,
    ev.TopUpDisputed,
    ev.TopUpRefundRequested,
    ev.TopUpRefunded,
    ev.TopUpRefundReversed,
)
# The tags of the top-up events that change a top-up already requested.
TOPUP_CHANGE_TAGS: frozenset[str] = frozenset(
    str(t.__struct_config__.tag) for t in _TOPUP_EVENTS[1:]
)
TOPUP_REQUESTED_TAG = str(ev.TopUpRequested.__struct_config__.tag)
TOPUP_TAGS: frozenset[str] = TOPUP_CHANGE_TAGS | {TOPUP_REQUESTED_TAG}


def topup_from_stream(
    events: Iterable[tuple[int, Event]], renter_id: str, topup_id: str
) -> TopUp | None:
    """Fold top-up `topup_id`'s events out of its renter's stream, `(seq, event)` in order,
    and return the top-up as it stands after the last of them (None if none names it)."""
    scratch = State(cross_stream_checks=False)  # its renter is a stub, its accounts its own
    scratch.renters[renter_id] = Renter(
        renter_id=renter_id, name="", email="", created_at_us=0, last_seq=0
    )
    for seq, event in events:
        if isinstance(event, _TOPUP_EVENTS) and event.topup_id == topup_id:
            scratch.seq = seq
            topups.fold(scratch, seq, event)
    return scratch.topups.get(topup_id)
