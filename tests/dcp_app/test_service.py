"""The ledger service over the real stores (SQLite and PostgreSQL): commands, durability, read
models, recovery."""

import asyncio

import pytest

from dcp_app import readmodel
from dcp_app.service import LedgerService, hash_key
from dcp_app.views import Balance, JobView
from dcp_events.errors import StoreError
from dcp_projections.errors import (
    Conflict,
    Forbidden,
    InsufficientFunds,
    InvalidTransition,
    LeaseLost,
    NotFound,
)
from dcp_projections.fold import check_all
from dcp_projections.state import GENESIS_PRICES
from tests.dcp_app.conftest import SETTINGS, Env, open_store


async def test_keys_are_shown_once_and_stored_only_as_hashes(sqlite_env: Env):
    """Register returns a well-formed key; the log holds its hash, never the key (the SQLite
    file's bytes, read raw)."""
    env = sqlite_env
    r = await env.svc.register_renter("Ana", "ana@example.sa")
    p = await env.svc.register_provider("Box", "box@example.sa", "H100", 1, 80)
    assert r.api_key.startswith("dcp-renter-") and len(r.api_key) == 11 + 32
    assert p.api_key.startswith("dcp-provider-") and p.approval_status == "pending"
    assert env.svc.authenticate(r.api_key) == ("renter", r.renter_id)
    assert env.svc.authenticate(p.api_key) == ("provider", p.provider_id)
    assert env.svc.authenticate(r.api_key + "0") is None
    assert env.svc.authenticate("") is None
    raw = b"".join(f.read_bytes() for f in env.path.parent.glob("dcp.db*"))
    assert r.api_key.encode() not in raw and p.api_key.encode() not in raw
    assert hash_key(r.api_key).encode() in raw


async def test_a_job_from_submit_to_settlement(env: Env):
    """Submit holds the reserve; the result settles it 75/25 and refunds the rest."""
    rid, pid = await env.renter(), await env.provider()
    job = await env.submit(rid)
    assert job.status == "queued" and job.queue_position == 1
    assert job.rate_halala_per_hour == 709 and job.cost_halala == 709
    assert await env.queries.balance(rid) == Balance(
        balance_halala=100_000, held_halala=709, available_halala=100_000 - 709
    )
    leases = await env.svc.claim_jobs(pid)
    assert [lease.job_id for lease in leases] == [job.job_id]
    assert leases[0].container_spec.command == ["python", "train.py"]
    assert await env.svc.claim_jobs(pid) == leases  # a repeated poll: the same lease
    await env.svc.start_job(pid, job.job_id, 1)
    env.clock.advance(600)
    done = await env.svc.report_result(
        pid, job.job_id, 1, "completed", exit_code=0, runtime_seconds=599.5, stdout="ok\n"
    )
    # billable = min(600, 600, 3600) = 600 s; ceil(709 * 600 / 3600) = 119 -> 89 + 30
    assert done.status == "completed"
    assert (done.actual_cost_halala, done.refunded_halala) == (119, 590)
    assert (done.provider_earned_halala, done.platform_fee_halala) == (89, 30)
    again = await env.svc.report_result(
        pid, job.job_id, 1, "completed", exit_code=0, runtime_seconds=599.5, stdout="ok\n"
    )
    assert again == done  # the same result: the same answer, no second settlement
    with pytest.raises(Conflict):
        await env.svc.report_result(pid, job.job_id, 1, "completed", runtime_seconds=1)
    stored = await env.queries.job(job.job_id)
    assert stored == done
    output = await env.queries.job_output(job.job_id)
    assert output is not None and output.stdout == "ok\n" and output.exit_code == 0
    assert (await env.queries.balance(rid)).available_halala == 100_000 - 119
    provider = await env.queries.provider(pid, env.clock(), SETTINGS)
    assert provider is not None and provider.earnings_halala == 89
    assert provider.state == "offline"  # 600 s without a heartbeat
    await env.svc.heartbeat(pid)
    assert (await env.queries.provider(pid, env.clock(), SETTINGS)).state == "online"
    ledger = await env.queries.ledger(rid)
    assert [e.event_type for e in ledger.entries][:2] == ["job.completed", "job.completed"]
    assert ledger.entries[0].seq >= ledger.entries[-1].seq


