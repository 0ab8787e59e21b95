"""Folding events into the domain state, with the money rules asserted after every event.

`apply(state, seq, event)` changes `state` in place and returns it; `project(state, events)`
is the plain loop over it. A fold never decides anything: every number it needs (lease expiry,
next attempt, settlement) is in the event. After each event it checks the invariants of SPEC
section 2 for what the event touched (its postings are the legs `dcp_projections.money` builds
for it and balance, so the sum of balances stays 0; nothing that must not be negative is;
held == the reserves of unsettled jobs; no hold is settled twice) and raises InvariantError on
a violation; `check_all` checks everything from scratch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

from dcp_events import catalogue as ev
from dcp_events.event import Event
from dcp_projections import ledger, money, topups
from dcp_projections.errors import InvariantError
from dcp_projections.jobs import submit_fingerprint
from dcp_projections.pricing import gpu_price, job_gpu_key, may_run_on
from dcp_projections.settlement import settlement_is_consistent
from dcp_projections.state import (
    ENDED,
    LEASED,
    PRIORITY_RANK,
    Credential,
    DepositRef,
    Job,
    Price,
    Provider,
    Renter,
    State,
    Withdrawal,
    gpu_key,
)


def project(state: State, events: Iterable[tuple[int, Event]]) -> State:
    """Fold `(seq, event)` pairs into `state` in order; returns `state`."""
    for seq, event in events:
        apply(state, seq, event)
    return state


def apply(state: State, seq: int, event: Event) -> State:
    """Fold one event recorded at `seq` into `state` (in place) and check the invariants.

    Raises InvariantError if the event breaks a money rule or does not fit the state (an
    unknown job, a hold settled twice); the state is then unusable and must be rebuilt.
    """
    if seq <= state.seq:
        raise InvariantError(f"event seq {seq} is not after {state.seq}")
    state.seq = seq
    # One dict look-up on the exact type: an if-chain of `type(event) is` tests cost 2.3 tests
    # for the average event of a simulated log (heartbeats first), and a `match` with class
    # patterns an isinstance() per case tried, dearer still for msgspec Struct types.
    try:
        fold = _FOLDS[type(event)]
    except KeyError:
        fold = topups.fold  # raises InvariantError for a type no fold knows
    fold(state, seq, event)
    return state


# --- renters -------------------------------------------------------------------------------


def _renter_registered(state: State, seq: int, e: ev.RenterRegistered) -> None:
    if e.renter_id in state.renters:
        raise InvariantError(f"seq {seq}: renter {e.renter_id} registered twice")
    state.renters[e.renter_id] = Renter(
        renter_id=e.renter_id, name=e.name, email=e.email, created_at_us=e.at_us, last_seq=seq
    )
    state.credentials[e.key_hash] = Credential(e.key_hash, "renter", e.renter_id, seq)
    state.touched.add(("renter", e.renter_id))
    state.touched.add(("credential", e.key_hash))


def _renter(state: State, seq: int, renter_id: str) -> Renter:
    renter = state.renters.get(renter_id)
    if renter is None:
        raise InvariantError(f"seq {seq}: unknown renter {renter_id}")
    return renter


def _deposit_credited(state: State, seq: int, e: ev.DepositCredited) -> None:
    _renter(state, seq, e.renter_id)
    # A bounded state (history_cap) sees only the references in memory; the decision looked
    # the older ones up, and the unbounded fold of an audit checks them all.
    if e.reference in state.deposit_refs:
        raise InvariantError(f"seq {seq}: deposit reference {e.reference!r} credited twice")
    state.deposit_refs[e.reference] = DepositRef(e.renter_id, e.amount_halala, seq)
    state.deposits_halala += e.amount_halala
    state.touched.add(("deposit", e.reference))
    money.post(state, seq, e.postings, money.credit(e.renter_id, e.amount_halala))


def _sandbox_topped_up(state: State, seq: int, e: ev.SandboxToppedUp) -> None:
    _renter(state, seq, e.renter_id)
    money.post(state, seq, e.postings, money.sandbox_credit(e.renter_id, e.amount_halala))


# --- providers -----------------------------------------------------------------------------


def _provider(state: State, seq: int, provider_id: str) -> Provider:
    provider = state.providers.get(provider_id)
    if provider is None:
        raise InvariantError(f"seq {seq}: unknown provider {provider_id}")
    provider.last_seq = seq
    state.touched.add(("provider", provider_id))
    return provider


def _provider_registered(state: State, seq: int, e: ev.ProviderRegistered) -> None:
    if e.provider_id in state.providers:
        raise InvariantError(f"seq {seq}: provider {e.provider_id} registered twice")
    state.providers[e.provider_id] = Provider(
        provider_id=e.provider_id,
        name=e.name,
        email=e.email,
        gpu_model=e.gpu_model,
        gpu_count=e.gpu_count,
        vram_gb=e.vram_gb,
        approved=e.approved,
        created_at_us=e.at_us,
        last_seq=seq,
    )
    state.credentials[e.key_hash] = Credential(e.key_hash, "provider", e.provider_id, seq)
    state.touched.add(("provider", e.provider_id))
    state.touched.add(("credential", e.key_hash))


def _heartbeat(state: State, seq: int, e: ev.ProviderHeartbeat) -> None:
    # Half the events of a log: `_provider` and `_touch_job` inline, the look-ups made once.
    provider_id = e.provider_id
    p = state.providers.get(provider_id)
    if p is None:
        raise InvariantError(f"seq {seq}: unknown provider {provider_id}")
    p.last_seq = seq
    touched = state.touched
    touched.add(("provider", provider_id))
    p.last_heartbeat_us = e.at_us
    # A heartbeat mostly repeats what the last one said, and CPython 3.11 does not specialise
    # a store into a msgspec Struct (its own tp_setattro) as it does a load: store only what
    # changed (an equal value left in place is the same state).
    if p.gpus != e.gpus:
        p.gpus = e.gpus
    if p.accepting_jobs is not e.accepting_jobs:
        p.accepting_jobs = e.accepting_jobs
    if p.daemon_version != e.daemon_version:
        p.daemon_version = e.daemon_version
    jobs = state.jobs
    for r in e.renewals:
        job = jobs.get(r.job_id)
        # The decision only renews live leases of this provider; check it anyway.
        if (
            job is None
            or job.provider_id != provider_id
            or job.attempt != r.attempt
            or job.status not in LEASED
        ):
            raise InvariantError(f"seq {seq}: renewal of a lease {r.job_id} does not hold")
        job.lease_expires_us = r.lease_expires_us
        job.last_seq = seq
        touched.add(("job", r.job_id))


# --- platform ------------------------------------------------------------------------------


def _price_set(state: State, seq: int, e: ev.PriceSet) -> None:
    key = gpu_key(e.gpu_model)
    old = state.pricing.get(key)
    name = old.gpu_model if old is not None else e.gpu_model
    state.pricing[key] = Price(
        gpu_model=name, halala_per_gpu_hour=e.halala_per_gpu_hour, last_seq=seq
    )
    state.touched.add(("price", key))


# --- jobs ----------------------------------------------------------------------------------


def _touch_job(state: State, seq: int, job: Job) -> None:
    job.last_seq = seq
    state.touched.add(("job", job.job_id))


def _job(state: State, seq: int, job_id: str, renter_id: str) -> Job:
    job = state.jobs.get(job_id)
    if job is None or job.renter_id != renter_id:
        raise InvariantError(f"seq {seq}: unknown job {job_id} of renter {renter_id}")
    job.last_seq = seq  # _touch_job, inline: this runs for most events
    state.touched.add(("job", job_id))
    return job


def _release_lease(state: State, job: Job) -> None:
    """The job no longer occupies its provider's GPUs."""
    provider_id = job.provider_id
    if provider_id is None:
        return
    p = state.providers.get(provider_id)
    if p is not None:
        leased = p.leased
        job_id = job.job_id
        if job_id in leased:
            leased.remove(job_id)
            p.leased_gpus -= job.gpu_requirements.gpu_count
    job.lease_expires_us = None


