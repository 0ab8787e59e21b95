"""Gateway top-ups in the pure core: the decisions, and a hypothesis property over
interleavings of webhooks, sweeps and refunds (docs/payments.md)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcp_events import catalogue as ev
from dcp_events.codec import default_codec
from dcp_projections import commands as c
from dcp_projections import ledger, money
from dcp_projections.decisions import decide
from dcp_projections.errors import (
    Conflict,
    DomainError,
    IdempotencyKeyReused,
    InsufficientFunds,
    InvalidTransition,
    InvariantError,
    ValidationError,
)
from dcp_projections.fold import apply, check_all
from dcp_projections.history import topups_to_recall
from dcp_projections.settings import Settings
from dcp_projections.state import State

CODEC = default_codec()
SETTINGS = Settings()
T0 = 1_780_000_000_000_000


def run(state: State, command: c.Command) -> list:
    """Decide, encode, decode and fold, as the service does."""
    events = decide(state, command, T0 + state.seq, SETTINGS)
    for e in events:
        row = CODEC.encode(e)
        apply(state, state.seq + 1, CODEC.decode_payload(row.type, row.schema_version, row.payload))
    return events


def market(renters: int = 1) -> State:
    state = State()
    for i in range(renters):
        run(state, c.RegisterRenter(renter_id=f"r{i}", name="a", email="a@x.sa", key_hash=f"k{i}"))
    return state


def paid(
    topup_id: str, payment_id: str, amount: int, currency: str = "SAR", **kw
) -> c.ObserveTopUp:
    return c.ObserveTopUp(
        topup_id=topup_id,
        payment_id=payment_id,
        payment_status="paid",
        amount_halala=amount,
        currency=currency,
        **kw,
    )


def test_a_paid_topup_credits_once_per_payment_id():
    """paid -> one credit; the same payment again, or another one for the same top-up, none."""
    s = market()
    run(s, c.RequestTopUp(topup_id="t1", renter_id="r0", amount_halala=5_000))
    run(s, c.RecordInvoice(topup_id="t1", invoice_id="inv1", checkout_url="https://pay/1"))
    (e,) = run(s, paid("t1", "p1", 5_000, source="webhook"))
    assert isinstance(e, ev.TopUpPaid) and e.postings == money.credit("r0", 5_000)
    assert run(s, paid("t1", "p1", 5_000, source="sweep")) == []
    assert run(s, paid("t1", "p2", 5_000)) == []
    assert s.available("r0") == 5_000 and s.balance(ledger.WORLD_DEPOSITS) == -5_000
    assert s.topups["t1"].status == "paid" and s.topup_payments == {"p1": "t1"}
    check_all(s)


def test_mismatch_disputes_and_invoice_endings_fail_or_expire():
    """Wrong amount or currency: disputed, no money; failed/canceled and expired invoices end
    a pending top-up; an unpaid answer changes nothing."""
    s = market()
    for t in ("a", "b", "d", "e", "f"):
        run(s, c.RequestTopUp(topup_id=t, renter_id="r0", amount_halala=1_000))
    assert isinstance(run(s, paid("a", "pa", 999))[0], ev.TopUpDisputed)
    assert isinstance(run(s, paid("b", "pb", 1_000, currency="USD"))[0], ev.TopUpDisputed)
    assert run(s, paid("b", "pb", 1_000, currency="USD")) == []  # disputed once
    assert run(s, c.ObserveTopUp(topup_id="d", invoice_status="canceled"))[0].status == "failed"
    assert run(s, c.ObserveTopUp(topup_id="e", invoice_status="expired"))[0].status == "expired"
    assert run(s, c.ObserveTopUp(topup_id="f", payment_id="pf", payment_status="failed")) == []
    assert run(s, c.ObserveTopUp(topup_id="f", invoice_status="initiated")) == []
    assert [s.topups[t].status for t in "abdef"] == [
        "disputed",
        "disputed",
        "failed",
        "expired",
        "pending",
    ]
    assert s.available("r0") == 0
    # An expired invoice paid late is money that arrived: credited.
    assert isinstance(run(s, paid("e", "pe", 1_000))[0], ev.TopUpPaid)
    assert s.available("r0") == 1_000
    check_all(s)


def test_requests_are_bounded_and_idempotent():
    s = market()
    for amount in (99, 1_000_001, True):
        with pytest.raises(ValidationError):
            run(s, c.RequestTopUp(topup_id="t", renter_id="r0", amount_halala=amount))
    run(s, c.RequestTopUp(topup_id="t1", renter_id="r0", amount_halala=500, idempotency_key="k"))
    assert (
        run(
            s, c.RequestTopUp(topup_id="t2", renter_id="r0", amount_halala=500, idempotency_key="k")
        )
        == []
    )
    with pytest.raises(IdempotencyKeyReused):
        run(
            s, c.RequestTopUp(topup_id="t3", renter_id="r0", amount_halala=600, idempotency_key="k")
        )
    run(s, c.RecordInvoice(topup_id="t1", invoice_id="inv", checkout_url="u"))
    assert run(s, c.RecordInvoice(topup_id="t1", invoice_id="inv", checkout_url="u")) == []
    with pytest.raises(Conflict):
        run(s, c.RecordInvoice(topup_id="t1", invoice_id="other", checkout_url="u"))
    with pytest.raises(Conflict):  # the gateway's payment belongs to another invoice
        run(s, paid("t1", "p", 500, invoice_id="someone-elses"))
    assert list(s.topups) == ["t1"]


def test_refund_needs_a_paid_topup_and_the_funds():
    s = market()
    run(s, c.RequestTopUp(topup_id="t1", renter_id="r0", amount_halala=5_000))
    with pytest.raises(InvalidTransition):
        run(s, c.RefundTopUp(topup_id="t1"))
    run(s, paid("t1", "p1", 5_000))
    # Spend some of it: the refund no longer fits.
    run(s, c.AllowImage(reference="img:1"))
    run(
        s,
        c.SubmitJob(
            job_id="j1",
            renter_id="r0",
            container_spec=ev.ContainerSpec(image="img:1"),
            max_duration_seconds=3600,
        ),
    )
    with pytest.raises(InsufficientFunds) as info:
        run(s, c.RefundTopUp(topup_id="t1"))
    assert info.value.shortfall_halala == 5_000 - s.available("r0")
    run(s, c.CancelJob(job_id="j1", renter_id="r0"))
    run(s, c.RefundTopUp(topup_id="t1"))
    assert s.available("r0") == 0 and s.topups["t1"].status == "refunding"
    run(s, c.SettleRefund(topup_id="t1", succeeded=False, reason="refused"))
    assert s.available("r0") == 5_000 and s.topups["t1"].status == "paid"
    run(s, c.RefundTopUp(topup_id="t1"))
    run(s, c.SettleRefund(topup_id="t1", succeeded=True))
    assert s.topups["t1"].status == "refunded" and s.available("r0") == 0
    assert run(s, c.SettleRefund(topup_id="t1", succeeded=True)) == []
    assert run(s, paid("t1", "p1", 5_000)) == []  # a late notification credits nothing
    check_all(s)


def test_the_fold_refuses_a_second_credit_of_one_payment():
    """An event no decision would make (a copied credit) is an InvariantError."""
    s = market(2)
    run(s, c.RequestTopUp(topup_id="t1", renter_id="r0", amount_halala=100))
    run(s, c.RequestTopUp(topup_id="t2", renter_id="r1", amount_halala=100))
    run(s, paid("t1", "p1", 100))
    forged = ev.TopUpPaid(
        topup_id="t2",
        renter_id="r1",
        payment_id="p1",
        amount_halala=100,
        at_us=T0,
        postings=money.credit("r1", 100),
    )
    with pytest.raises(InvariantError, match="credited twice"):
        apply(s, s.seq + 1, forged)


# --- the property ---------------------------------------------------------------------------

TOPUPS = ["t0", "t1", "t2"]
PAYMENTS = ["p0", "p1", "p2", "p3"]
AMOUNT = {"t0": 1_000, "t1": 2_500, "t2": 700}
Step = tuple[str, str, str, int]

steps = st.lists(
    st.tuples(
        st.sampled_from(["webhook", "sweep", "refund", "refund_ok", "refund_refused", "spend"]),
        st.sampled_from(TOPUPS),
        st.sampled_from(PAYMENTS),
        st.sampled_from([0, 0, 0, -1, 1]),  # how far the gateway's amount is off
    ),
    max_size=40,
)


@given(steps)
def test_interleavings_keep_the_books_and_credit_each_payment_at_most_once(program: list[Step]):
    """Any interleaving of notifications, sweep answers (repeated, late, for any payment id,
    for amounts a halala off), refunds confirmed or refused, and spending: after every step the
    books balance, every invariant holds, no payment id is credited twice, and each renter's
    balance is exactly what their top-up's state says."""
    s = market(len(TOPUPS))
    owner = {t: f"r{i}" for i, t in enumerate(TOPUPS)}
    for t in TOPUPS:
        run(s, c.RequestTopUp(topup_id=t, renter_id=owner[t], amount_halala=AMOUNT[t]))
    run(s, c.SetPrice(gpu_model="default", halala_per_gpu_hour=600))
    run(s, c.AllowImage(reference="img:1"))
    credits: dict[str, int] = {}
    jobs = 0
    for action, t, payment, off in program:
        r = owner[t]
        try:
            if action in ("webhook", "sweep"):
                events = run(s, paid(t, payment, AMOUNT[t] + off, source=action))
            elif action == "refund":
                events = run(s, c.RefundTopUp(topup_id=t))
            elif action in ("refund_ok", "refund_refused"):
                events = run(s, c.SettleRefund(topup_id=t, succeeded=action == "refund_ok"))
            else:
                jobs += 1
                events = run(
                    s,
                    c.SubmitJob(
                        job_id=f"j{jobs}",
                        renter_id=r,
                        container_spec=ev.ContainerSpec(image="img:1"),
                        max_duration_seconds=60,
                    ),
                )
        except DomainError:
            events = []
        for e in events:
            if isinstance(e, ev.TopUpPaid):
                credits[e.payment_id] = credits.get(e.payment_id, 0) + 1
        check_all(s)
        assert sum(s.balances.values()) == 0
        assert all(n == 1 for n in credits.values())
        # Spending only holds money (these jobs never settle), so a renter's whole balance is
        # exactly their top-up's net credit: its amount while paid, else nothing.
        for topup, renter in owner.items():
            net = AMOUNT[topup] if s.topups[topup].status == "paid" else 0
            assert s.available(renter) + s.held(renter) == net, topup


