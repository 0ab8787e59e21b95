"""Gateway top-ups: the decisions, the folds and the invariants of money paid in through the
payment gateway (docs/payments.md).

A top-up is `pending` from its request until the gateway's own API says one of its payments is
`paid` (credited once: `renter.topup_paid`, world:deposits -> renter available), that the
payment's amount or currency is not the top-up's (`disputed`: nothing credited), or that its
invoice failed or expired (`failed` / `expired`). A paid top-up may be refunded by an admin:
the refund is ledgered first (`refunding`: available -> world:deposits) and either confirmed
(`refunded`) or reversed when the gateway definitively refuses (back to `paid`).

Exactly once: `state.topup_payments` maps every gateway payment id credited to its top-up
(of the top-ups in memory); the decision credits nothing for a payment id already in it, and
the fold raises InvariantError if an event tries. Across processes the store's head check makes
a second writer decide again against the log, where it finds the credit.

Bounded memory (docs/design.md): a bounded state (`topups_cap`) keeps every open top-up
(pending, refunding) and only the most recently settled ones. Before a decision, the top-ups
the command names that memory lacks (by top-up id, the payment or invoice it names, the
renter's idempotency key: `dcp_projections.history.topups_to_recall`) are read back from the
`topups` read model and `state.recall_topup`ped, so every decision answers as if all stayed.
`check` compares world:deposits with a running total (`state.topups_credited_halala`).
"""

from __future__ import annotations

from typing import Literal

from dcp_events import catalogue as ev
from dcp_events.event import Event
from dcp_projections import commands as cmd
from dcp_projections import ledger, money
from dcp_projections._checks import require_renter, text
from dcp_projections.errors import (
    Conflict,
    IdempotencyKeyReused,
    InsufficientFunds,
    InvalidTransition,
    InvariantError,
    NotFound,
    ValidationError,
)
from dcp_projections.settings import Settings
from dcp_projections.state import TOPUP_HOLDS_PAYMENT, TOPUP_OPEN, State, TopUp

CURRENCY = "SAR"
# Gateway payment statuses that mean the money is ours (a captured authorization is paid).
PAID_STATUSES = frozenset({"paid", "captured"})
# Gateway invoice statuses that end a pending top-up without money.
FAILED_INVOICE_STATUSES = frozenset({"failed", "canceled", "voided"})
EXPIRED_INVOICE_STATUSES = frozenset({"expired"})
# A top-up in one of these may still be credited when the gateway says a payment is paid: a
# failed or expired invoice that is paid late is money that did arrive.
CREDITABLE = frozenset({"pending", "failed", "expired", "disputed"})
# Net credit of a top-up in each status (paid: its amount; everything else: nothing).
CREDITED = frozenset({"paid"})
HOLDS_PAYMENT = TOPUP_HOLDS_PAYMENT
MAX_GATEWAY_ID = 200
MAX_URL = 2000


# --- decisions -----------------------------------------------------------------------------


def _topup(state: State, topup_id: str) -> TopUp:
    t = state.topups.get(topup_id)
    if t is None:
        raise NotFound(f"top-up {topup_id} not found")
    return t


def decide_request(
    state: State, c: cmd.RequestTopUp, now_us: int, settings: Settings
) -> list[Event]:
    """A new pending top-up. The same idempotency key with the same amount returns [] (the
    first top-up stands); with another amount, IdempotencyKeyReused. ValidationError outside
    the bounds."""
    require_renter(state, c.renter_id)
    lo, hi = settings.topup_min_halala, settings.topup_max_halala
    if isinstance(c.amount_halala, bool) or not lo <= c.amount_halala <= hi:
        raise ValidationError("amount_halala", f"must be between {lo} and {hi}")
    if c.idempotency_key is not None:
        text("Idempotency-Key", c.idempotency_key, max_len=200)
        seen = state.topup_keys.get((c.renter_id, c.idempotency_key))
        if seen is not None:
            if state.topups[seen].amount_halala == c.amount_halala:
                return []
            raise IdempotencyKeyReused(
                "Idempotency-Key already used for a top-up of another amount"
            )
    if c.topup_id in state.topups:
        raise Conflict(f"top-up id {c.topup_id} already in use")
    return [
        ev.TopUpRequested(
            topup_id=c.topup_id,
            renter_id=c.renter_id,
            amount_halala=c.amount_halala,
            idempotency_key=c.idempotency_key,
            at_us=now_us,
        )
    ]


