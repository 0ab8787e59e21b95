"""The domain state: everything the decisions need, built only by folding events.

Entities are mutable msgspec Structs owned by one `State`; `dcp_projections.fold.apply`
changes them in place (folding 100,000 events a second leaves no room for copies). Each
entity keeps `last_seq`, the sequence of the last event that changed it, which the read models
carry. `touched` collects which entities the folds changed since it was last cleared, so the
service writes only those rows.

Entities are `gc=False` structs: they hold only strings, numbers and containers of those,
never a cycle, so the cyclic garbage collector need not scan millions of them.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from typing import Literal

import msgspec
from sortedcontainers import SortedList

from dcp_events.catalogue import (
    ContainerSpec,
    GpuInfo,
    GpuRequirements,
    JobOutput,
    Priority,
    Settlement,
    TopUpStatus,
)
from dcp_projections import ledger
from dcp_projections.priorities import PRIORITY_RANK as PRIORITY_RANK

JobStatus = Literal[
    "queued", "assigned", "running", "completed", "timed_out", "failed", "cancelled"
]
ENDED: frozenset[str] = frozenset({"completed", "timed_out", "failed", "cancelled"})
LEASED: frozenset[str] = frozenset({"assigned", "running"})
# Top-ups still waiting on the gateway (the reconcile sweep asks about them): always in memory.
# Every other status is settled: such a top-up may leave a bounded state (`history_cap`).
TOPUP_OPEN: frozenset[str] = frozenset({"pending", "refunding"})
# Top-ups in these statuses hold the gateway payment they were credited (`topup_payments`).
TOPUP_HOLDS_PAYMENT: frozenset[str] = frozenset({"paid", "refunding", "refunded"})

# The prices every log starts from before its first event: part of the log's meaning, frozen
# (a test pins it). Logs written before seed prices became events hold no price for these
# until an admin sets one, so their replay rests on this table; never edit it. A new ledger
# instead gets GENESIS_PRICES as its first events (dcp_app.service, docs/ledger.md), so what
# it charges is in its log and a later change of the defaults changes no replay.
SEED_PRICES: tuple[tuple[str, int], ...] = (
    ("H200", 919),
    ("H100", 709),
    ("A100", 450),
    ("RTX 4090", 100),
    ("default", 33),
)
# The prices a new ledger's genesis events set (change these, not SEED_PRICES, for new
# ledgers).
GENESIS_PRICES: tuple[tuple[str, int], ...] = SEED_PRICES
DEFAULT_PRICE_KEY = "default"
ANY_GPU = frozenset({"", "any", "default"})
# How long a renter's idempotency key names its job (docs/ledger.md): a repeat within the
# window gets the first job; after it the key is forgotten, as payment APIs do.
IDEMPOTENCY_WINDOW_US = 24 * 3600 * 1_000_000

_NOT_ALNUM = re.compile(r"[^a-z0-9]")
# Distinct container specs and GPU requirements the fold shares between jobs (`State.shared`):
# a marketplace's jobs repeat a handful of them, but a renter may make each one unique (a run id
# in the command), so the table is emptied when it reaches this size.
SHARED_SPECS_MAX = 4096


@functools.lru_cache(maxsize=1024)
def gpu_key(model: str) -> str:
    """How GPU model names compare: "RTX 4090", "rtx-4090" and "RTX4090" are one model."""
    return _NOT_ALNUM.sub("", model.lower())


class Renter(msgspec.Struct, kw_only=True, gc=False):
    renter_id: str
    name: str
    email: str
    created_at_us: int
    last_seq: int
    # Sum of the reserves of this renter's unsettled holds; must equal the held account.
    held_reserves_halala: int = 0


class Provider(msgspec.Struct, kw_only=True, gc=False):
    provider_id: str
    name: str
    email: str
    gpu_model: str
    gpu_count: int
    vram_gb: int
    approved: bool
    created_at_us: int
    last_seq: int
    paused: bool = False
    suspended: bool = False
    accepting_jobs: bool = True
    daemon_version: str = ""
    last_heartbeat_us: int | None = None
    gpus: tuple[GpuInfo, ...] = ()
    # Jobs leased to it and not ended (assigned or running), and the GPUs they take.
    leased: set[str] = msgspec.field(default_factory=set)
    leased_gpus: int = 0


# Not kw_only (unlike the other entities): the fold of a submission, the most frequent new
# entity, builds it positionally, four times cheaper than by 19 keywords.
class Job(msgspec.Struct, gc=False):
    job_id: str
    renter_id: str
    status: JobStatus
    container_spec: ContainerSpec
    gpu_requirements: GpuRequirements
    priority: Priority
    max_duration_seconds: int
    requested_provider_id: str | None
    idempotency_key: str | None
    price_halala_per_gpu_hour: int
    rate_halala_per_hour: int
    cost_halala: int  # the reserve of the current (or last) hold
    submitted_at_us: int
    submit_seq: int  # queue order within a priority
    queued_at_us: int  # when the current hold began (submission or admin requeue)
    attempt: int  # fencing number of the current or next lease
    gpu_key: str  # gpu_key(gpu_type), or "" for a job that runs on any GPU
    first_attempt: int  # the attempt the current hold started with
    last_seq: int
    hold_open: bool = True
    holds: int = 1
    provider_id: str | None = None
    lease_expires_us: int | None = None
    assigned_at_us: int | None = None
    started_at_us: int | None = None
    ended_at_us: int | None = None
    settlement: Settlement | None = None
    output: JobOutput | None = None
    error: str | None = None
    # Fingerprint of the result each attempt reported, so a repeated result is recognised.
    results: dict[int, str] = msgspec.field(default_factory=dict)
    # Which provider held each attempt's lease: a provider sees only jobs it has held.
    leases: dict[int, str] = msgspec.field(default_factory=dict)


class Withdrawal(msgspec.Struct, kw_only=True, gc=False):
    withdrawal_id: str
    provider_id: str
    amount_halala: int
    iban: str
    status: Literal["pending", "completed", "rejected"]
    requested_at_us: int
    last_seq: int
    decided_at_us: int | None = None


class TopUp(msgspec.Struct, kw_only=True, gc=False):
    """A renter's payment through the gateway (dcp_projections.topups folds and decides it)."""

    topup_id: str
    renter_id: str
    amount_halala: int
    status: TopUpStatus
    created_at_us: int
    updated_at_us: int
    last_seq: int
    idempotency_key: str | None = None
    invoice_id: str | None = None
    checkout_url: str | None = None
    # The payment credited (paid, refunding, refunded) or disputed.
    payment_id: str | None = None
    reason: str = ""
    # What the gateway said about a disputed payment.
    gateway_amount_halala: int | None = None
    gateway_currency: str | None = None