# --- bounded memory ---------------------------------------------------------------------------


def recall(bounded: State, full: State, command: c.Command) -> None:
    """What the command loop does before deciding: each lookup `topups_to_recall` names is
    answered from what the read models hold (the full state's top-ups; copies, as rows are)."""
    for by, value, renter in topups_to_recall(bounded, command):
        if by == "topup_id":
            found = value
        elif by == "payment_id":
            found = full.topup_payments.get(value)
        elif by == "invoice_id":
            found = full.topup_invoices.get(value)
        else:
            found = full.topup_keys.get((renter, value))
        t = full.topups.get(found) if found is not None else None
        if t is not None:
            bounded.recall_topup(msgspec.structs.replace(t))


def answer(state: State, command: c.Command) -> object:
    try:
        return decide(state, command, T0 + state.seq, SETTINGS)
    except DomainError as e:
        return (type(e), str(e))


bounded_steps = st.lists(
    st.tuples(
        st.sampled_from(
            ["request", "invoice", "webhook", "expire", "refund", "refund_ok", "refund_refused"]
        ),
        st.sampled_from(TOPUPS),
        st.sampled_from(PAYMENTS),
        st.sampled_from([0, 0, 0, -1]),  # how far the gateway's amount is off
    ),
    max_size=40,
)


