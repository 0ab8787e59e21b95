"""Settled gateway top-ups leave memory (docs/design.md, "Bounded memory"): the service keeps
every pending or refunding top-up and the most recently settled ones, and reads an older one
back from the `topups` read model before deciding (by its id, the payment it holds, its
invoice, its renter's idempotency key), so a repeated webhook for an old payment answers as
before and credits nothing, a late payment or a refund still works, and a reused key still
finds its top-up. Real SQLite files and real PostgreSQL databases, the real read models
answering; restarts from a snapshot and from the log."""

import sqlite3
from typing import Any

import msgspec
import pytest

from dcp_app import batcher
from dcp_app.service import LedgerService
from dcp_app.topups import TopUps
from dcp_projections import commands as cmd
from dcp_projections.fold import check_all
from dcp_projections.state import TOPUP_OPEN
from tests.dcp_app.conftest import SETTINGS, Clock
from tests.dcp_app.test_bounded_history import Ledger, dbs, open_ledger, outcome

__all__ = ["dbs"]  # the fixture: two fresh ledgers on SQLite, then on PostgreSQL


def observe(topup_id: str, payment_id: str, amount: int, status: str = "paid") -> cmd.ObserveTopUp:
    return cmd.ObserveTopUp(
        topup_id=topup_id,
        source="webhook",
        payment_id=payment_id,
        payment_status=status,
        amount_halala=amount,
        currency="SAR",
    )


def expired(topup_id: str, invoice_id: str) -> cmd.ObserveTopUp:
    return cmd.ObserveTopUp(
        topup_id=topup_id, source="sweep", invoice_id=invoice_id, invoice_status="expired"
    )


async def topped_up(led: Ledger) -> dict[str, str]:
    """A renter's top-ups in every settled status, and one still pending: name -> id."""
    svc, topups = led.svc, TopUps(led.svc)
    rid = (await svc.register_renter("R", "r@example.sa")).renter_id
    ids = {"renter": rid}
    for name, amount in (("paid", 5000), ("expired", 6000), ("disputed", 7000)):
        view, _ = await topups.request(rid, amount, f"key-{name}")
        ids[name] = view.topup_id
        await topups.record_invoice(view.topup_id, f"inv-{name}", f"https://pay/{name}")
    await topups.observe(observe(ids["paid"], "pay-paid", 5000))
    await topups.observe(expired(ids["expired"], "inv-expired"))
    await topups.observe(observe(ids["disputed"], "pay-disputed", 6999))
    for name, succeeded in (("refunded", True), ("reversed", False)):
        view, _ = await topups.request(rid, 8000, f"key-{name}")
        ids[name] = view.topup_id
        await topups.record_invoice(view.topup_id, f"inv-{name}", f"https://pay/{name}")
        await topups.observe(observe(view.topup_id, f"pay-{name}", 8000))
        await topups.refund(view.topup_id)
        await topups.settle_refund(view.topup_id, succeeded, "" if succeeded else "refused")
    view, _ = await topups.request(rid, 1000, "key-pending")
    ids["pending"] = view.topup_id
    await topups.record_invoice(view.topup_id, "inv-pending", "https://pay/pending")
    return ids


async def old_decisions(led: Ledger, ids: dict[str, str]) -> list[Any]:
    """Every decision about a settled top-up, and what a webhook's invoice lookup answers."""
    topups, out = TopUps(led.svc), []
    rid, paid, pending = ids["renter"], ids["paid"], ids["pending"]
    out.append(await outcome(topups.observe(observe(paid, "pay-paid", 5000))))  # webhook again
    out.append(await outcome(topups.request(rid, 5000, "key-paid")))  # the key: its top-up
    out.append(await outcome(topups.request(rid, 5001, "key-paid")))  # another amount: 422
    out.append(await outcome(topups.record_invoice(paid, "inv-paid", "https://pay/paid")))
    out.append(await outcome(topups.record_invoice(paid, "inv-other", "https://pay/o")))  # 409
    # The pending top-up named with the old one's invoice, then with its payment.
    out.append(await outcome(topups.record_invoice(pending, "inv-paid", "https://pay/x")))
    out.append(await outcome(topups.observe(observe(pending, "pay-paid", 1000))))  # no credit
    out.append(await outcome(topups.observe(observe(ids["disputed"], "pay-disputed", 6999))))
    out.append(await outcome(topups.observe(observe(ids["expired"], "pay-late", 6000))))  # late
    out.append(await outcome(topups.observe(observe(ids["expired"], "pay-late", 6000))))
    out.append(await outcome(topups.settle_refund(ids["refunded"], True)))  # the same answer
    out.append(await outcome(topups.settle_refund(ids["refunded"], False)))  # 409
    out.append(await outcome(topups.refund(ids["refunded"])))  # 409: refunded already
    out.append(await outcome(topups.refund(ids["reversed"])))  # paid again: refunds
    out.append(await outcome(topups.settle_refund(ids["reversed"], True)))
    out.append(await outcome(topups.observe(observe(ids["reversed"], "pay-reversed", 8000))))
    out.append(await outcome(topups.observe(observe("tu-nope", "pay-nope", 100))))  # 404
    out.append(await topups.by_invoice("inv-paid"))
    out.append(await topups.by_invoice("inv-nope"))
    recon = await led.svc.reconciliation()
    out.append(msgspec.structs.replace(recon, head_hash=""))  # recording times differ
    out.append(led.svc.state.available(rid))
    return out