def _job_submitted(state: State, seq: int, e: ev.JobSubmitted) -> None:
    renter_id = e.renter_id
    renter = _renter(state, seq, renter_id)
    job_id = e.job_id
    jobs = state.jobs
    if job_id in jobs:
        raise InvariantError(f"seq {seq}: job {job_id} submitted twice")
    at_us = e.at_us
    spec, needs = state.shared(e.container_spec, e.gpu_requirements)
    # Positional, in the order of Job's fields (a test folds a submission and checks each
    # field by name): msgspec matches 19 keywords at about four times the cost.
    job = Job(
        job_id,  # job_id
        renter_id,  # renter_id
        "queued",  # status
        spec,  # container_spec (shared with equal ones: State.shared)
        needs,  # gpu_requirements
        e.priority,  # priority
        e.max_duration_seconds,  # max_duration_seconds
        e.requested_provider_id,  # requested_provider_id
        e.idempotency_key,  # idempotency_key
        e.price_halala_per_gpu_hour,  # price_halala_per_gpu_hour
        e.rate_halala_per_hour,  # rate_halala_per_hour
        e.cost_halala,  # cost_halala
        at_us,  # submitted_at_us
        seq,  # submit_seq
        at_us,  # queued_at_us
        e.attempt,  # attempt
        job_gpu_key(e.gpu_requirements.gpu_type),  # gpu_key
        e.attempt,  # first_attempt
        seq,  # last_seq
    )
    jobs[job_id] = job
    state.enqueue(job)
    if e.idempotency_key is not None:
        terms = submit_fingerprint(
            e.container_spec, e.gpu_requirements, e.priority, e.max_duration_seconds,
            e.requested_provider_id,
        )  # fmt: skip
        state.remember_key(renter_id, e.idempotency_key, job_id, at_us, terms)
    renter.held_reserves_halala += e.cost_halala
    state.touched.add(("job", job_id))
    money.post_hold(state, seq, e.postings, renter_id, e.cost_halala)


