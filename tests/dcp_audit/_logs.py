"""Logs for the audit tests, and the ways an attacker with write access would tamper with them.

`build_log` appends a small but complete marketplace history through the real store: renters
and deposits, providers and heartbeats, jobs that complete, time out, get cancelled or fail,
and withdrawals. Its numbers come from the domain's own settlement functions.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from dcp_events import catalogue as ev
from dcp_events.chain import canonical_bytes, chain_hash
from dcp_events.codec import default_codec
from dcp_events.event import Event
from dcp_events.sqlite_store import SqliteEventStore, open_connection
from dcp_events.store import AppendRequest
from dcp_projections import money
from dcp_projections.settlement import (
    charge,
    rate_halala_per_hour,
    refund_all,
    reserve_halala,
)

T0_US = 1_790_000_000_000_000


def _key_hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _requests(stream: str, events: list[Event]) -> AppendRequest:
    codec = default_codec()
    return AppendRequest(stream, None, [codec.encode(e, actor="test") for e in events])


async def build_log(path: Path, renters: int = 4, jobs_per_renter: int = 5) -> int:
    """Append a realistic history to a new log at `path`; returns its last sequence."""
    store = await SqliteEventStore.open(path)
    t = T0_US
    last = 0

    async def put(stream: str, *events: Event) -> None:
        nonlocal last
        (res,) = await store.append_atomic([_requests(stream, list(events))])
        last = res.last_seq

    await put("platform", ev.ImageAllowed(reference="dcp-test/busybox:1", at_us=t))
    providers = [f"p{i}" for i in range(2)]
    for pid in providers:
        await put(
            f"provider-{pid}",
            ev.ProviderRegistered(
                provider_id=pid,
                name=f"Provider {pid}",
                email=f"{pid}@example.com",
                gpu_model="H100",
                gpu_count=8,
                vram_gb=80,
                key_hash=_key_hash(pid),
                approved=True,
                at_us=t,
            ),
            ev.ProviderHeartbeat(provider_id=pid, at_us=t + 1),
        )
    for r in range(renters):
        rid = f"r{r}"
        amount = 100_000 + r
        await put(
            f"renter-{rid}",
            ev.RenterRegistered(
                renter_id=rid,
                name=f"Renter {r}",
                email=f"{rid}@example.com",
                key_hash=_key_hash(rid),
                at_us=t,
            ),
            ev.DepositCredited(
                renter_id=rid,
                amount_halala=amount,
                reference=f"ref-{rid}",
                at_us=t,
                postings=money.credit(rid, amount),
            ),
        )
        for j in range(jobs_per_renter):
            t += 10_000_000
            await _job(put, rid, f"j{r}-{j}", providers[j % 2], j, t)
    for pid in providers:
        await put(
            f"provider-{pid}",
            ev.WithdrawalRequested(
                withdrawal_id=f"w-{pid}",
                provider_id=pid,
                amount_halala=1,
                iban="SA0380000000608010167519",
                at_us=t,
                postings=money.withdraw(pid, 1),
            ),
            ev.WithdrawalCompleted(
                withdrawal_id=f"w-{pid}",
                provider_id=pid,
                amount_halala=1,
                at_us=t + 1,
                postings=money.pay_out(pid, 1),
            ),
        )
    for r in range(renters):
        await _topup(put, f"r{r}", r, t + 100)
    await store.close()
    return last


async def _topup(put, rid: str, r: int, t: int) -> None:
    """A gateway top-up credited once; r0's refund is refused (reversed), r1's confirmed."""
    tid, pay, amount = f"tu-{rid}", f"pay-{rid}", 5_000 + r
    events: list[Event] = [
        ev.TopUpRequested(topup_id=tid, renter_id=rid, amount_halala=amount, at_us=t),
        ev.TopUpInvoiceCreated(
            topup_id=tid, renter_id=rid, invoice_id=f"inv-{rid}", checkout_url="u", at_us=t
        ),
        ev.TopUpPaid(
            topup_id=tid,
            renter_id=rid,
            payment_id=pay,
            invoice_id=f"inv-{rid}",
            amount_halala=amount,
            at_us=t + 1,
            postings=money.credit(rid, amount),
        ),
    ]
    if r < 2:
        events.append(
            ev.TopUpRefundRequested(
                topup_id=tid,
                renter_id=rid,
                payment_id=pay,
                amount_halala=amount,
                at_us=t + 2,
                postings=money.refund(rid, amount),
            )
        )
        if r == 0:
            events.append(
                ev.TopUpRefundReversed(
                    topup_id=tid,
                    renter_id=rid,
                    amount_halala=amount,
                    at_us=t + 3,
                    postings=money.credit(rid, amount),
                )
            )
        else:
            events.append(ev.TopUpRefunded(topup_id=tid, renter_id=rid, at_us=t + 3))
    await put(f"renter-{rid}", *events)


async def _job(put, rid: str, job_id: str, pid: str, kind: int, t: int) -> None:
    rate = rate_halala_per_hour(709, 1, "standard")
    max_s = 1800
    reserve = reserve_halala(rate, max_s)
    stream = f"renter-{rid}"
    submitted = ev.JobSubmitted(
        job_id=job_id,
        renter_id=rid,
        container_spec=ev.ContainerSpec(image="dcp-test/busybox:1", command=("true",)),
        gpu_requirements=ev.GpuRequirements(gpu_type="H100"),
        max_duration_seconds=max_s,
        price_halala_per_gpu_hour=709,
        rate_halala_per_hour=rate,
        cost_halala=reserve,
        at_us=t,
        postings=money.hold(rid, reserve),
    )
    if kind % 5 == 3:  # cancelled while queued: all back
        s = refund_all(reserve)
        await put(
            stream,
            submitted,
            ev.JobCancelled(
                job_id=job_id,
                renter_id=rid,
                attempt=1,
                by="renter",
                was_status="queued",
                settlement=s,
                at_us=t + 1,
                postings=money.settle(rid, None, reserve, s),
            ),
        )
        return
    claimed = ev.JobClaimed(
        job_id=job_id,
        renter_id=rid,
        provider_id=pid,
        attempt=1,
        lease_expires_us=t + 120_000_000,
        at_us=t + 1,
    )
    started = ev.JobStarted(job_id=job_id, renter_id=rid, provider_id=pid, attempt=1, at_us=t + 2)
    runtime_s = 60 * (kind + 1) + 7
    if kind % 5 == 4:  # an infrastructure fault on the last attempt: refunded in full
        s = refund_all(reserve)
        end: Event = ev.JobFailed(
            job_id=job_id,
            renter_id=rid,
            provider_id=pid,
            attempt=1,
            reason="infrastructure",
            error="docker daemon went away",
            settlement=s,
            at_us=t + 3,
            postings=money.settle(rid, None, reserve, s),
        )
    else:
        s = charge(reserve, rate, runtime_s)
        end = ev.JobCompleted(
            job_id=job_id,
            renter_id=rid,
            provider_id=pid,
            attempt=1,
            reported_runtime_seconds=runtime_s,
            measured_runtime_seconds=runtime_s + 1,
            output=ev.JobOutput(exit_code=0, stdout="hello\n", sha256="0" * 64),
            settlement=s,
            at_us=t + 3 + runtime_s * 1_000_000,
            postings=money.settle(rid, pid, reserve, s),
        )
    await put(stream, submitted, claimed, started, end)


# --- tampering (an attacker with write access to the file) ----------------------------------


def writable(path: Path) -> sqlite3.Connection:
    """A connection to the log with the append-only triggers dropped."""
    conn = open_connection(path)
    conn.execute("DROP TRIGGER IF EXISTS events_no_update")
    conn.execute("DROP TRIGGER IF EXISTS events_no_delete")
    return conn


def row(conn: sqlite3.Connection, seq: int) -> dict[str, object]:
    cur = conn.execute("SELECT * FROM events WHERE seq = ?", (seq,))
    names = [d[0] for d in cur.description]
    return dict(zip(names, cur.fetchone(), strict=True))


def rehash(conn: sqlite3.Connection, seq: int) -> str:
    """Recompute `seq`'s own hash from its (altered) contents and stored prev_hash."""
    r = row(conn, seq)
    canonical = canonical_bytes(
        r["seq"],  # type: ignore[arg-type]
        r["stream_id"],  # type: ignore[arg-type]
        r["stream_version"],  # type: ignore[arg-type]
        r["type"],  # type: ignore[arg-type]
        r["schema_version"],  # type: ignore[arg-type]
        r["recorded_at_us"],  # type: ignore[arg-type]
        r["actor"],  # type: ignore[arg-type]
        r["idempotency_key"],  # type: ignore[arg-type]
        str(r["payload"]).encode(),
    )
    h = chain_hash(str(r["prev_hash"]), canonical)
    conn.execute("UPDATE events SET hash = ? WHERE seq = ?", (h, seq))
    return h


