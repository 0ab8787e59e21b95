"""The top-up commands of the application service on the real SQLite store: answers are the
read-model rows, the rows are durable and rebuild identically, concurrent credits collapse."""

import asyncio

from dcp_app.topups import TopUps
from dcp_projections import commands as cmd

from .conftest import Env


def paid(topup_id: str, payment_id: str, amount: int) -> cmd.ObserveTopUp:
    return cmd.ObserveTopUp(
        topup_id=topup_id,
        source="webhook",
        payment_id=payment_id,
        payment_status="paid",
        amount_halala=amount,
        currency="SAR",
    )


async def test_topups_are_durable_credited_once_and_rebuild_equal(env: Env, tmp_path):
    """Fifty concurrent observations of one paid payment credit once; what the service
    answered is what the table holds, and a rebuild from the log equals the live tables."""
    topups = TopUps(env.svc)
    renter = await env.renter(credit=0)
    view, new = await topups.request(renter, 7_000, "key-1")
    assert new and view.status == "pending" and view.invoice_id is None
    again, new_again = await topups.request(renter, 7_000, "key-1")
    assert again.topup_id == view.topup_id and not new_again
    tid = view.topup_id
    state_topup = env.svc.state.topups[tid]  # the view's times read back exactly
    assert (view.created_at_us, view.updated_at_us) == (
        state_topup.created_at_us,
        state_topup.updated_at_us,
    )
    await topups.record_invoice(tid, "inv-1", "https://pay.example/inv-1")
    assert await topups.by_invoice("inv-1") == tid
    results = await asyncio.gather(*(topups.observe(paid(tid, "pay-1", 7_000)) for _ in range(50)))
    assert sum(changed for _, changed in results) == 1
    assert env.svc.state.available(renter) == 7_000
    row = await env.queries.topup(tid)
    assert row == topups.get(tid) and row.status == "paid" and row.payment_id == "pay-1"
    refunded = await topups.refund(tid)
    assert refunded.status == "refunding" and env.svc.state.available(renter) == 0
    back = await topups.settle_refund(tid, False, "refused")
    assert back.status == "paid" and env.svc.state.available(renter) == 7_000
    assert [r.topup_id for r in (await env.queries.topups(renter_id=renter)).topups] == [tid]
    assert (await env.queries.topups(status="pending")).topups == []
    assert await env.queries.topup(tid, renter_id="someone-else") is None
    assert await env.rebuild_equals_live()
    rec = await env.svc.reconciliation()
    assert rec.sum_halala == 0 and rec.invariants_ok