def _job_claimed(state: State, seq: int, e: ev.JobClaimed) -> None:
    # _job and _provider inline, in their order (a tenth of the events each, as for starts).
    job_id = e.job_id
    job = state.jobs.get(job_id)
    if job is None or job.renter_id != e.renter_id:
        raise InvariantError(f"seq {seq}: unknown job {job_id} of renter {e.renter_id}")
    job.last_seq = seq
    touched = state.touched
    touched.add(("job", job_id))
    provider_id = e.provider_id
    p = state.providers.get(provider_id)
    if p is None:
        raise InvariantError(f"seq {seq}: unknown provider {provider_id}")
    p.last_seq = seq
    touched.add(("provider", provider_id))
    if job.status != "queued" or e.attempt != job.attempt:
        raise InvariantError(f"seq {seq}: claim of {job.job_id} ({job.status}, {job.attempt})")
    # None: a v1 claim, from before the rule.
    if e.gpu_price_halala_per_gpu_hour is not None and state.cross_stream_checks:
        price = gpu_price(state, p.gpu_model)
        if e.gpu_price_halala_per_gpu_hour != price or not may_run_on(
            job.gpu_key, job.price_halala_per_gpu_hour, p.gpu_model, price
        ):
            raise InvariantError(
                f"seq {seq}: {job.job_id} at {job.price_halala_per_gpu_hour}/GPU-h claimed "
                f"by a {p.gpu_model!r} GPU at {price} (the claim says "
                f"{e.gpu_price_halala_per_gpu_hour})"
            )
    state.dequeue(job)
    job.status = "assigned"
    job.provider_id = provider_id
    job.lease_expires_us = e.lease_expires_us
    job.assigned_at_us = e.at_us
    if job.started_at_us is not None:  # None while queued; a Struct store costs (_heartbeat)
        job.started_at_us = None
    job.leases[e.attempt] = provider_id
    p.leased.add(job_id)
    p.leased_gpus += job.gpu_requirements.gpu_count


def _job_started(state: State, seq: int, e: ev.JobStarted) -> None:
    job_id = e.job_id  # _job inline
    job = state.jobs.get(job_id)
    if job is None or job.renter_id != e.renter_id:
        raise InvariantError(f"seq {seq}: unknown job {job_id} of renter {e.renter_id}")
    job.last_seq = seq
    state.touched.add(("job", job_id))
    if job.status != "assigned" or e.attempt != job.attempt or e.provider_id != job.provider_id:
        raise InvariantError(f"seq {seq}: start of {job.job_id} ({job.status}, {job.attempt})")
    job.status = "running"
    job.started_at_us = e.at_us


Ended = Literal["completed", "timed_out", "cancelled", "failed"]