def decide_invoice(state: State, c: cmd.RecordInvoice, now_us: int) -> list[Event]:
    """Record the gateway's invoice of a top-up; [] when already recorded; Conflict when the
    top-up has another invoice or the invoice belongs to another top-up."""
    t = _topup(state, c.topup_id)
    text("invoice_id", c.invoice_id, max_len=MAX_GATEWAY_ID)
    text("checkout_url", c.checkout_url, max_len=MAX_URL)
    if t.invoice_id == c.invoice_id:
        return []
    if t.invoice_id is not None:
        raise Conflict(f"top-up {t.topup_id} already has invoice {t.invoice_id}")
    if c.invoice_id in state.topup_invoices:
        raise Conflict(f"invoice {c.invoice_id} belongs to another top-up")
    return [
        ev.TopUpInvoiceCreated(
            topup_id=t.topup_id,
            renter_id=t.renter_id,
            invoice_id=c.invoice_id,
            checkout_url=c.checkout_url,
            at_us=now_us,
        )
    ]


def decide_observation(state: State, c: cmd.ObserveTopUp, now_us: int) -> list[Event]:
    """What the gateway said, turned into at most one event: paid (credit once), disputed
    (paid, but not exactly our amount in SAR), failed or expired (the invoice ended unpaid),
    or nothing (still pending, or already decided). Conflict when the gateway's invoice is not
    the top-up's."""
    t = _topup(state, c.topup_id)
    if c.invoice_id and t.invoice_id is not None and c.invoice_id != t.invoice_id:
        raise Conflict(f"invoice {c.invoice_id} is not the invoice of top-up {t.topup_id}")
    if c.payment_id and c.payment_status in PAID_STATUSES:
        text("payment_id", c.payment_id, max_len=MAX_GATEWAY_ID)
        if c.payment_id in state.topup_payments or t.status not in CREDITABLE:
            return []  # credited already (this payment, or the top-up by another)
        if c.amount_halala != t.amount_halala or c.currency.upper() != CURRENCY:
            if t.status == "disputed" and t.payment_id == c.payment_id:
                return []
            return [
                ev.TopUpDisputed(
                    topup_id=t.topup_id,
                    renter_id=t.renter_id,
                    payment_id=c.payment_id,
                    gateway_amount_halala=c.amount_halala,
                    gateway_currency=c.currency[:16],
                    reason=(
                        f"gateway says {c.amount_halala} {c.currency[:16]},"
                        f" top-up is {t.amount_halala} {CURRENCY}"
                    ),
                    at_us=now_us,
                )
            ]
        return [
            ev.TopUpPaid(
                topup_id=t.topup_id,
                renter_id=t.renter_id,
                payment_id=c.payment_id,
                invoice_id=t.invoice_id or c.invoice_id,
                amount_halala=t.amount_halala,
                source=c.source,
                at_us=now_us,
                postings=money.credit(t.renter_id, t.amount_halala),
            )
        ]
    if t.status != "pending":
        return []
    if c.invoice_status in FAILED_INVOICE_STATUSES or c.invoice_status in EXPIRED_INVOICE_STATUSES:
        expired = c.invoice_status in EXPIRED_INVOICE_STATUSES
        status: Literal["failed", "expired"] = "expired" if expired else "failed"
        reason = c.reason or f"invoice {c.invoice_status}"
        return [
            ev.TopUpFailed(
                topup_id=t.topup_id,
                renter_id=t.renter_id,
                status=status,
                reason=reason[:256],
                at_us=now_us,
            )
        ]
    return []


def decide_refund(state: State, c: cmd.RefundTopUp, now_us: int) -> list[Event]:
    """Ledger the refund of a paid top-up: InvalidTransition unless paid, InsufficientFunds
    when the renter's available balance no longer covers it."""
    t = _topup(state, c.topup_id)
    if t.status != "paid" or t.payment_id is None:
        raise InvalidTransition(f"top-up {t.topup_id} is {t.status}, only a paid one refunds")
    available = state.available(t.renter_id)
    if available < t.amount_halala:
        raise InsufficientFunds(t.amount_halala, available)
    return [
        ev.TopUpRefundRequested(
            topup_id=t.topup_id,
            renter_id=t.renter_id,
            payment_id=t.payment_id,
            amount_halala=t.amount_halala,
            at_us=now_us,
            postings=money.refund(t.renter_id, t.amount_halala),
        )
    ]


def decide_settle_refund(state: State, c: cmd.SettleRefund, now_us: int) -> list[Event]:
    """The gateway's answer to a refund: confirmed, or reversed (the credit back). [] when the
    same answer was already recorded; InvalidTransition when no refund is open."""
    t = _topup(state, c.topup_id)
    if t.status != "refunding":
        if (c.succeeded and t.status == "refunded") or (not c.succeeded and t.status == "paid"):
            return []
        raise InvalidTransition(f"top-up {t.topup_id} is {t.status}, no refund is open")
    if c.succeeded:
        return [ev.TopUpRefunded(topup_id=t.topup_id, renter_id=t.renter_id, at_us=now_us)]
    return [
        ev.TopUpRefundReversed(
            topup_id=t.topup_id,
            renter_id=t.renter_id,
            amount_halala=t.amount_halala,
            reason=c.reason[:256],
            at_us=now_us,
            postings=money.credit(t.renter_id, t.amount_halala),
        )
    ]