class Price(msgspec.Struct, kw_only=True, gc=False):
    gpu_model: str  # display name as the admin wrote it
    halala_per_gpu_hour: int
    last_seq: int


class Credential(msgspec.Struct, frozen=True, gc=False):
    key_hash: str
    role: Literal["renter", "provider"]
    subject_id: str
    last_seq: int


class DepositRef(msgspec.Struct, frozen=True, gc=False):
    renter_id: str
    amount_halala: int
    seq: int


class SubmitKey(msgspec.Struct, frozen=True, gc=False):
    job_id: str
    at_us: int  # when the job was submitted: the key expires a window later
    # `jobs.submit_fingerprint` of the request's terms: the same key with other terms is 422.
    fingerprint: str = ""


Touched = set[tuple[str, str]]


class State:
    """The whole domain state. Build with `State()` and fold events into it.

    `jobs` holds every live job (queued, assigned, running) and the ended jobs still in
    memory; `ended` lists those ended jobs, oldest ending first. With `ended_cap=None` (the
    default: audits, tests) every ended job stays. The service passes a cap and calls
    `trim_ended()` after writing each batch's rows: memory then follows live work, not
    history, and a decision about a job no longer in memory is made on the job as
    `dcp_projections.history` folds it back from its renter's stream (docs/design.md,
    "Bounded memory").

    `history_cap` bounds the rest of what grows with history the same way: the deposit
    references (`deposit_refs`, oldest credit first), the decided withdrawals (`withdrawals`
    keeps every pending one; `decided` lists the decided ones in memory, oldest decision
    first); `topups_cap` the settled gateway top-ups (`topups` keeps every pending or
    refunding one; `topups_settled` lists the settled ones in memory, oldest settlement first,
    and the indexes `topup_payments`, `topup_invoices`, `topup_keys` name only top-ups in
    memory; the service passes its history cap for both). `trim_history()` drops the oldest
    beyond the caps, after the batch's rows are written; a decision about an older one is made
    on it as read back from the read models (`recall_deposit`, `recall_withdrawal`,
    `recall_topup`, before deciding). None (the default) keeps them all.
    """

    def __init__(
        self,
        *,
        ended_cap: int | None = None,
        idempotency_window_us: int = IDEMPOTENCY_WINDOW_US,
        cross_stream_checks: bool = True,
        history_cap: int | None = None,
        topups_cap: int | None = None,
    ) -> None:
        self.seq = 0  # the last folded event
        self.ended_cap = ended_cap
        self.history_cap = history_cap
        self.topups_cap = topups_cap
        self.idempotency_window_us = idempotency_window_us
        # False in a scratch fold of one stream (dcp_projections.history): the folds then skip
        # the checks that need facts other streams hold (a claiming GPU's model and price at
        # the time), which the fold of the whole log made when the event was first folded.
        self.cross_stream_checks = cross_stream_checks
        self.balances: dict[str, int] = {}
        self.renters: dict[str, Renter] = {}
        self.providers: dict[str, Provider] = {}
        self.jobs: dict[str, Job] = {}
        self.ended: OrderedDict[str, None] = OrderedDict()  # ended jobs in memory, oldest first
        # (priority rank, submission seq, job_id) in the queue's order: O(log n) insert,
        # remove and position, where a sorted list moved O(n) entries on every change.
        self.queue: SortedList = SortedList()
        self.pricing: dict[str, Price] = {
            gpu_key(m): Price(gpu_model=m, halala_per_gpu_hour=p, last_seq=0)
            for m, p in SEED_PRICES
        }
        self.images: dict[str, int] = {}  # allowlisted reference -> last_seq
        self.withdrawals: dict[str, Withdrawal] = {}  # pending, and decided ones in memory
        self.decided: OrderedDict[str, None] = OrderedDict()  # decided in memory, oldest first
        self.credentials: dict[str, Credential] = {}  # key_hash -> who
        # (renter, idempotency key) -> its job, oldest first; entries older than the window
        # leave as later keyed submissions are folded.
        self.submit_keys: OrderedDict[tuple[str, str], SubmitKey] = OrderedDict()
        # Reference -> the credit it made, oldest credit first: every one (history_cap=None)
        # or the most recent ones and those recalled for a decision.
        self.deposit_refs: OrderedDict[str, DepositRef] = OrderedDict()
        # Every admin deposit ever credited, in halala: world:deposits' share of the deposits
        # (a running total, so the invariant does not need every reference in memory).
        self.deposits_halala = 0
        self.account_seq: dict[str, int] = {}  # account -> last_seq
        # Gateway top-ups (every open one, and the settled ones in memory), and the indexes
        # that make each credit happen at most once (of the top-ups in memory).
        self.topups: dict[str, TopUp] = {}
        self.topup_payments: dict[str, str] = {}  # gateway payment id credited -> top-up
        self.topup_invoices: dict[str, str] = {}  # gateway invoice id -> top-up
        self.topup_keys: dict[tuple[str, str], str] = {}  # (renter, idempotency key) -> top-up
        # The settled top-ups in memory, oldest settlement first (they leave beyond history_cap).
        self.topups_settled: OrderedDict[str, None] = OrderedDict()
        # What the paid top-ups credited, net: world:deposits' share of the top-ups (a running
        # total, so the invariant does not need every top-up in memory).
        self.topups_credited_halala = 0
        self.touched: Touched = set()
        # One object for each distinct container spec and GPU requirements (`shared`).
        self._specs: dict[tuple[object, ...], ContainerSpec] = {}
        self._needs: dict[GpuRequirements, GpuRequirements] = {}

    # --- shared values -----------------------------------------------------------------------

    def shared(
        self, spec: ContainerSpec, needs: GpuRequirements
    ) -> tuple[ContainerSpec, GpuRequirements]:
        """The one object equal to `spec` (and to `needs`) that jobs already in memory hold,
        or these, remembered: every decoded event brings its own copies, and a job keeps them
        as long as it stays. Equal means the same fields in the same order (env's order is
        part of what the rows and snapshots write). At most SHARED_SPECS_MAX of each."""
        specs, all_needs = self._specs, self._needs
        key = (spec.image, spec.command, *spec.env.items())
        found = specs.get(key)
        if found is None:
            if len(specs) >= SHARED_SPECS_MAX:
                specs.clear()
            found = specs[key] = spec
        shared_needs = all_needs.get(needs)
        if shared_needs is None:
            if len(all_needs) >= SHARED_SPECS_MAX:
                all_needs.clear()
            shared_needs = all_needs[needs] = needs
        return found, shared_needs

    # --- queue -----------------------------------------------------------------------------

    def enqueue(self, job: Job) -> None:
        self.queue.add((PRIORITY_RANK[job.priority], job.submit_seq, job.job_id))

    def dequeue(self, job: Job) -> None:
        self.queue.discard((PRIORITY_RANK[job.priority], job.submit_seq, job.job_id))

    def queue_position(self, job: Job) -> int | None:
        """1-based place in the queue, or None when the job is not queued."""
        if job.status != "queued":
            return None
        key = (PRIORITY_RANK[job.priority], job.submit_seq, job.job_id)
        return int(self.queue.bisect_left(key)) + 1

    # --- ended jobs and idempotency keys ----------------------------------------------------

    def job_ended(self, job: Job) -> None:
        """`job` was settled: it may leave memory once `trim_ended` runs."""
        self.ended[job.job_id] = None
        self.ended.move_to_end(job.job_id)

    def job_reopened(self, job: Job) -> None:
        """An admin requeue made an ended job live again."""
        self.ended.pop(job.job_id, None)

    def recall(self, job: Job) -> None:
        """Put back an ended job folded again from the log, to decide about it."""
        if job.job_id not in self.jobs:
            self.jobs[job.job_id] = job
            self.job_ended(job)

    def trim(self) -> None:
        """Drop what lies beyond the caps: the oldest ended jobs (`trim_ended`), deposit
        references and decided withdrawals (`trim_history`). Call it only after the rows of
        what was folded are written: the read models then hold what leaves."""
        self.trim_ended()
        self.trim_history()

    def trim_ended(self) -> list[str]:
        """Drop the oldest ended jobs beyond `ended_cap`; returns their ids. Their rows are in
        the read models and their events in the log, so call it only after the rows of what
        was folded are written."""
        cap = self.ended_cap
        if cap is None:
            return []
        gone = []
        while len(self.ended) > cap:
            job_id, _ = self.ended.popitem(last=False)
            del self.jobs[job_id]
            gone.append(job_id)
        return gone

    # --- deposit references and decided withdrawals ----------------------------------------

    def recall_deposit(self, reference: str, ref: DepositRef) -> None:
        """Put back a deposit reference read from the read models, to decide about it."""
        if reference not in self.deposit_refs:
            self.deposit_refs[reference] = ref

    def withdrawal_decided(self, w: Withdrawal) -> None:
        """`w` was completed or rejected: it may leave memory once `trim_history` runs."""
        self.decided[w.withdrawal_id] = None
        self.decided.move_to_end(w.withdrawal_id)

    def recall_withdrawal(self, w: Withdrawal) -> None:
        """Put back a decided withdrawal read from the read models, to decide about it."""
        if w.withdrawal_id not in self.withdrawals and w.status != "pending":
            self.withdrawals[w.withdrawal_id] = w
            self.withdrawal_decided(w)

    def trim_history(self) -> None:
        """Drop the oldest deposit references and decided withdrawals beyond `history_cap`,
        and the oldest settled top-ups (with their index entries) beyond `topups_cap`.
        Their rows are in the read models, so call it only after the rows of what was folded
        are written (as `trim_ended`)."""
        self._trim_topups()
        cap = self.history_cap
        if cap is None:
            return
        refs = self.deposit_refs
        while len(refs) > cap:
            refs.popitem(last=False)
        decided = self.decided
        while len(decided) > cap:
            withdrawal_id, _ = decided.popitem(last=False)
            del self.withdrawals[withdrawal_id]

    # --- gateway top-ups --------------------------------------------------------------------

    def topup_changed(self, t: TopUp) -> None:
        """`t`'s status changed: a settled one may leave memory once `trim_history` runs (the
        most recently settled last); an open one (pending, refunding) stays."""
        settled = self.topups_settled
        if t.status in TOPUP_OPEN:
            settled.pop(t.topup_id, None)
        else:
            settled[t.topup_id] = None
            settled.move_to_end(t.topup_id)

    def recall_topup(self, t: TopUp) -> None:
        """Put back a settled top-up read from the read models (or folded again from its
        renter's stream), with its index entries, to decide about it or fold its next event."""
        if t.topup_id in self.topups:
            return
        self.topups[t.topup_id] = t
        if t.invoice_id is not None:
            self.topup_invoices[t.invoice_id] = t.topup_id
        if t.payment_id is not None and t.status in TOPUP_HOLDS_PAYMENT:
            self.topup_payments[t.payment_id] = t.topup_id
        if t.idempotency_key is not None:
            self.topup_keys[(t.renter_id, t.idempotency_key)] = t.topup_id
        self.topup_changed(t)

    def _trim_topups(self) -> None:
        cap = self.topups_cap
        if cap is None:
            return
        settled = self.topups_settled
        while len(settled) > cap:
            topup_id, _ = settled.popitem(last=False)
            self._forget_topup(topup_id)

    def _forget_topup(self, topup_id: str) -> None:
        t = self.topups.pop(topup_id)
        if t.invoice_id is not None and self.topup_invoices.get(t.invoice_id) == topup_id:
            del self.topup_invoices[t.invoice_id]
        if t.payment_id is not None and self.topup_payments.get(t.payment_id) == topup_id:
            del self.topup_payments[t.payment_id]
        if t.idempotency_key is not None:
            key = (t.renter_id, t.idempotency_key)
            if self.topup_keys.get(key) == topup_id:
                del self.topup_keys[key]

    def submitted_with_key(self, renter_id: str, key: str, now_us: int) -> str | None:
        """The job this renter submitted with `key` within the window before `now_us`."""
        seen = self.live_key(renter_id, key, now_us)
        return None if seen is None else seen.job_id

    def live_key(self, renter_id: str, key: str, now_us: int) -> SubmitKey | None:
        """This renter's keyed submission with `key` within the window before `now_us`."""
        seen = self.submit_keys.get((renter_id, key))
        if seen is None or seen.at_us + self.idempotency_window_us <= now_us:
            return None
        return seen

    def remember_key(
        self, renter_id: str, key: str, job_id: str, at_us: int, fingerprint: str = ""
    ) -> None:
        """Record a keyed submission; keys older than the window as of `at_us` leave."""
        keys = self.submit_keys
        expired_before = at_us - self.idempotency_window_us
        while keys:
            oldest = next(iter(keys.values()))
            if oldest.at_us > expired_before:
                break
            keys.popitem(last=False)
        keys[(renter_id, key)] = SubmitKey(job_id, at_us, fingerprint)
        keys.move_to_end((renter_id, key))

    # --- reads -----------------------------------------------------------------------------

    def balance(self, account: str) -> int:
        return self.balances.get(account, 0)

    def available(self, renter_id: str) -> int:
        return self.balance(ledger.renter_available(renter_id))

    def held(self, renter_id: str) -> int:
        return self.balance(ledger.renter_held(renter_id))

    def earnings(self, provider_id: str) -> int:
        return self.balance(ledger.provider_earnings(provider_id))

    def payout_pending(self, provider_id: str) -> int:
        return self.balance(ledger.provider_payout_pending(provider_id))

    def price_for(self, gpu_type: str) -> int:
        """The price per GPU-hour for a job asking for `gpu_type` (default if unknown)."""
        p = self.pricing.get(gpu_key(gpu_type)) if gpu_type.lower() not in ANY_GPU else None
        if p is None:
            p = self.pricing[DEFAULT_PRICE_KEY]
        return p.halala_per_gpu_hour

    def image_allowed(self, image: str) -> bool:
        """Exact reference, or an entry ending in "*" (a prefix) or "@sha256:" (any digest of
        that repository: the rest must be 64 hex digits)."""
        if image in self.images:
            return True
        for entry in self.images:
            if entry.endswith("*") and image.startswith(entry[:-1]):
                return True
            if (
                entry.endswith("@sha256:")
                and image.startswith(entry)
                and re.fullmatch(r"[0-9a-f]{64}", image[len(entry) :])
            ):
                return True
        return False