async def test_concurrent_submits_never_overdraw(env: Env):
    """50 submits at once against funds for 10: exactly 10 hold, 40 get the shortfall."""
    rid = await env.renter(credit=709 * 10)
    results = await asyncio.gather(*[env.submit(rid) for _ in range(50)], return_exceptions=True)
    ok = [r for r in results if isinstance(r, JobView)]
    refused = [r for r in results if isinstance(r, InsufficientFunds)]
    assert len(ok) == 10 and len(refused) == 40
    assert all(e.shortfall_halala == 709 for e in refused)
    assert env.svc.batches < 50  # decided and committed in groups
    assert await env.queries.balance(rid) == Balance(
        balance_halala=7090, held_halala=7090, available_halala=0
    )
    recon = await env.queries.reconciliation()
    assert recon.sum_halala == 0 and recon.invariants_ok


async def test_idempotent_submit_and_credit(env: Env):
    """The same Idempotency-Key returns the first job; the same reference credits once."""
    rid = await env.renter(credit=0)
    first = await env.svc.credit(rid, 5000, "wire-1", "bank transfer")
    second = await env.svc.credit(rid, 5000, "wire-1", "bank transfer")
    assert not first.duplicate and second.duplicate
    assert second.available_halala == 5000
    with pytest.raises(Conflict):
        await env.svc.credit(rid, 6000, "wire-1")
    a = await env.submit(rid, idempotency_key="k-1")
    b = await env.submit(rid, idempotency_key="k-1")
    assert a.job_id == b.job_id
    assert (await env.queries.balance(rid)).held_halala == 709


async def test_leases_expire_unless_heartbeats_renew_them(env: Env):
    """A listed job keeps its lease; an unlisted one is requeued, then fails and is refunded."""
    rid = await env.renter()
    pid = await env.provider(count=2)
    kept, lost = await env.submit(rid), await env.submit(rid)
    await env.svc.claim_jobs(pid)
    for _ in range(5):
        env.clock.advance(60)
        reply = await env.svc.heartbeat(pid, running_job_ids=[kept.job_id, "job-unknown"])
        assert reply.cancel_jobs == ["job-unknown"]
        await env.svc.sweep()
    assert env.svc.job(kept.job_id).status == "assigned"
    lost_now = env.svc.job(lost.job_id)
    assert lost_now.status == "queued" and lost_now.attempt == 2  # back in the queue
    with pytest.raises(LeaseLost):
        await env.svc.start_job(pid, lost.job_id, 1)


async def test_a_quiet_provider_loses_its_jobs_which_end_refunded(env: Env):
    """No heartbeats: the lease expires max_attempts times and the job fails, refunded."""
    rid = await env.renter()
    pid = await env.provider()
    job = await env.submit(rid)
    for _ in range(2):
        await env.svc.heartbeat(pid)
        await env.svc.claim_jobs(pid)
        env.clock.advance(121)
        await env.svc.sweep()
    failed = await env.queries.job(job.job_id)
    assert failed is not None and failed.status == "failed"
    assert failed.refunded_halala == failed.cost_halala
    assert (await env.queries.balance(rid)).available_halala == 100_000
    with pytest.raises(InvalidTransition):
        await env.svc.cancel_job(job.job_id, rid)
    requeued = await env.svc.requeue_job(job.job_id)
    assert requeued.status == "queued" and requeued.attempt == 3
    assert (await env.queries.balance(rid)).held_halala == failed.cost_halala


async def test_cancel_is_the_owners_and_settles_running_time(env: Env):
    """Another renter gets 404; a running job is charged up to the cancel."""
    rid, other = await env.renter(), await env.renter()
    pid = await env.provider()
    job = await env.submit(rid)
    with pytest.raises(NotFound):
        await env.svc.cancel_job(job.job_id, other)
    await env.svc.claim_jobs(pid)
    await env.svc.start_job(pid, job.job_id, 1)
    env.clock.advance(360)
    cancelled = await env.svc.cancel_job(job.job_id, rid)
    assert cancelled.status == "cancelled" and cancelled.actual_cost_halala == 71
    reply = await env.svc.heartbeat(pid, running_job_ids=[job.job_id])
    assert reply.cancel_jobs == [job.job_id]
    ack = await env.svc.report_result(pid, job.job_id, 1, "cancelled", runtime_seconds=361)
    assert ack.actual_cost_halala == 71  # the acknowledgement moves no money
    assert await env.svc.cancel_job(job.job_id, rid) == ack


