"""A hypothesis state machine over every command, faults included.

It drives the pure core (decide -> encode -> decode -> fold) with a clock it moves itself:
lease expiries, deadline and queue timeouts, duplicate and late results, cancels racing
results, requeues after failures, withdrawals completed and rejected, submits that would
overdraw. After every step every invariant is checked from scratch (`check_all`), a refused
command must leave the balances untouched, and every few steps (and at the end) replaying the
encoded log into an empty state must reproduce the same read-model rows.

A twin state that keeps only one ended job, deposit reference and decided withdrawal in
memory (`State(ended_cap=1, history_cap=1)`, trimmed after every command, as the service does
after every batch) decides every command too, folding an ended job back from its renter's
stream (`dcp_projections.history`) when a command names one, and reading an old reference or
withdrawal back from what the read models hold (the full state's): its answer (events, or the
refusal) must be the full state's, and its live part the same.

One `step` rule draws a weighted action, so a job's whole life (submit, poll, start, report)
is common in every program rather than left to which rules a program happens to enable.
"""

import os

import msgspec
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from dcp_events import catalogue as ev
from dcp_events.codec import default_codec
from dcp_events.event import Event
from dcp_projections import commands as c
from dcp_projections.decisions import decide
from dcp_projections.errors import DomainError
from dcp_projections.fold import apply, check_all
from dcp_projections.history import job_from_stream, jobs_to_recall, row_to_recall
from dcp_projections.rows import all_rows
from dcp_projections.settings import Settings
from dcp_projections.state import ENDED, State
from dcp_projections.streams import renter_stream, stream_of

CODEC = default_codec()
SETTINGS = Settings(
    sandbox=True,
    lease_ttl_s=120,
    max_attempts=2,
    online_s=90,
    stale_s=300,
    deadline_grace_s=60,
    queue_timeout_s=4 * 3600,
)
IMAGES = ["img/a:1", "img/b:2", "repo/*"]
PROVIDER_GPUS = ["H100", "A100", "RTX4090"]
JOB_GPUS = ["H100", "A100", "RTX 4090", "any"]
IBAN_OK = "SA0380000000608010167519"
IBAN_BAD = "SA0380000000608010167518"
OUTCOMES = ["completed", "completed", "timed_out", "cancelled", "failed"]
S = 1_000_000