def rechain_from(conn: sqlite3.Connection, seq: int) -> None:
    """Rewrite every hash from `seq` to the head: the forgery that the chain alone cannot see
    (only a published head hash, or the content checks, can)."""
    prev = row(conn, seq - 1)["hash"] if seq > 1 else "0" * 64
    for (s,) in conn.execute(
        "SELECT seq FROM events WHERE seq >= ? ORDER BY seq", (seq,)
    ).fetchall():
        conn.execute("UPDATE events SET prev_hash = ? WHERE seq = ?", (prev, s))
        prev = rehash(conn, s)


def first_seq_of_type(conn: sqlite3.Connection, type_: str, after: int = 0) -> int:
    found = conn.execute(
        "SELECT min(seq) FROM events WHERE type = ? AND seq > ?", (type_, after)
    ).fetchone()[0]
    assert found is not None, f"no {type_} after {after}"
    return int(found)


async def build_service_log(path: Path, renters: int = 3, rounds: int = 4) -> int:
    """Drive the real LedgerService (decisions, tx-hook read models) through a small
    marketplace; returns the last sequence. Its read models are the live ones, written in the
    same transactions as the events."""
    from dcp_app.service import LedgerService

    now = [T0_US]

    def clock() -> int:
        now[0] += 20_000_000  # 20 s per decision: jobs run long enough to earn
        return now[0]

    store = await SqliteEventStore.open(path)
    svc = await LedgerService.open(store, clock=clock)
    try:
        await svc.allow_image("dcp-test/busybox:1")
        await svc.set_price("H100", 600_000)
        pids = []
        for i in range(2):
            p = await svc.register_provider(f"P{i}", f"p{i}@example.com", "H100", 2, 80)
            await svc.approve_provider(p.provider_id)
            await svc.heartbeat(p.provider_id, [ev.GpuInfo(model="H100", count=2)])
            pids.append(p.provider_id)
        rids = []
        for r in range(renters):
            rid = (await svc.register_renter(f"R{r}", f"r{r}@example.com")).renter_id
            await svc.credit(rid, 2_000_000 + r, f"wire-{r}")
            rids.append(rid)
        spec = ev.ContainerSpec(image="dcp-test/busybox:1", command=("echo", "hi"))
        h100 = ev.GpuRequirements(gpu_type="H100")
        outcomes = ["completed", "failed", "timed_out", "cancelled"]
        for k in range(rounds):
            for rid in rids:
                await svc.submit_job(rid, spec, h100, max_duration_seconds=600)
            queued_cancel = await svc.submit_job(rids[0], spec, h100, max_duration_seconds=60)
            await svc.cancel_job(queued_cancel.job_id, rids[0])
            for pid in pids:
                await svc.heartbeat(pid, [ev.GpuInfo(model="H100", count=2)])
                for lease in await svc.claim_jobs(pid):
                    await svc.start_job(pid, lease.job_id, lease.attempt)
                    await svc.heartbeat(pid, running_job_ids=[lease.job_id])
                    await svc.report_result(
                        pid,
                        lease.job_id,
                        lease.attempt,
                        outcomes[k % len(outcomes)],
                        exit_code=0,
                        runtime_seconds=42.5,
                        stdout="hi\n",
                        error="disk full" if k % len(outcomes) == 1 else "",
                    )
        await svc.sweep()
        for pid in pids:
            if svc.state.earnings(pid) < 2000:
                continue
            for decide in (svc.complete_withdrawal, svc.reject_withdrawal):
                w = await svc.withdraw(pid, 1000, "SA0380000000608010167519")
                await decide(w.withdrawal_id)
        assert svc.state.balance("world:payouts") > 0, "no withdrawal was made"
        head = svc.state.seq
    finally:
        await svc.close()
        await store.close()
    return head