async def test_withdrawals_complete_or_reject(env: Env):
    """Earnings -> payout_pending -> paid out, or back to earnings."""
    rid = await env.renter(credit=1_000_000)
    pid = await env.provider()
    await env.svc.set_price("H100", 100_000)
    job = await env.submit(rid, duration=600)
    await env.svc.claim_jobs(pid)
    env.clock.advance(600)
    await env.svc.report_result(pid, job.job_id, 1, "completed", runtime_seconds=600)
    earned = (await env.queries.provider(pid, env.clock(), SETTINGS)).earnings_halala
    assert earned == 16_667 * 75 // 100 == 12_500  # ceil(100000 * 600 / 3600) = 16667
    with pytest.raises(InsufficientFunds):
        await env.svc.withdraw(pid, earned + 1, "SA0380000000608010167519")
    w1 = await env.svc.withdraw(pid, 5000, "SA03 8000 0000 6080 1016 7519")
    w2 = await env.svc.withdraw(pid, 2000, "SA0380000000608010167519")
    assert w1.status == "pending" and w1.iban == "SA0380000000608010167519"
    await env.svc.complete_withdrawal(w1.withdrawal_id)
    await env.svc.reject_withdrawal(w2.withdrawal_id, "name mismatch")
    with pytest.raises(InvalidTransition):
        await env.svc.complete_withdrawal(w2.withdrawal_id)
    p = await env.queries.provider(pid, env.clock(), SETTINGS)
    assert p.earnings_halala == earned - 5000 and p.payout_pending_halala == 0
    statuses = {w.withdrawal_id: w.status for w in await env.queries.withdrawals()}
    assert statuses == {w1.withdrawal_id: "completed", w2.withdrawal_id: "rejected"}
    assert await env.queries.withdrawals(status="pending") == []


async def test_topup_only_in_sandbox(env: Env):
    """Outside sandbox mode a renter cannot top up."""
    rid = await env.renter(credit=0)
    with pytest.raises(Forbidden):
        await env.svc.topup(rid, 1000)


async def test_restart_folds_the_same_state(env: Env):
    """A service reopened on the log sees exactly what the first one had."""
    rid, pid = await env.renter(), await env.provider()
    job = await env.submit(rid)
    await env.svc.claim_jobs(pid)
    before = await env.svc.reconciliation()
    view = env.svc.job(job.job_id)
    again = await LedgerService.open(env.store, SETTINGS, clock=env.clock)
    try:
        assert await again.reconciliation() == before
        assert again.job(job.job_id) == view
        assert again.authenticate("dcp-renter-" + "0" * 32) is None
    finally:
        await again.close()


@pytest.mark.parametrize("catch_up", [True, False])
async def test_a_second_writer_is_caught_up_with(env: Env, monkeypatch, catch_up):
    """Another process appends: the next batch folds its events first; and if it did not
    (a race), the append fails on the stale head, the service refolds, and it succeeds."""
    if not catch_up:

        async def skip() -> None:
            return None

        monkeypatch.setattr(env.svc, "_catch_up", skip)
    rid = await env.renter()
    other_store = await open_store(env.db)
    other = await LedgerService.open(other_store, SETTINGS, clock=env.clock)
    try:
        await other.credit(rid, 1000, "from-the-other-node")
        await env.submit(rid)  # decided on a stale state first, then again after the refold
        assert env.svc.state.available(rid) == 100_000 + 1000 - 709
        check_all(env.svc.state)
    finally:
        await other.close()
        await other_store.close()
    recon = await env.queries.reconciliation()
    assert recon.invariants_ok and recon.sum_halala == 0


async def test_a_failing_read_model_write_rolls_the_batch_back(env: Env, monkeypatch):
    """If the tx hook fails, no event is stored and the caller gets the error."""
    rid = await env.renter()
    head = (await env.store.head())[0]
    real = readmodel.batch_writer

    def broken(*args):
        hook = real(*args)

        def fail(conn, recorded):
            written = hook(conn, recorded)  # PostgreSQL: a coroutine, to run before failing
            if written is None:
                raise RuntimeError("disk full")

            async def then_fail():
                await written
                raise RuntimeError("disk full")

            return then_fail()

        return fail

    monkeypatch.setattr(readmodel, "batch_writer", broken)
    with pytest.raises(Exception, match="disk full"):
        await env.submit(rid)
    assert (await env.store.head())[0] == head
    assert env.svc.state.seq == head and env.svc.state.held(rid) == 0
    monkeypatch.setattr(readmodel, "batch_writer", real)
    await env.submit(rid)
    assert (await env.queries.balance(rid)).held_halala == 709