def _settle(
    state: State,
    seq: int,
    job: Job,
    status: Ended,
    settlement: ev.Settlement,
    provider_id: str | None,
    postings: money.Legs,
    at_us: int,
) -> None:
    """End `job` as `status`, settling its open hold exactly once."""
    if not job.hold_open:
        raise InvariantError(f"seq {seq}: job {job.job_id} settled twice")
    was = job.status
    if was in ENDED:
        raise InvariantError(f"seq {seq}: job {job.job_id} already ended as {was}")
    cost = job.cost_halala
    if not settlement_is_consistent(cost, settlement):
        raise InvariantError(f"seq {seq}: inconsistent settlement {settlement}")
    if was == "queued":
        state.dequeue(job)
    else:
        _release_lease(state, job)
    job.hold_open = False
    job.status = status
    job.settlement = settlement
    job.ended_at_us = at_us
    renter_id = job.renter_id
    state.renters[renter_id].held_reserves_halala -= cost
    state.job_ended(job)
    money.post_settle(state, seq, postings, renter_id, provider_id, cost, settlement)


def _check_lease(seq: int, job: Job, attempt: int, provider_id: str | None) -> None:
    if job.status not in LEASED or job.attempt != attempt or job.provider_id != provider_id:
        raise InvariantError(
            f"seq {seq}: {job.job_id} attempt {attempt} by {provider_id} does not hold the lease"
        )


def _record_result(job: Job, attempt: int, fingerprint: str) -> None:
    if fingerprint:
        job.results[attempt] = fingerprint


def _job_completed(state: State, seq: int, e: ev.JobCompleted) -> None:
    job_id = e.job_id  # _job and _record_result inline
    job = state.jobs.get(job_id)
    if job is None or job.renter_id != e.renter_id:
        raise InvariantError(f"seq {seq}: unknown job {job_id} of renter {e.renter_id}")
    job.last_seq = seq
    state.touched.add(("job", job_id))
    if e.result_fingerprint:
        job.results[e.attempt] = e.result_fingerprint
    _check_lease(seq, job, e.attempt, e.provider_id)
    _settle(state, seq, job, "completed", e.settlement, e.provider_id, e.postings, e.at_us)
    job.output = e.output


def _job_timed_out(state: State, seq: int, e: ev.JobTimedOut) -> None:
    job = _job(state, seq, e.job_id, e.renter_id)
    _record_result(job, e.attempt, e.result_fingerprint)
    _check_lease(seq, job, e.attempt, e.provider_id)
    _settle(state, seq, job, "timed_out", e.settlement, e.provider_id, e.postings, e.at_us)
    job.output = e.output


def _job_cancelled(state: State, seq: int, e: ev.JobCancelled) -> None:
    job = _job(state, seq, e.job_id, e.renter_id)
    _record_result(job, e.attempt, e.result_fingerprint)
    if job.status in LEASED:
        _check_lease(seq, job, e.attempt, e.provider_id)
    _settle(state, seq, job, "cancelled", e.settlement, e.provider_id, e.postings, e.at_us)
    job.output = e.output


def _job_attempt_failed(state: State, seq: int, e: ev.JobAttemptFailed) -> None:
    job = _job(state, seq, e.job_id, e.renter_id)
    _record_result(job, e.attempt, e.result_fingerprint)
    _check_lease(seq, job, e.attempt, e.provider_id)
    _requeue(state, job, e.next_attempt)
    job.error = e.error


def _requeue(state: State, job: Job, next_attempt: int) -> None:
    if next_attempt <= job.attempt:
        raise InvariantError(f"{job.job_id}: attempt {next_attempt} does not move forward")
    _release_lease(state, job)
    job.status = "queued"
    job.attempt = next_attempt
    job.assigned_at_us = None
    job.started_at_us = None
    state.enqueue(job)


def _job_failed(state: State, seq: int, e: ev.JobFailed) -> None:
    job = _job(state, seq, e.job_id, e.renter_id)
    _record_result(job, e.attempt, e.result_fingerprint)
    if job.status in LEASED:
        _check_lease(seq, job, e.attempt, e.provider_id)
    _settle(state, seq, job, "failed", e.settlement, e.provider_id, e.postings, e.at_us)
    job.error = e.error or e.reason
    if e.output is not None:
        job.output = e.output