def check_old_decisions(want: list[Any], ids: dict[str, str]) -> None:
    """The answers are the ones docs/payments.md asks for (and not, say, all refusals)."""
    assert want[0][0].status == "paid" and want[0][1] is False
    assert want[1][0].topup_id == ids["paid"] and want[1][1] is False
    assert [want[i][:2] for i in (2, 4, 5, 11, 12, 16)] == [
        ("IdempotencyKeyReused", 422),
        ("Conflict", 409),
        ("Conflict", 409),
        ("InvalidTransition", 409),
        ("InvalidTransition", 409),
        ("NotFound", 404),
    ]
    assert want[3].invoice_id == "inv-paid"
    assert want[6][0].status == "pending" and want[6][1] is False  # the payment is credited
    assert want[7][0].status == "disputed" and want[7][1] is False
    assert want[8][0].status == "paid" and want[8][1] and not want[9][1]  # credited once
    assert want[10].status == "refunded" and want[13].status == "refunding"
    assert want[14].status == "refunded" and want[15][1] is False  # no credit after a refund
    assert want[17] == ids["paid"] and want[18] is None
    assert want[-2].invariants_ok and want[-2].sum_halala == 0
    assert want[-1] == 5000 + 6000  # the paid one and the late payment


def settled_in_memory(svc: LedgerService) -> int:
    return sum(1 for t in svc.state.topups.values() if t.status not in TOPUP_OPEN)


async def test_decisions_about_old_topups_answer_as_before(dbs):
    """One ledger keeps no settled top-up in memory, one keeps them all: fed the same
    commands, every answer is the same, and the first really let them go."""
    bounded = await open_ledger(dbs[0], Clock(), cap=0)
    full = await open_ledger(dbs[1], Clock(), cap=None)
    try:
        ids = await topped_up(bounded)
        assert await topped_up(full) == ids
        state = bounded.svc.state
        assert list(state.topups) == [ids["pending"]] and list(state.topup_keys) == [
            (ids["renter"], "key-pending")
        ]
        assert state.topup_payments == {} and state.topup_invoices == {
            "inv-pending": ids["pending"]
        }
        assert len(full.svc.state.topups) == 6 and len(full.svc.state.topup_payments) == 3
        got, want = await old_decisions(bounded, ids), await old_decisions(full, ids)
        assert got == want
        check_old_decisions(want, ids)
        check_all(bounded.svc.state)
        assert bounded.svc.state.topups_credited_halala == full.svc.state.topups_credited_halala
        assert bounded.svc.state.balances == full.svc.state.balances
        assert settled_in_memory(bounded.svc) == 0
    finally:
        await bounded.close()
        await full.close()


async def test_memory_stays_flat_while_settled_topups_accumulate(tmp_path):
    """Paid top-ups past the cap: the top-ups and their indexes stay at the cap (plus the open
    ones), the running total stays exact, the read model holds every top-up, and the oldest
    payment, long gone from memory, is still credited only once."""
    led = await open_ledger(str(tmp_path / "dcp.db"), Clock(), cap=5)
    svc, topups = led.svc, TopUps(led.svc)
    try:
        rid = (await svc.register_renter("R", "r@example.sa")).renter_id
        sizes, first = [], ""
        for i in range(60):
            view, _ = await topups.request(rid, 100 + i, f"key-{i}")
            first = first or view.topup_id
            await topups.record_invoice(view.topup_id, f"inv-{i}", f"https://pay/{i}")
            await topups.observe(observe(view.topup_id, f"pay-{i}", 100 + i))
            s = svc.state
            sizes.append(
                (
                    len(s.topups),
                    len(s.topup_payments),
                    len(s.topup_invoices),
                    len(s.topup_keys),
                    len(s.topups_settled),
                )
            )
        assert sizes[-1] == (5, 5, 5, 5, 5) and max(max(s) for s in sizes) == 5
        check_all(svc.state)
        total = sum(100 + i for i in range(60))
        assert svc.state.topups_credited_halala == total == svc.state.available(rid)
        conn = sqlite3.connect(tmp_path / "dcp.db")
        try:
            assert conn.execute("SELECT count(*) FROM topups").fetchone()[0] == 60
        finally:
            conn.close()
        again, changed = await topups.observe(observe(first, "pay-0", 100))
        assert again.status == "paid" and not changed
        assert svc.state.available(rid) == total and len(svc.state.topups) <= 6
        reused, new = await topups.request(rid, 100, "key-0")
        assert reused.topup_id == first and not new
        assert (await svc.reconciliation()).invariants_ok
    finally:
        await led.close()