async def test_rebuild_equals_the_live_read_models(env: Env, tmp_path):
    """Rebuilding from the log gives identical tables; as of a sequence, that point's."""
    rid, pid = await env.renter(), await env.provider()
    jobs = [await env.submit(rid) for _ in range(3)]
    await env.svc.claim_jobs(pid)
    await env.svc.report_result(pid, jobs[0].job_id, 1, "completed", runtime_seconds=5)
    await env.svc.cancel_job(jobs[1].job_id, rid)
    await env.svc.allow_image("other:1")
    await env.svc.remove_image("other:1")
    await env.svc.set_price("A100", 500)
    assert await env.rebuild_equals_live()
    report = await env.rebuild_in_place()
    assert report.events == (await env.store.head())[0]
    # As of just after the credit (the genesis prices, the image, the renter, the credit): one
    # renter with its deposit, nothing else.
    credited = len(GENESIS_PRICES) + 3
    await env.rebuild_in_place(until_seq=credited)
    from dcp_app.queries import Queries

    then = await Queries.open(env.db)
    try:
        assert (await then.balance(rid)).available_halala == 100_000
        assert await then.projection_seq() == credited
        assert (await then.jobs_of_renter(rid)).jobs == []
    finally:
        await then.close()


async def test_queries_paginate(env: Env):
    """Jobs newest first with a cursor; the ledger newest first by sequence."""
    rid = await env.renter()
    ids = []
    for _ in range(5):
        env.clock.advance(1)
        ids.append((await env.submit(rid)).job_id)
    page1 = await env.queries.jobs_of_renter(rid, limit=2)
    page2 = await env.queries.jobs_of_renter(rid, limit=2, cursor=page1.next_cursor)
    page3 = await env.queries.jobs_of_renter(rid, limit=2, cursor=page2.next_cursor)
    got = [j.job_id for p in (page1, page2, page3) for j in p.jobs]
    assert got == ids[::-1] and page3.next_cursor is None
    assert [j.queue_position for j in page1.jobs] == [5, 4]
    assert (await env.queries.jobs_of_renter(rid, status="completed")).jobs == []
    first = await env.queries.ledger(rid, limit=4)
    rest = await env.queries.ledger(rid, limit=100, before_seq=int(first.next_cursor or 0))
    seqs = [e.seq for e in first.entries + rest.entries]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) == 1 + 5 * 2
    market = await env.queries.marketplace(env.clock(), SETTINGS)
    assert market == []
    pid = await env.provider()
    market = await env.queries.marketplace(env.clock(), SETTINGS)
    assert [m.provider_id for m in market] == [pid]
    assert market[0].halala_per_gpu_hour == 709


async def test_sweep_as_of_a_given_time(env: Env):
    """sweep(now_us) decides as of that instant; the clock is left alone."""
    rid, pid = await env.renter(), await env.provider()
    job = await env.submit(rid)
    await env.svc.claim_jobs(pid)
    assert await env.svc.sweep(env.clock() + 119 * 1_000_000) == 0
    assert await env.svc.sweep(env.clock() + 121 * 1_000_000) == 1
    assert env.svc.job(job.job_id).status == "queued"


async def test_close_finishes_queued_commands(env: Env):
    """Commands queued when close() is called still complete; later ones are refused."""
    rid = await env.renter()
    pending = [asyncio.ensure_future(env.submit(rid, duration=60)) for _ in range(100)]
    await asyncio.sleep(0)  # let them queue
    await env.svc.close()
    results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 10)
    assert all(isinstance(r, JobView) for r in results)
    assert not env.svc.ready
    with pytest.raises(StoreError):
        await env.submit(rid)


async def test_a_command_and_a_read_answer_with_the_same_view(env: Env):
    """A command's answer (from memory) and a later read (from the read models) are the same
    Struct with the same fields: queue positions, times and presence included."""
    rid, pid = await env.renter(), await env.provider()
    submitted = [await env.submit(rid) for _ in range(3)]
    assert [j.queue_position for j in submitted] == [1, 2, 3]
    submitted = [env.svc.job(j.job_id) for j in submitted]  # the later ones moved nothing
    assert [await env.queries.job(j.job_id) for j in submitted] == submitted
    page = await env.queries.jobs_of_renter(rid)  # one query for every queued job's place
    by_id = {j.job_id: j for j in page.jobs}
    assert [by_id[j.job_id] for j in submitted] == submitted
    paused = await env.svc.pause_provider(pid)
    assert paused.paused and await env.queries.provider(pid, env.clock(), SETTINGS) == paused
    credited = await env.svc.credit(rid, 10, "view-test")
    assert credited.available_halala == (await env.queries.balance(rid)).available_halala