def _job_lease_expired(state: State, seq: int, e: ev.JobLeaseExpired) -> None:
    job = _job(state, seq, e.job_id, e.renter_id)
    _check_lease(seq, job, e.attempt, e.provider_id)
    if e.requeued:
        if e.next_attempt is None or e.postings:
            raise InvariantError(f"seq {seq}: a requeue moves no money and names its attempt")
        _requeue(state, job, e.next_attempt)
        return
    if e.settlement is None:
        raise InvariantError(f"seq {seq}: a failing lease expiry needs its settlement")
    _settle(state, seq, job, "failed", e.settlement, e.provider_id, e.postings, e.at_us)
    job.error = "lease_expired"


def _job_requeued(state: State, seq: int, e: ev.JobRequeued) -> None:
    job = _job(state, seq, e.job_id, e.renter_id)
    if job.status != "failed" or job.hold_open:
        raise InvariantError(f"seq {seq}: requeue of {job.job_id} that is {job.status}")
    if e.cost_halala != job.cost_halala or e.attempt <= job.attempt:
        raise InvariantError(f"seq {seq}: requeue of {job.job_id} re-priced or re-fenced")
    job.status = "queued"
    job.hold_open = True
    job.holds += 1
    job.attempt = e.attempt
    job.first_attempt = e.attempt
    job.queued_at_us = e.at_us
    job.assigned_at_us = None
    job.started_at_us = None
    job.ended_at_us = None
    job.settlement = None
    job.output = None
    job.error = None
    state.job_reopened(job)
    state.enqueue(job)
    state.renters[job.renter_id].held_reserves_halala += job.cost_halala
    money.post_hold(state, seq, e.postings, e.renter_id, e.cost_halala)


# --- withdrawals ---------------------------------------------------------------------------


def _withdrawal_requested(state: State, seq: int, e: ev.WithdrawalRequested) -> None:
    _provider(state, seq, e.provider_id)
    if e.withdrawal_id in state.withdrawals:
        raise InvariantError(f"seq {seq}: withdrawal {e.withdrawal_id} requested twice")
    state.withdrawals[e.withdrawal_id] = Withdrawal(
        withdrawal_id=e.withdrawal_id,
        provider_id=e.provider_id,
        amount_halala=e.amount_halala,
        iban=e.iban,
        status="pending",
        requested_at_us=e.at_us,
        last_seq=seq,
    )
    state.touched.add(("withdrawal", e.withdrawal_id))
    money.post(state, seq, e.postings, money.withdraw(e.provider_id, e.amount_halala))


def _decide_withdrawal(state: State, seq: int, withdrawal_id: str, at_us: int) -> Withdrawal:
    w = state.withdrawals.get(withdrawal_id)
    if w is None or w.status != "pending":
        raise InvariantError(f"seq {seq}: withdrawal {withdrawal_id} is not pending")
    w.decided_at_us = at_us
    w.last_seq = seq
    state.touched.add(("withdrawal", withdrawal_id))
    return w


def _withdrawal_completed(state: State, seq: int, e: ev.WithdrawalCompleted) -> None:
    w = _decide_withdrawal(state, seq, e.withdrawal_id, e.at_us)
    w.status = "completed"
    state.withdrawal_decided(w)
    money.post(state, seq, e.postings, money.pay_out(w.provider_id, w.amount_halala))


def _withdrawal_rejected(state: State, seq: int, e: ev.WithdrawalRejected) -> None:
    w = _decide_withdrawal(state, seq, e.withdrawal_id, e.at_us)
    w.status = "rejected"
    state.withdrawal_decided(w)
    money.post(state, seq, e.postings, money.return_withdrawal(w.provider_id, w.amount_halala))


def _provider_approved(state: State, seq: int, e: ev.ProviderApproved) -> None:
    _provider(state, seq, e.provider_id).approved = True


def _provider_suspended(state: State, seq: int, e: ev.ProviderSuspended) -> None:
    _provider(state, seq, e.provider_id).suspended = True


def _provider_unsuspended(state: State, seq: int, e: ev.ProviderUnsuspended) -> None:
    _provider(state, seq, e.provider_id).suspended = False


def _provider_paused(state: State, seq: int, e: ev.ProviderPaused) -> None:
    _provider(state, seq, e.provider_id).paused = True