async def test_old_topups_answer_as_before_after_a_restart_from_a_snapshot(tmp_path):
    """A snapshot of a bounded state, then a refund of a top-up it no longer held (so the
    restart folds that refund onto a top-up the snapshot lacks): the restarted ledger holds
    what it held, and every old decision answers as a ledger keeping everything does."""
    snap = tmp_path / "snapshots"
    full = await open_ledger(str(tmp_path / "full.db"), Clock(), cap=None)
    led = await open_ledger(str(tmp_path / "dcp.db"), Clock(), cap=1, snapshot_dir=snap)
    try:
        ids = await topped_up(led)
        assert await topped_up(full) == ids
        written = await led.svc.snapshot_now()
        assert written is not None and ids["paid"] not in led.svc.state.topups
        for ledger in (led, full):
            await TopUps(ledger.svc).refund(ids["paid"])  # after the snapshot, in the tail
        before = led.svc.state
        await led.restart(1, snap)
        assert led.svc.loaded_from == written
        state = led.svc.state
        assert state.topups[ids["paid"]] == full.svc.state.topups[ids["paid"]]  # refunding
        assert state.topups_credited_halala == before.topups_credited_halala
        assert state.balances == before.balances
        got, want = await old_decisions(led, ids), await old_decisions(full, ids)
        assert got == want and got[0][0].status == "refunding"
    finally:
        await led.close()
        await full.close()


async def test_a_fold_from_the_log_recalls_top_ups_it_let_go_of(tmp_path, monkeypatch):
    """Start-up without a snapshot, in reads so short that settled top-ups leave memory
    between them: an event about one that left (a late payment, a refund) folds onto the
    top-up folded back from its renter's stream, and the state is the one it was."""
    led = await open_ledger(str(tmp_path / "dcp.db"), Clock(), cap=1)
    try:
        ids = await topped_up(led)
        await TopUps(led.svc).observe(observe(ids["expired"], "pay-late", 6000))
        await TopUps(led.svc).refund(ids["paid"])
        before = led.svc.state
        monkeypatch.setattr(batcher, "READ_CHUNK", 3)
        await led.restart(1)
        state = led.svc.state
        assert state.seq == before.seq and state.balances == before.balances
        assert state.topups_credited_halala == before.topups_credited_halala
        assert {ids["pending"], ids["paid"]} <= state.topups.keys()  # both open
        assert state.topups[ids["paid"]].status == "refunding"
        check_all(state)
        everything = await LedgerService.open(led.store, SETTINGS, clock=led.clock)
        try:
            full = everything.state
        finally:
            await everything.close()
        assert len(full.topups) == 6 and settled_in_memory(led.svc) <= 1
        assert all(t == full.topups[k] for k, t in state.topups.items())
    finally:
        await led.close()


@pytest.mark.parametrize("cap", [0, 2])
async def test_the_bounded_state_equals_the_full_one_where_it_holds_a_top_up(tmp_path, cap):
    """What the bounded state holds of the top-ups (entities and index entries) is the full
    fold's, every open top-up among them."""
    bounded = await open_ledger(str(tmp_path / "b.db"), Clock(), cap=cap)
    full = await open_ledger(str(tmp_path / "f.db"), Clock(), cap=None)
    try:
        ids = await topped_up(bounded)
        await topped_up(full)
        await old_decisions(bounded, ids)
        await old_decisions(full, ids)
        b, f = bounded.svc.state, full.svc.state
        assert {t for t, x in f.topups.items() if x.status in TOPUP_OPEN} <= b.topups.keys()
        assert all(t == f.topups[k] for k, t in b.topups.items())
        for name in ("topup_payments", "topup_invoices", "topup_keys"):
            held = getattr(b, name)
            assert held == {k: v for k, v in getattr(f, name).items() if v in b.topups}, name
        assert settled_in_memory(bounded.svc) <= cap
    finally:
        await bounded.close()
        await full.close()