@pytest.mark.parametrize("cap", [0, 1])
@given(program=bounded_steps)
def test_a_bounded_state_decides_every_top_up_command_as_a_full_one(cap: int, program: list[Step]):
    """A state keeping `cap` settled top-ups (trimmed after every command, as the service
    does after every batch) and reading the others back before deciding answers every request,
    invoice, webhook, expiry and refund exactly as a state keeping all of them, and holds the
    same books."""
    full, bounded = market(2), State(topups_cap=cap)
    for i in range(2):
        run(
            bounded, c.RegisterRenter(renter_id=f"r{i}", name="a", email="a@x.sa", key_hash=f"k{i}")
        )
    for action, t, payment, off in program:
        renter = f"r{TOPUPS.index(t) % 2}"
        command: c.Command
        if action == "request":  # a new id each time: a key names the first top-up it made
            tid = f"{t}-{full.seq}"
            command = c.RequestTopUp(
                topup_id=tid, renter_id=renter, amount_halala=AMOUNT[t] + off, idempotency_key=t
            )
        else:
            tid = full.topup_keys.get((renter, t), t)
            command = {
                "invoice": c.RecordInvoice(
                    topup_id=tid, invoice_id=f"inv-{payment}", checkout_url="u"
                ),
                "webhook": paid(tid, payment, AMOUNT[t] + off),
                "expire": c.ObserveTopUp(topup_id=tid, invoice_status="expired"),
                "refund": c.RefundTopUp(topup_id=tid),
                "refund_ok": c.SettleRefund(topup_id=tid, succeeded=True),
                "refund_refused": c.SettleRefund(topup_id=tid, succeeded=False),
            }[action]
        recall(bounded, full, command)
        want = answer(full, command)
        assert answer(bounded, command) == want, command
        for e in want if isinstance(want, list) else []:
            seq = full.seq + 1
            apply(full, seq, e)
            apply(bounded, seq, e)
        bounded.trim_history()
        check_all(bounded)
        assert bounded.balances == full.balances
        assert bounded.topups_credited_halala == full.topups_credited_halala
        assert len(bounded.topups_settled) <= cap
        assert all(x == full.topups[k] for k, x in bounded.topups.items())