def _provider_resumed(state: State, seq: int, e: ev.ProviderResumed) -> None:
    _provider(state, seq, e.provider_id).paused = False


def _image_allowed(state: State, seq: int, e: ev.ImageAllowed) -> None:
    state.images[e.reference] = seq
    state.touched.add(("image", e.reference))


def _image_removed(state: State, seq: int, e: ev.ImageRemoved) -> None:
    state.images.pop(e.reference, None)
    state.touched.add(("image", e.reference))


# Exact event type -> its fold; the top-up events (and any type no fold knows) go to
# dcp_projections.topups.fold.
_FOLDS: dict[type[Event], Callable[[State, int, Any], None]] = {
    ev.ProviderHeartbeat: _heartbeat,
    ev.JobSubmitted: _job_submitted,
    ev.JobClaimed: _job_claimed,
    ev.JobStarted: _job_started,
    ev.JobCompleted: _job_completed,
    ev.DepositCredited: _deposit_credited,
    ev.JobCancelled: _job_cancelled,
    ev.JobAttemptFailed: _job_attempt_failed,
    ev.SandboxToppedUp: _sandbox_topped_up,
    ev.JobFailed: _job_failed,
    ev.JobTimedOut: _job_timed_out,
    ev.JobRequeued: _job_requeued,
    ev.PriceSet: _price_set,
    ev.JobLeaseExpired: _job_lease_expired,
    ev.RenterRegistered: _renter_registered,
    ev.ProviderRegistered: _provider_registered,
    ev.ProviderApproved: _provider_approved,
    ev.ProviderSuspended: _provider_suspended,
    ev.ProviderUnsuspended: _provider_unsuspended,
    ev.ProviderPaused: _provider_paused,
    ev.ProviderResumed: _provider_resumed,
    ev.ImageAllowed: _image_allowed,
    ev.ImageRemoved: _image_removed,
    ev.WithdrawalRequested: _withdrawal_requested,
    ev.WithdrawalCompleted: _withdrawal_completed,
    ev.WithdrawalRejected: _withdrawal_rejected,
}


def check_all(state: State) -> None:
    """Check every invariant over the whole state (O(size)); raises InvariantError."""
    if sum(state.balances.values()) != 0:
        raise InvariantError(f"balances sum to {sum(state.balances.values())}")
    for account, bal in state.balances.items():
        if bal < 0 and ledger.must_not_go_negative(account):
            raise InvariantError(f"{account} is {bal}")
    reserves: dict[str, int] = {}
    for job in state.jobs.values():
        if job.hold_open:
            if job.status in ENDED:
                raise InvariantError(f"{job.job_id} ended with its hold open")
            reserves[job.renter_id] = reserves.get(job.renter_id, 0) + job.cost_halala
        elif job.status not in ENDED:
            raise InvariantError(f"{job.job_id} is {job.status} without a hold")
    for renter_id, renter in state.renters.items():
        want = reserves.get(renter_id, 0)
        if state.held(renter_id) != want or renter.held_reserves_halala != want:
            raise InvariantError(
                f"renter {renter_id}: held {state.held(renter_id)}, reserves {want}"
            )
    queued = sorted(
        (PRIORITY_RANK[j.priority], j.submit_seq, j.job_id)
        for j in state.jobs.values()
        if j.status == "queued"
    )
    if queued != list(state.queue):
        raise InvariantError("the queue does not hold exactly the queued jobs in order")
    ended = {j.job_id for j in state.jobs.values() if j.status in ENDED and not j.hold_open}
    if ended != state.ended.keys():
        raise InvariantError("the ended list does not hold exactly the ended jobs in memory")
    # One pass over the jobs, not one per provider: O(jobs + providers).
    leased_by: dict[str, set[str]] = {}
    for j in state.jobs.values():
        if j.status in LEASED and j.provider_id is not None:
            leased_by.setdefault(j.provider_id, set()).add(j.job_id)
    for p in state.providers.values():
        leased = leased_by.pop(p.provider_id, set())
        if leased != p.leased:
            raise InvariantError(f"provider {p.provider_id} leases {p.leased}, not {leased}")
    decided = {w.withdrawal_id for w in state.withdrawals.values() if w.status != "pending"}
    if decided != state.decided.keys():
        raise InvariantError("the decided list does not hold exactly the decided withdrawals")
    topups.check(state)