def decide(state: State, c: cmd.TopUpCommand, now_us: int, settings: Settings) -> list[Event]:
    """Dispatch a top-up command to its decision."""
    match c:
        case cmd.RequestTopUp():
            return decide_request(state, c, now_us, settings)
        case cmd.RecordInvoice():
            return decide_invoice(state, c, now_us)
        case cmd.ObserveTopUp():
            return decide_observation(state, c, now_us)
        case cmd.RefundTopUp():
            return decide_refund(state, c, now_us)
        case cmd.SettleRefund():
            return decide_settle_refund(state, c, now_us)
    raise TypeError(f"unknown top-up command {type(c).__name__}")


# --- folds (the money rules checked again) -------------------------------------------------


def fold(state: State, seq: int, e: Event) -> None:
    """Fold a top-up event (the caller, `dcp_projections.fold.apply`, has checked `seq`);
    raises InvariantError when it does not fit the state or is no event the fold knows."""
    # Exact types in a chain mypy narrows, as in fold.apply (a class pattern is slower).
    if type(e) is ev.TopUpRequested:
        _requested(state, seq, e)
    elif type(e) is ev.TopUpInvoiceCreated:
        _invoice_created(state, seq, e)
    elif type(e) is ev.TopUpPaid:
        _paid(state, seq, e)
    elif type(e) is ev.TopUpFailed:
        _failed(state, seq, e)
    elif type(e) is ev.TopUpDisputed:
        _disputed(state, seq, e)
    elif type(e) is ev.TopUpRefundRequested:
        _refund_requested(state, seq, e)
    elif type(e) is ev.TopUpRefunded:
        _refunded(state, seq, e)
    elif type(e) is ev.TopUpRefundReversed:
        _refund_reversed(state, seq, e)
    else:
        raise InvariantError(f"no fold for {type(e).__name__}")


def _touch(state: State, seq: int, t: TopUp, at_us: int) -> TopUp:
    t.last_seq = seq
    t.updated_at_us = at_us
    state.touched.add(("topup", t.topup_id))
    return t


def _existing(state: State, seq: int, topup_id: str, renter_id: str, at_us: int) -> TopUp:
    t = state.topups.get(topup_id)
    if t is None or t.renter_id != renter_id:
        raise InvariantError(f"seq {seq}: unknown top-up {topup_id} of renter {renter_id}")
    return _touch(state, seq, t, at_us)


def _requested(state: State, seq: int, e: ev.TopUpRequested) -> None:
    if e.renter_id not in state.renters:
        raise InvariantError(f"seq {seq}: unknown renter {e.renter_id}")
    if e.topup_id in state.topups or e.amount_halala <= 0:
        raise InvariantError(f"seq {seq}: top-up {e.topup_id} requested twice or for nothing")
    state.topups[e.topup_id] = TopUp(
        topup_id=e.topup_id,
        renter_id=e.renter_id,
        amount_halala=e.amount_halala,
        status="pending",
        created_at_us=e.at_us,
        updated_at_us=e.at_us,
        last_seq=seq,
        idempotency_key=e.idempotency_key,
    )
    if e.idempotency_key is not None:
        state.topup_keys[(e.renter_id, e.idempotency_key)] = e.topup_id
    state.touched.add(("topup", e.topup_id))


def _invoice_created(state: State, seq: int, e: ev.TopUpInvoiceCreated) -> None:
    t = _existing(state, seq, e.topup_id, e.renter_id, e.at_us)
    if t.invoice_id is not None or e.invoice_id in state.topup_invoices:
        raise InvariantError(f"seq {seq}: invoice {e.invoice_id} recorded twice")
    t.invoice_id = e.invoice_id
    t.checkout_url = e.checkout_url
    state.topup_invoices[e.invoice_id] = t.topup_id


def _paid(state: State, seq: int, e: ev.TopUpPaid) -> None:
    t = _existing(state, seq, e.topup_id, e.renter_id, e.at_us)
    if e.payment_id in state.topup_payments:
        raise InvariantError(f"seq {seq}: payment {e.payment_id} credited twice")
    if t.status not in CREDITABLE or e.amount_halala != t.amount_halala:
        raise InvariantError(f"seq {seq}: top-up {t.topup_id} ({t.status}) credited wrongly")
    t.status = "paid"
    t.payment_id = e.payment_id
    t.reason = ""
    state.topup_payments[e.payment_id] = t.topup_id
    state.topups_credited_halala += t.amount_halala
    state.topup_changed(t)
    money.post(state, seq, e.postings, money.credit(t.renter_id, t.amount_halala))