class Ledger(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = State()
        self.bounded = State(ended_cap=1, history_cap=1)
        self.log: list[tuple[int, str, int, bytes]] = []
        self.streams: dict[str, list[tuple[int, Event]]] = {}  # the log by stream, decoded
        self.now_us = 1_700_000_000 * S
        self.counter = 0
        self.reports: list[c.ReportResult] = []
        self.steps = 0
        self.seen: set[str] = set()  # event types produced, for the coverage check

    # --- plumbing ----------------------------------------------------------------------------

    def run(self, command: c.Command) -> list:
        """Decide, encode, decode and fold; a refusal must not move a halala."""
        before = dict(self.state.balances)
        bounded_answer = self.decide_bounded(command)
        try:
            return self.decide_and_fold(command, before, bounded_answer)
        finally:
            self.bounded.trim_ended()
            self.bounded.trim_history()

    def decide_and_fold(self, command: c.Command, before: dict, bounded_answer: object) -> list:
        try:
            events = decide(self.state, command, self.now_us, SETTINGS)
        except DomainError as e:
            assert self.state.balances == before, "a refused command moved money"
            assert bounded_answer == (type(e), str(e)), "an ended job left memory and changed it"
            return []
        assert bounded_answer == events, "an ended job left memory and changed the decision"
        for event in events:
            row = CODEC.encode(event)
            decoded = CODEC.decode_payload(row.type, row.schema_version, row.payload)
            assert decoded == event
            seq = self.state.seq + 1
            apply(self.state, seq, decoded)
            apply(self.bounded, seq, decoded)
            self.log.append((seq, row.type, row.schema_version, row.payload))
            self.streams.setdefault(stream_of(decoded), []).append((seq, decoded))
            self.seen.add(row.type)
        return events

    def decide_bounded(self, command: c.Command) -> object:
        """The twin's answer: its events, or (type, message) of its refusal."""
        for job_id in jobs_to_recall(self.bounded, command, self.now_us):
            owner = self.state.jobs.get(job_id)
            if owner is not None:
                recall(self.bounded, self.streams, job_id, owner.renter_id)
        recall_row(self.bounded, self.state, command)
        try:
            return decide(self.bounded, command, self.now_us, SETTINGS)
        except DomainError as e:
            return (type(e), str(e))

    def new_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def pick(self, data, items, label):
        return data.draw(st.sampled_from(sorted(items)), label=label)

    # --- setup -------------------------------------------------------------------------------

    @initialize(
        gpus=st.lists(st.sampled_from(PROVIDER_GPUS), min_size=1, max_size=3),
        credit=st.sampled_from([0, 2_000, 60_000, 500_000]),
    )
    def marketplace(self, gpus, credit):
        """A market to trade in: allowed images, two funded renters, approved providers."""
        for image in IMAGES[:2]:
            self.run(c.AllowImage(reference=image))
        for _ in range(2):
            rid = self.new_id("r")
            self.run(c.RegisterRenter(renter_id=rid, name="ana", email="a@x.sa", key_hash=rid))
            self.run(c.CreditDeposit(renter_id=rid, amount_halala=credit, reference=f"i-{rid}"))
        for gpu in gpus:
            pid = self.new_id("p")
            self.run(
                c.RegisterProvider(
                    provider_id=pid,
                    name="box",
                    email="p@x.sa",
                    gpu_model=gpu,
                    gpu_count=2,
                    vram_gb=80,
                    key_hash=pid,
                )
            )
            self.run(c.SetProviderFlag(provider_id=pid, flag="approve"))
            self.run(c.Heartbeat(provider_id=pid))
        # Dear GPUs, so a few completed jobs earn enough for a withdrawal.
        for gpu in {*gpus, "default"}:
            self.run(c.SetPrice(gpu_model=gpu, halala_per_gpu_hour=200_000))

    # --- the one rule ------------------------------------------------------------------------

    @rule(data=st.data())
    def step(self, data):
        action = data.draw(st.sampled_from(ACTIONS), label="action")
        if action in NEEDS_JOBS and not self.state.jobs:
            action = Ledger.submit
        action(self, data)

    # --- renters and money in ----------------------------------------------------------------

    def register_renter(self, data):
        rid = self.new_id("r")
        name = data.draw(st.sampled_from(["ana", "bo", ""]), label="name")
        self.run(c.RegisterRenter(renter_id=rid, name=name, email=f"{rid}@x.sa", key_hash=rid))

    def credit(self, data):
        """Credits, with references reused (idempotent repeats and conflicting reuse)."""
        self.run(
            c.CreditDeposit(
                renter_id=self.pick(data, self.state.renters, "renter"),
                amount_halala=data.draw(st.sampled_from([-5, 0, 100, 5_000, 50_000])),
                reference=data.draw(st.sampled_from(["a", "b", "c", "d"]), label="ref"),
            )
        )

    def topup(self, data):
        self.run(
            c.TopUp(
                renter_id=self.pick(data, self.state.renters, "renter"),
                amount_halala=data.draw(st.integers(1, 20_000), label="amount"),
            )
        )

    def gateway(self, data):
        """A gateway top-up's life with the gateway's answers drawn: invoices, paid payments
        repeated or reused across top-ups, wrong amounts and currencies, failed and expired
        invoices, refunds confirmed or refused. No payment id is ever credited twice."""
        if not self.state.topups or data.draw(st.integers(0, 2), label="new top-up") == 0:
            renter = self.pick(data, self.state.renters, "renter")
            self.run(
                c.RequestTopUp(
                    topup_id=self.new_id("t"),
                    renter_id=renter,
                    amount_halala=data.draw(st.sampled_from([50, 100, 5_000, 2_000_000])),
                    idempotency_key=data.draw(st.sampled_from([None, None, "tk"])),
                )
            )
            return
        what = data.draw(
            st.sampled_from(["invoice", "observe", "observe", "refund", "settle"]), label="what"
        )
        # Mostly a top-up the step can change (paid ones for a refund, ...), sometimes any.
        wants = {"refund": {"paid"}, "settle": {"refunding"}}.get(what)
        candidates = [k for k, v in self.state.topups.items() if wants and v.status in wants]
        if not candidates or data.draw(st.integers(0, 3), label="any top-up") == 0:
            candidates = list(self.state.topups)
        tid = self.pick(data, candidates, "top-up")
        t = self.state.topups[tid]
        credited_before = dict(self.state.topup_payments)
        if what == "invoice":
            self.run(c.RecordInvoice(topup_id=tid, invoice_id=f"inv-{tid}", checkout_url="u"))
        elif what == "observe" and data.draw(st.booleans(), label="as asked"):
            # The common case: the gateway says this top-up's own payment is paid: exactly,
            # for a halala less, or in another currency (disputed).
            paid = data.draw(st.sampled_from(["exact", "short", "exact", "usd"]), label="paid")
            self.run(
                c.ObserveTopUp(
                    topup_id=tid,
                    source=data.draw(st.sampled_from(["webhook", "sweep"])),
                    payment_id=f"pay-{tid}",
                    payment_status="paid",
                    amount_halala=t.amount_halala - (paid == "short"),
                    currency="USD" if paid == "usd" else "SAR",
                )
            )
        elif what == "observe":
            self.run(
                c.ObserveTopUp(
                    topup_id=tid,
                    source=data.draw(st.sampled_from(["webhook", "sweep"])),
                    invoice_status=data.draw(
                        st.sampled_from(["", "initiated", "paid", "failed", "expired"])
                    ),
                    payment_id=data.draw(st.sampled_from(["", "pay-1", "pay-2", f"pay-{tid}"])),
                    payment_status=data.draw(st.sampled_from(["paid", "paid", "failed", "x"])),
                    amount_halala=data.draw(st.sampled_from([1, t.amount_halala, 5_000])),
                    currency=data.draw(st.sampled_from(["USD", "SAR", "sar"])),
                )
            )
        elif what == "refund":
            if t.status == "pending":  # paid first, so refunds are common
                self.run(
                    c.ObserveTopUp(
                        topup_id=tid,
                        payment_id=f"pay-{tid}",
                        payment_status="paid",
                        amount_halala=t.amount_halala,
                        currency="SAR",
                    )
                )
            self.run(c.RefundTopUp(topup_id=tid))
            if t.status == "refunding":
                # The gateway answers at once: confirmed, refused, or not yet, by the top-up's
                # number, so the run sees all three. Not in turn from a counter across
                # programs: a replay of the same choices must take the same path (hypothesis
                # fails such a program as FlakyStrategyDefinition).
                turn = (int(tid.removeprefix("t")) + 2) % 3
                if turn:
                    self.run(c.SettleRefund(topup_id=tid, succeeded=turn == 1))
        else:
            self.run(c.SettleRefund(topup_id=tid, succeeded=data.draw(st.booleans())))
        for payment_id, owner in credited_before.items():
            assert self.state.topup_payments[payment_id] == owner, "a payment moved top-ups"

    # --- providers ---------------------------------------------------------------------------

    def register_provider(self, data):
        pid = self.new_id("p")
        self.run(
            c.RegisterProvider(
                provider_id=pid,
                name="box",
                email=f"{pid}@x.sa",
                gpu_model=data.draw(st.sampled_from(PROVIDER_GPUS), label="gpu"),
                gpu_count=data.draw(st.integers(1, 4), label="count"),
                vram_gb=80,
                key_hash=pid,
            )
        )

    def provider_flag(self, data):
        flag = data.draw(
            st.sampled_from(["approve", "suspend", "unsuspend", "pause", "resume"]), label="flag"
        )
        # Mostly a provider the flag changes (suspended ones for "unsuspend", ...).
        changes = {
            "approve": lambda p: not p.approved,
            "suspend": lambda p: not p.suspended,
            "unsuspend": lambda p: p.suspended,
            "pause": lambda p: not p.paused,
            "resume": lambda p: p.paused,
        }[flag]
        candidates = [p for p, prov in self.state.providers.items() if changes(prov)]
        if not candidates or data.draw(st.integers(0, 3), label="any provider") == 0:
            candidates = list(self.state.providers)
        pid = self.pick(data, candidates, "provider")
        self.run(c.SetProviderFlag(provider_id=pid, flag=flag))

    def heartbeat(self, data):
        """A heartbeat listing some of its leases (the rest may expire) and maybe a stranger."""
        pid = self.pick(data, self.state.providers, "provider")
        leased = sorted(self.state.providers[pid].leased)
        running = data.draw(st.lists(st.sampled_from(leased), unique=True)) if leased else []
        if self.state.jobs and data.draw(st.booleans(), label="stranger"):
            running.append(self.pick(data, self.state.jobs, "job"))
        self.run(
            c.Heartbeat(
                provider_id=pid,
                running_job_ids=tuple(running),
                accepting_jobs=data.draw(st.sampled_from([True, True, False])),
                gpus=(ev.GpuInfo(model="H100", vram_total_mb=81920),),
            )
        )

    # --- platform ----------------------------------------------------------------------------

    def set_price(self, data):
        gpu = data.draw(st.sampled_from([*JOB_GPUS, "default"]), label="gpu")
        price = data.draw(st.integers(0, 2000), label="price")
        self.run(c.SetPrice(gpu_model=gpu, halala_per_gpu_hour=price))

    def allowlist(self, data):
        image = data.draw(st.sampled_from(IMAGES), label="image")
        if data.draw(st.booleans(), label="allow"):
            self.run(c.AllowImage(reference=image))
        else:
            self.run(c.RemoveImage(reference=image))

    # --- jobs --------------------------------------------------------------------------------

    def submit(self, data):
        """Submits of every shape: disallowed images, bad durations, overdrawing reserves,
        pinned providers, repeated idempotency keys."""
        renter = self.pick(data, self.state.renters, "renter")
        pinned = None
        if data.draw(st.integers(0, 3), label="pin") == 0:
            pinned = self.pick(data, self.state.providers, "provider")
        image = data.draw(
            st.sampled_from(["img/a:1", "img/a:1", "img/b:2", "repo/x:3", "evil:1"]), label="img"
        )
        gpu = data.draw(st.sampled_from(JOB_GPUS), label="gpu")
        self.run(
            c.SubmitJob(
                job_id=self.new_id("j"),
                renter_id=renter,
                container_spec=ev.ContainerSpec(image=image, command=("run",)),
                gpu_requirements=ev.GpuRequirements(
                    gpu_type=gpu, gpu_count=data.draw(st.sampled_from([1, 1, 2, 3]))
                ),
                priority=data.draw(st.sampled_from(["priority", "standard", "economy"])),
                max_duration_seconds=data.draw(
                    st.sampled_from([600, 3600, 60, 600, 3600, 86400, 600, 59])
                ),
                provider_id=pinned,
                idempotency_key=data.draw(st.sampled_from([None, None, "k1", "k2"])),
            )
        )

    def cancel(self, data):
        """Cancels by the owner, an admin or a stranger, at any point of a job's life."""
        job = self.state.jobs[self.pick(data, self.state.jobs, "job")]
        by = data.draw(st.sampled_from(["owner", "owner", "admin", "stranger"]), label="by")
        renter = {"owner": job.renter_id, "admin": None, "stranger": "nobody"}[by]
        self.run(c.CancelJob(job_id=job.job_id, renter_id=renter))

    def worker_round(self, data):
        """Every worker does what a healthy one does: heartbeat and poll, then start, run and
        report some of its jobs, with any outcome."""
        for pid in sorted(self.state.providers):
            running = tuple(sorted(self.state.providers[pid].leased))
            self.run(c.Heartbeat(provider_id=pid, running_job_ids=running))
            self.run(c.ClaimJobs(provider_id=pid))
        self.now_us += data.draw(st.sampled_from([0, 5, 65, 130, 1800]), label="seconds") * S
        for pid in sorted(self.state.providers):
            for job_id in sorted(self.state.providers[pid].leased):
                job = self.state.jobs[job_id]
                action = data.draw(st.sampled_from(["report", "start", "report", "wait"]))
                if action == "wait":
                    continue
                if action == "start" or data.draw(st.booleans(), label="start first"):
                    self.run(c.StartJob(provider_id=pid, job_id=job_id, attempt=job.attempt))
                if action == "report":
                    self.report(data, pid, job_id, job.attempt)

    def report(self, data, pid, job_id, attempt):
        report = c.ReportResult(
            provider_id=pid,
            job_id=job_id,
            attempt=attempt,
            outcome=data.draw(st.sampled_from(OUTCOMES), label="outcome"),
            exit_code=data.draw(st.sampled_from([0, 1, None]), label="exit"),
            runtime_seconds=data.draw(
                st.one_of(
                    st.sampled_from([600, 30, 4000, 100_000, 0]),
                    st.integers(0, 100_000),
                    st.floats(0, 5000),
                ),
                label="runtime",
            ),
            stdout="out",
            error="gpu fell off the bus",
        )
        self.reports.append(report)
        self.run(report)

    def late_report(self, data):
        """A result from any attempt that ever held a lease: stale, for an ended or requeued
        job, or from the provider that lost the lease."""
        held = [j for j, job in self.state.jobs.items() if job.leases]
        if not held:
            return
        job = self.state.jobs[self.pick(data, held, "job")]
        attempt, pid = data.draw(st.sampled_from(sorted(job.leases.items())), label="lease")
        if data.draw(st.booleans(), label="start instead"):
            self.run(c.StartJob(provider_id=pid, job_id=job.job_id, attempt=attempt))
        else:
            self.report(data, pid, job.job_id, attempt)

    def repeat_report(self, data):
        """A retried result, identical to one already sent: never settles twice."""
        if not self.reports:
            return
        report = self.reports[data.draw(st.integers(0, len(self.reports) - 1), label="which")]
        job = self.state.jobs[report.job_id]
        before = dict(self.state.balances)
        ended_before = job.status in ENDED
        events = self.run(report)
        if ended_before:
            assert events == [] and self.state.balances == before

    def requeue(self, data):
        self.run(c.RequeueJob(job_id=self.pick(data, self.state.jobs, "job")))

    # --- withdrawals -------------------------------------------------------------------------

    def withdraw(self, data):
        richest = max(sorted(self.state.providers), key=self.state.earnings)
        pid = data.draw(st.sampled_from([richest, richest, *sorted(self.state.providers)]))
        earned = self.state.earnings(pid)
        amount = data.draw(st.sampled_from([earned, 1000, earned + 1, 500]), label="amount")
        iban = data.draw(st.sampled_from([IBAN_OK, IBAN_OK, IBAN_BAD]), label="iban")
        wid = self.new_id("w")
        self.run(
            c.RequestWithdrawal(withdrawal_id=wid, provider_id=pid, amount_halala=amount, iban=iban)
        )
        if wid in self.state.withdrawals and data.draw(st.booleans(), label="decide now"):
            self.run(c.DecideWithdrawal(withdrawal_id=wid, approve=data.draw(st.booleans())))

    def payday(self, data):
        """Every provider with enough earnings withdraws them all; an admin decides at once."""
        for pid in sorted(self.state.providers):
            earned = self.state.earnings(pid)
            if earned < SETTINGS.min_withdrawal_halala:
                continue
            wid = self.new_id("w")
            self.run(
                c.RequestWithdrawal(
                    withdrawal_id=wid, provider_id=pid, amount_halala=earned, iban=IBAN_OK
                )
            )
            self.run(c.DecideWithdrawal(withdrawal_id=wid, approve=data.draw(st.booleans())))

    def decide_withdrawal(self, data):
        if not self.state.withdrawals:
            return
        wid = self.pick(data, self.state.withdrawals, "withdrawal")
        self.run(c.DecideWithdrawal(withdrawal_id=wid, approve=data.draw(st.booleans())))

    # --- time --------------------------------------------------------------------------------

    def advance_clock_and_sweep(self, data):
        """Time passes (leases run out, deadlines and queue timeouts pass), then a sweep."""
        seconds = data.draw(st.sampled_from([1, 61, 121, 700, 3700, 5 * 3600]), label="seconds")
        self.now_us += seconds * S
        attempts = {j: job.attempt for j, job in self.state.jobs.items()}
        self.run(c.Sweep())
        # Sweeping again at the same instant ends what the first sweep requeued past its
        # queue timeout, at most; then nothing is left, and no attempt moved twice.
        self.run(c.Sweep())
        assert self.run(c.Sweep()) == []
        for j, attempt in attempts.items():
            assert self.state.jobs[j].attempt <= attempt + 1

    # --- checks ------------------------------------------------------------------------------

    @invariant()
    def money_rules_hold(self):
        check_all(self.state)
        self.steps += 1
        if self.steps % 20 == 0:
            self.replay_reproduces_state()

    def replay_reproduces_state(self):
        replayed = State()
        for seq, type_, version, payload in self.log:
            apply(replayed, seq, CODEC.decode_payload(type_, version, payload))
        check_all(replayed)
        assert replayed.seq == self.state.seq
        assert replayed.balances == self.state.balances
        assert replayed.queue == self.state.queue
        assert all_rows(replayed) == all_rows(self.state)
        # What "state" means once ended jobs leave memory: the same live part (balances,
        # accounts, queue, every job not ended), and each ended job it still holds equal to
        # the full fold's. The twin that decided along, and a bounded replay, both hold that.
        trimmed = State(ended_cap=1, history_cap=1)
        for seq, type_, version, payload in self.log:
            event = CODEC.decode_payload(type_, version, payload)
            if isinstance(event, ev.JobRequeued) and event.job_id not in trimmed.jobs:
                recall(trimmed, self.streams, event.job_id, event.renter_id)
            apply(trimmed, seq, event)
            trimmed.trim_ended()
            trimmed.trim_history()
        for bounded in (self.bounded, trimmed):
            check_all(bounded)
            assert len(bounded.ended) <= 1
            assert bounded.balances == self.state.balances
            assert list(bounded.queue) == list(self.state.queue)
            assert all_rows(bounded)["renters"] == all_rows(self.state)["renters"]
            assert all_rows(bounded)["providers"] == all_rows(self.state)["providers"]
            live = {j for j, job in self.state.jobs.items() if job.status not in ENDED}
            assert live <= bounded.jobs.keys()
            for job_id, job in bounded.jobs.items():
                assert job == self.state.jobs[job_id]
            assert len(bounded.deposit_refs) <= 1 and len(bounded.decided) <= 1
            assert bounded.deposits_halala == self.state.deposits_halala
            for ref, credit in bounded.deposit_refs.items():
                assert credit == self.state.deposit_refs[ref]
            pending = {w for w, x in self.state.withdrawals.items() if x.status == "pending"}
            assert pending <= bounded.withdrawals.keys()
            for wid, w in bounded.withdrawals.items():
                assert w == self.state.withdrawals[wid]

    def teardown(self):
        self.replay_reproduces_state()
        SEEN.update(self.seen)


def recall_row(bounded: State, full: State, command: c.Command) -> None:
    """Read back what `command` names and `bounded` let go of, from the full state (which holds
    what the read models do), as the service reads it from the read models."""
    wanted = row_to_recall(bounded, command)
    if wanted is None:
        return
    kind, key = wanted
    if kind == "deposit":
        ref = full.deposit_refs.get(key)
        if ref is not None:
            bounded.recall_deposit(key, ref)
    else:
        w = full.withdrawals.get(key)
        if w is not None:  # a copy, as a row read back is: the folds change entities in place
            bounded.recall_withdrawal(msgspec.structs.replace(w))


def recall(state: State, streams, job_id: str, renter_id: str) -> None:
    """Fold `job_id` back from its renter's stream (the log up to `state.seq`)."""
    events = [(s, e) for s, e in streams.get(renter_stream(renter_id), []) if s <= state.seq]
    job = job_from_stream(events, job_id)
    if job is not None:
        state.recall(job)


SEEN: set[str] = set()
NEEDS_JOBS = {Ledger.cancel, Ledger.requeue, Ledger.heartbeat}
ACTIONS = [
    *[Ledger.submit] * 6,
    *[Ledger.worker_round] * 6,
    *[Ledger.cancel] * 2,
    *[Ledger.late_report] * 2,
    *[Ledger.repeat_report] * 2,
    *[Ledger.advance_clock_and_sweep] * 2,
    *[Ledger.requeue] * 2,
    *[Ledger.withdraw] * 2,
    *[Ledger.payday] * 3,
    Ledger.heartbeat,
    # A top-up's and a withdrawal's lives take several steps each: weighted so that every
    # run reaches their every ending (the coverage check below).
    *[Ledger.decide_withdrawal] * 2,
    *[Ledger.credit] * 2,  # repeats reach references that left the twin's memory
    Ledger.topup,
    *[Ledger.gateway] * 4,
    Ledger.register_renter,
    Ledger.register_provider,
    *[Ledger.provider_flag] * 2,
    Ledger.set_price,
    Ledger.allowlist,
]

Ledger.TestCase.settings = settings.get_profile("dcp-state-machine")
TestLedger = Ledger.TestCase


def test_the_machine_reached_every_event_type():
    """The programs above produced every event of the catalogue (runs after TestLedger)."""
    if not SEEN or os.environ.get("HYPOTHESIS_PROFILE") != "ci":
        pytest.skip("needs the state machine's full CI run first")
    assert set(CODEC.types) == SEEN, f"never produced: {sorted(set(CODEC.types) - SEEN)}"