def _failed(state: State, seq: int, e: ev.TopUpFailed) -> None:
    t = _existing(state, seq, e.topup_id, e.renter_id, e.at_us)
    if t.status != "pending":
        raise InvariantError(f"seq {seq}: top-up {t.topup_id} is {t.status}, cannot fail")
    t.status = e.status
    t.reason = e.reason
    state.topup_changed(t)


def _disputed(state: State, seq: int, e: ev.TopUpDisputed) -> None:
    t = _existing(state, seq, e.topup_id, e.renter_id, e.at_us)
    if t.status not in CREDITABLE or e.payment_id in state.topup_payments:
        raise InvariantError(f"seq {seq}: top-up {t.topup_id} ({t.status}) cannot be disputed")
    t.status = "disputed"
    t.payment_id = e.payment_id
    t.reason = e.reason
    t.gateway_amount_halala = e.gateway_amount_halala
    t.gateway_currency = e.gateway_currency
    state.topup_changed(t)


def _refund_requested(state: State, seq: int, e: ev.TopUpRefundRequested) -> None:
    t = _existing(state, seq, e.topup_id, e.renter_id, e.at_us)
    if t.status != "paid" or e.amount_halala != t.amount_halala or e.payment_id != t.payment_id:
        raise InvariantError(f"seq {seq}: refund of top-up {t.topup_id} that is {t.status}")
    t.status = "refunding"
    state.topups_credited_halala -= t.amount_halala
    state.topup_changed(t)
    money.post(state, seq, e.postings, money.refund(t.renter_id, t.amount_halala))


def _refunded(state: State, seq: int, e: ev.TopUpRefunded) -> None:
    t = _existing(state, seq, e.topup_id, e.renter_id, e.at_us)
    if t.status != "refunding":
        raise InvariantError(f"seq {seq}: top-up {t.topup_id} is {t.status}, not refunding")
    t.status = "refunded"
    state.topup_changed(t)


def _refund_reversed(state: State, seq: int, e: ev.TopUpRefundReversed) -> None:
    t = _existing(state, seq, e.topup_id, e.renter_id, e.at_us)
    if t.status != "refunding" or e.amount_halala != t.amount_halala:
        raise InvariantError(f"seq {seq}: top-up {t.topup_id} is {t.status}, not refunding")
    t.status = "paid"
    t.reason = e.reason
    state.topups_credited_halala += t.amount_halala
    state.topup_changed(t)
    money.post(state, seq, e.postings, money.credit(t.renter_id, t.amount_halala))


def check(state: State) -> None:
    """Every top-up invariant from scratch: each credited payment id (of the top-ups in
    memory) belongs to exactly one top-up that holds it, the settled list names exactly the
    settled top-ups in memory, and world:deposits is minus what deposits and top-ups credited
    net of refunds (running totals; a state keeping everything also sums them). Raises
    InvariantError."""
    holding = {t.payment_id: t for t in state.topups.values() if t.status in HOLDS_PAYMENT}
    if len(holding) != sum(1 for t in state.topups.values() if t.status in HOLDS_PAYMENT):
        raise InvariantError("one gateway payment credits two top-ups")
    if holding.keys() != state.topup_payments.keys():
        raise InvariantError("credited payments and top-ups holding a payment differ")
    for payment_id, topup_id in state.topup_payments.items():
        if holding[payment_id].topup_id != topup_id:
            raise InvariantError(f"payment {payment_id} credited {topup_id}, held by another")
    settled = {t.topup_id for t in state.topups.values() if t.status not in TOPUP_OPEN}
    if len(settled) != len(state.topups_settled) or not settled.issuperset(state.topups_settled):
        raise InvariantError("the settled top-ups in memory and their list differ")
    # Running totals: a bounded state holds the recent references and top-ups only.
    credited = state.topups_credited_halala
    deposits = state.deposits_halala
    if state.history_cap is None:
        in_memory = sum(d.amount_halala for d in state.deposit_refs.values())
        if in_memory != deposits:
            raise InvariantError(f"deposit references sum to {in_memory}, credited {deposits}")
    if state.topups_cap is None:
        paid = sum(t.amount_halala for t in state.topups.values() if t.status in CREDITED)
        if paid != credited:
            raise InvariantError(f"paid top-ups sum to {paid}, credited {credited}")
    if state.balance(ledger.WORLD_DEPOSITS) != -(deposits + credited):
        raise InvariantError(
            f"world:deposits is {state.balance(ledger.WORLD_DEPOSITS)},"
            f" deposits and top-ups credited {deposits + credited}"
        )
