"""Build a large benchmark log fast, with months of realistic history: the real domain,
appended in large batches.

    python scripts/build_log.py --db /data/big.db --seed 4 --renters 100000 \
        --providers 10000 --events 10000000 --progress

scripts/simulate.py sends every command through LedgerService (a future, an answer view and
the read-model rows of every batch of at most 512 commands), about 2,000 commands/s here: a
10M-event log would take hours. This builder makes the same kind of ledger much faster: it
decides each command with dcp_projections' own decisions, folds the events into the state
(fold.apply, which checks every money rule), and appends tens of thousands of events at a
time through the store (SqliteEventStore.append_atomic: the same hash chain, streams and
versions the service writes), the next batch decided while the writer thread commits the
last. Each append's transaction also writes the batch's read-model rows and postings, as the
service's does (dcp_app.readmodel.batch_writer), and at the end a snapshot of the state at
the head is written beside the log where `dcp serve` looks for it (dcp_app.snapshots, with
the service's own ended-job cap), so `dcp serve --db` starts from it. SIGTERM or SIGINT ends
the build at the next batch with a whole ledger (read models and snapshot included).
`dcp audit verify` and `dcp audit replay` pass on the result.

The history is a simulation in simulated time (one heap of timed actions) that spans --days
(90 by default) and ends at about the wall-clock time the build ends, so a `dcp serve`
started right after finds live leases and a live queue, and only the last 24 hours'
idempotency keys (the state's window drops older ones as time passes):
- renters and admins act as a Poisson process whose rate swings over the day; its mean is
  retuned every simulated hour so that --events fill --days (with the defaults, 100 providers
  run ~200 jobs a day, 10,000 providers ~20,000). Per arrival: mostly submissions (30% with
  an idempotency key, a few of those retried), some cancels, sandbox top-ups (and one after a
  refusal for funds), admin credits, requeues of failed jobs, withdrawals and their payouts;
  hourly a few pauses and resumes, rare suspensions, price and allowlist changes. A few
  renters send most jobs. Renters and providers join over the span (a fifth at the start).
- the fleet follows the work: a provider comes online when a job waits that nobody online
  took (the provider whose offer the job was shaped after, else one that fits), heartbeats
  and polls every HEARTBEAT_S (+-10%) while it holds leases and a few polls more, then goes
  offline. Claimed jobs start seconds later and run for minutes (a small part of what they
  reserved), then complete, fail (retried while attempts remain), time out or are cancelled;
  a few are never started (the sweep times them out at their deadline) and a few daemons
  crash with work (their leases expire and the sweep requeues or fails them). Sweeps run
  when something falls due, and hourly. So the queue stays at what is waiting
  for a poll (and the few jobs nobody offers to run at their price, until the queue
  timeout), and jobs and their heartbeats are most of the log.
Only decisions the state in memory can make are sent: a command about a job that left memory
(the service would fold it back from the log) is skipped.

The last line printed (and written to <db>.build.json) is one JSON object: {"events": n,
"events_per_s": ..., "live": {...}, "span_days": ..., "mix_pct": {...}, ...}, with the live
state at the end (queued, assigned, running jobs, submit keys, deposit references and ended
jobs in memory) and each kind of event's share of the log.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import itertools
import json
import math
import random
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulate import (
    GPU_MODELS,
    HEARTBEAT_S,
    IBAN,
    IMAGES,
    PRICED_MODELS,
    SETTINGS,
    S,
)

from dcp_app import readmodel, snapshots
from dcp_app.batcher import ENDED_IN_MEMORY, HISTORY_IN_MEMORY
from dcp_app.service import hash_key
from dcp_events import catalogue as ev
from dcp_events.codec import default_codec
from dcp_events.event import Event
from dcp_events.sqlite_store import SqliteEventStore
from dcp_events.store import AppendRequest, NewEvent, TxHook
from dcp_projections import commands as cmd
from dcp_projections.decisions import decide
from dcp_projections.errors import DomainError
from dcp_projections.fold import apply, check_all
from dcp_projections.history import jobs_to_recall
from dcp_projections.pricing import gpu_price, may_run_on
from dcp_projections.rows import changed_rows
from dcp_projections.state import ENDED, Job, State
from dcp_projections.streams import stream_of

BATCH_EVENTS = 20_000  # events per append (one transaction, one fsync)
DAY_S = 86_400
# The fleet. A provider's daemon heartbeats (and polls) every HEARTBEAT_S, +-10% as
# dcp_worker's does, while it is online; it comes online when the queue holds work nobody
# online took (WAKE_AFTER_S after the submission, again every WAKE_RETRY_S while the job
# waits, WAKE_TRIES times), stays while it holds leases and LINGER polls more, then goes
# offline. A month of 10,000 daemons heartbeating all the time would be billions of events.
BEAT_JITTER = 0.1
WAKE_AFTER_S = (20.0, 45.0)
WAKE_RETRY_S = 60.0
WAKE_TRIES = 6
LINGER = (0, 2)
START_AFTER_S = (2.0, 15.0)  # pulling the image and starting the container
NO_START = 0.005  # a claimed job never started (the sweep times it out at its deadline)
CRASH = 0.0005  # per beat while holding work: the daemon goes quiet, its leases expire
DOWN_S = (150.0, 1800.0)
# The share of submits shaped after what a provider in the fleet offers (renters pick from
# what the marketplace lists); the rest ask for anything, some of it for GPUs nobody offers
# at that price, which waits for its queue timeout.
FLEET_SHAPED = 0.95
MAX_DURATIONS = [60, 300, 600, 1800, 3600]
DURATION_CUM = list(itertools.accumulate([40, 30, 15, 10, 5]))
OUTCOMES = ["completed", "failed", "timed_out", "cancelled"]
OUTCOME_CUM = list(itertools.accumulate([84, 10, 3, 3]))
# Renters and admins, per arrival (jobs and the fleet's work on them are most of the log).
KINDS = ["submit", "cancel", "credit", "requeue", "withdraw", "payout", "topup"]
KIND_CUM = list(itertools.accumulate([100, 4, 2, 3, 3, 3, 4]))
KEYED = 0.3  # submissions with an idempotency key
RETRIED = 0.02  # keyed submissions sent again with the same key (the first job answers)
RETRY_WITHIN_S = 600
DIURNAL = 0.5  # arrivals swing +-50% over the day
# The clock: the history spans --days and ends at about the wall-clock time the build ends.
# The arrival rate is retuned every CONTROL_S of simulated time so the events left fit the
# simulated time left; EST_EPS and EST_PER_ARRIVAL are only the first guesses.
CONTROL_S = 3600
EST_EPS = 8_000
EST_PER_ARRIVAL = 25.0
FIRST_SHARE = 0.2  # renters and providers registered at the start; the rest join over time
SPEC = {
    image: ev.ContainerSpec(image=image, command=("python", "train.py"), env={"EPOCHS": "3"})
    for image in ["dcp/pytorch:2.3", "dcp/jax:0.4", "ghcr.io/dcp/train:7"]
}
SPECS = list(SPEC.values())
PRIORITIES: list[ev.Priority] = ["priority", "standard", "standard", "economy"]
STDOUT = ["epoch 1 loss 0.31\n" * n for n in range(6)]
# Simulated actions, kept in one heap by time.
ARRIVE, BEAT, START, FINISH, WAKE, SWEEP, TICK, BACK, FLAG = range(9)


class Builder:
    """Decides commands on one in-memory state and appends their events in large batches."""

    def __init__(
        self, store: SqliteEventStore, rng: random.Random, start_us: int, args: argparse.Namespace
    ) -> None:
        self.store = store
        self.rng = rng
        self.now = self.start_us = start_us
        self.target = args.events
        self.n_renters, self.n_providers = args.renters, args.providers
        # The service's own cap, so the snapshot written at the end is one `dcp serve` loads.
        self.state = State(
            ended_cap=ENDED_IN_MEMORY, history_cap=HISTORY_IN_MEMORY, topups_cap=HISTORY_IN_MEMORY
        )
        self.codec = default_codec()
        self.versions: dict[str, int] = {}
        self.events: list[Event] = []
        self.actors: list[str] = []
        self.head = 0  # the sequence the store holds (or will, once `writing` is done)
        self.writing: asyncio.Task[Any] | None = None
        self.renters: list[str] = []
        self.providers: list[str] = []
        self.pending: list[str] = []  # withdrawals awaiting an admin
        self.commands = 0
        self.refusals: Counter[str] = Counter()
        self.refused = ""  # the code of the last refusal
        self.skipped = 0
        self.mix: Counter[type] = Counter()
        # The simulation.
        self.heap: list[tuple[int, int, int, Any]] = []
        self.n = 0
        self.online: dict[str, list[int]] = {}  # provider -> [idle polls left, linger]
        self.epoch: dict[str, int] = {}  # bumped by a crash: the older epoch's actions are void
        self.down: set[str] = set()
        self.sweeps: set[int] = set()  # seconds a sweep is due at
        self.recent: deque[str] = deque(maxlen=256)  # the newest submissions (cancels)
        self.keyed: deque[tuple[int, cmd.SubmitJob]] = deque(maxlen=64)  # newest keyed ones
        self.failed: deque[str] = deque(maxlen=256)  # jobs that failed for good (requeues)
        self.arrivals = 0
        self.n_sweeps = 0
        self.idle_beats = 0
        self.submits = 0
        self.seq0 = 0  # the log's length when the history began
        self.wall0 = 0.0
        self.end_us = start_us  # the simulated time the log should end at (retuned)
        self.nominal = 1.0  # arrivals per simulated second the span and size ask for
        self.rate = 1.0

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{self.rng.getrandbits(64):016x}"

    def do(self, c: cmd.Command, actor: str) -> list[Event] | None:
        """Decide `c` now and fold its events; None if refused (as the service would answer)."""
        state = self.state
        if jobs_to_recall(state, c, self.now):
            self.skipped += 1  # the service would fold that job back from the log first
            return None
        self.commands += 1
        try:
            new = decide(state, c, self.now, SETTINGS)
        except DomainError as e:
            self.refusals[e.code] += 1
            self.refused = e.code
            return None
        mix = self.mix
        for event in new:
            apply(state, state.seq + 1, event)
            mix[type(event)] += 1
        self.events.extend(new)
        self.actors.extend([actor] * len(new))
        return new

    async def flush(self, force: bool = False) -> None:
        if force and not self.events and self.writing is not None:
            await self.writing  # nothing more to send: the last append must still land
            self.writing = None
        if not self.events or (len(self.events) < BATCH_EVENTS and not force):
            return
        state = self.state
        requests = self._requests()
        if self.writing is not None:
            await self.writing  # one append in flight: its head is the next one's expected head
        head, self.head = self.head, self.head + len(self.events)
        # The batch's read-model rows, written in the append's transaction (the service's
        # dcp_app.readmodel.batch_writer), computed now while the state holds still.
        if head == 0:  # the first batch ever also writes the seeded prices' rows
            state.touched.update(("price", key) for key in state.pricing)
        hook = readmodel.batch_writer(self.events, head + 1, changed_rows(state, state.touched))
        self.events, self.actors = [], []
        self.writing = asyncio.create_task(self._append(requests, head, hook))
        # Ended jobs beyond the cap leave memory, as in the service: their rows are computed.
        state.touched.clear()
        state.trim()
        if force:
            await self.writing
            self.writing = None

    async def _append(self, requests: list[AppendRequest], head: int, hook: TxHook) -> None:
        results = await self.store.append_atomic(requests, expected_head=head, tx_hook=hook)
        if results[-1].last_seq != head + sum(len(r.events) for r in requests):
            raise SystemExit(f"appended up to {results[-1].last_seq}, expected more")

    def _requests(self) -> list[AppendRequest]:
        """One request per run of consecutive events of one stream (the service's rule), so
        the log keeps the order the events were decided and folded in."""
        requests: list[AppendRequest] = []
        versions = self.versions
        run: list[NewEvent] = []
        run_stream = ""
        encode = self.codec.encode
        for event, actor in zip(self.events, self.actors, strict=True):
            stream = stream_of(event)
            if run and stream != run_stream:
                requests.append(AppendRequest(run_stream, versions.get(run_stream, 0), run))
                versions[run_stream] = versions.get(run_stream, 0) + len(run)
                run = []
            run_stream = stream
            run.append(encode(event, actor))
        if run:
            requests.append(AppendRequest(run_stream, versions.get(run_stream, 0), run))
            versions[run_stream] = versions.get(run_stream, 0) + len(run)
        return requests

    # --- the clock ---------------------------------------------------------------------------

    def at(self, when_us: int, action: int, arg: Any = None) -> None:
        self.n += 1
        heapq.heappush(self.heap, (when_us, self.n, action, arg))

    def after(self, seconds: float, action: int, arg: Any = None) -> None:
        self.at(self.now + int(seconds * S), action, arg)

    def sweep_at(self, when_us: int) -> None:
        """A sweep when something falls due (the service sweeps every few seconds)."""
        second = when_us // S + 1
        if second not in self.sweeps:
            self.sweeps.add(second)
            self.at(second * S, SWEEP, second)

    async def run(self, stop: asyncio.Event, progress: bool) -> None:
        """The history: actions in time order until the log holds --events (or the simulated
        clock reaches the wall clock)."""
        state, heap, rng = self.state, self.heap, self.rng
        self.seq0, self.wall0 = state.seq, time.time()
        span_s = (self.end_us - self.now) / S
        self.nominal = self.rate = (self.target - state.seq) / EST_PER_ARRIVAL / span_s
        self.after(rng.expovariate(self.rate), ARRIVE)
        self.after(0, TICK)
        handlers: dict[int, Callable[[Any], None]] = {
            ARRIVE: self.arrive,
            BEAT: self.beat,
            START: self.start,
            FINISH: self.finish,
            WAKE: self.wake,
            SWEEP: self.sweep,
            TICK: self.tick,
            BACK: self.back,
            FLAG: self.flag,
        }
        # The history ends when the simulated clock reaches the wall clock (the arrival rate
        # is tuned so --events are there by then), or at a few percent more events.
        most = self.target + max(1_000, self.target // 50)
        wall_us = int(time.time() * S)
        last = time.perf_counter()
        while state.seq < most and not stop.is_set():
            when, _, action, arg = heapq.heappop(heap)
            if when > wall_us:
                wall_us = int(time.time() * S)
                if when > wall_us:
                    break
            self.now = when
            handlers[action](arg)
            if len(self.events) >= BATCH_EVENTS:
                await self.flush()
                wall_us = int(time.time() * S)
                if progress and time.perf_counter() - last > 30:
                    last = time.perf_counter()
                    print(self.progress_line(), file=sys.stderr)
        self.join(1.0)  # whoever had not joined yet joins at the end

    def progress_line(self) -> str:
        state = self.state
        eps = (state.seq - self.seq0) / max(time.time() - self.wall0, 1e-9)
        queued = len(state.queue)
        days = (self.now - self.start_us) / S / DAY_S
        return (
            f"{state.seq} events, {eps:.0f}/s, day {days:.1f}, {queued} queued,"
            f" {len(self.online)} providers online, {len(state.jobs)} jobs in memory"
        )

    def tick(self, _: Any) -> None:
        """Every simulated hour: retune the arrival rate, let renters and providers join,
        and the admins' and providers' occasional flags."""
        state, rng = self.state, self.rng
        done = state.seq - self.seq0
        wall = time.time()
        eps = done / (wall - self.wall0) if done > 20_000 else EST_EPS
        left = self.target - state.seq
        self.end_us = int((wall + left / eps) * S)
        per_arrival = done / self.arrivals if self.arrivals > 2_000 else EST_PER_ARRIVAL
        sim_left_s = (self.end_us - self.now) / S
        rate = left / per_arrival / max(sim_left_s, 60.0)
        self.rate = min(max(rate, self.nominal / 4), 4 * self.nominal)
        span = max(self.end_us - self.start_us, 1)
        self.join(min((self.now - self.start_us) / span, 1.0))
        n = len(self.providers)
        for _ in range(poisson(rng, n / 2000)):  # a provider pauses, resumes within two days
            pid = rng.choice(self.providers)
            if not state.providers[pid].paused:
                self.do(cmd.SetProviderFlag(provider_id=pid, flag="pause"), f"provider:{pid}")
                self.after(rng.uniform(3600, 2 * DAY_S), FLAG, (pid, "resume"))
        for _ in range(poisson(rng, n / 50_000)):  # an admin suspends one, for up to a week
            pid = rng.choice(self.providers)
            if not state.providers[pid].suspended:
                self.do(cmd.SetProviderFlag(provider_id=pid, flag="suspend"), "admin")
                self.after(rng.uniform(DAY_S, 7 * DAY_S), FLAG, (pid, "unsuspend"))
        if rng.random() < 0.02:  # the allowlist changes (an image no job uses)
            if "dcp/legacy:1" in state.images:
                self.do(cmd.RemoveImage(reference="dcp/legacy:1"), "admin")
            else:
                self.do(cmd.AllowImage(reference="dcp/legacy:1"), "admin")
        if rng.random() < 0.03:  # about one price change a day and a half
            c = cmd.SetPrice(
                gpu_model=rng.choice(PRICED_MODELS), halala_per_gpu_hour=rng.randint(50, 1500)
            )
            self.do(c, "admin")
        self.sweep_at(self.now)  # and an hourly sweep, for whatever else fell due
        self.after(CONTROL_S, TICK)

    def flag(self, arg: tuple[str, cmd.ProviderFlag]) -> None:
        pid, flag = arg
        actor = "admin" if flag == "unsuspend" else f"provider:{pid}"
        self.do(cmd.SetProviderFlag(provider_id=pid, flag=flag), actor)

    # --- renters and admins ------------------------------------------------------------------

    def arrive(self, _: Any) -> None:
        """One renter's or admin's command; the next arrival after an exponential gap."""
        rng, state = self.rng, self.state
        self.arrivals += 1
        day = (self.now // S) % DAY_S / DAY_S  # UTC; the swing peaks at 15:00 Riyadh time
        swing = 1 + DIURNAL * math.sin(2 * math.pi * (day - 0.25))
        self.after(rng.expovariate(self.rate * swing), ARRIVE)
        kind = rng.choices(KINDS, cum_weights=KIND_CUM)[0]
        if kind == "submit":
            self.submit()
        elif kind == "cancel" and self.recent:
            job = state.jobs.get(rng.choice(self.recent))
            if job is not None and job.status not in ENDED:
                rid = job.renter_id
                self.do(cmd.CancelJob(job_id=job.job_id, renter_id=rid), f"renter:{rid}")
        elif kind == "credit":  # a bank transfer an admin credits
            c: cmd.Command = cmd.CreditDeposit(
                renter_id=self.renter(),
                amount_halala=rng.randint(10_000, 500_000),
                reference=f"dep-{self.commands}",
            )
            self.do(c, "admin")
        elif kind == "requeue" and self.failed:
            job = state.jobs.get(self.failed.pop())
            requeued = (
                job is not None
                and job.status == "failed"
                and self.do(cmd.RequeueJob(job_id=job.job_id), "admin")
            )
            if job is not None and requeued:
                self.after(rng.uniform(*WAKE_AFTER_S), WAKE, (job.job_id, None, 0))
        elif kind == "withdraw":
            pid = rng.choice(self.providers)
            earned = state.earnings(pid)
            if earned >= 1000:
                wid = self.new_id("wd")
                c = cmd.RequestWithdrawal(
                    withdrawal_id=wid,
                    provider_id=pid,
                    amount_halala=rng.randint(1000, earned),
                    iban=IBAN,
                )
                if self.do(c, f"provider:{pid}") is not None:
                    self.pending.append(wid)
        elif kind == "payout" and self.pending:
            wid = self.pending.pop(rng.randrange(len(self.pending)))
            approve = rng.random() < 0.7
            reason = "" if approve else "name mismatch"
            self.do(
                cmd.DecideWithdrawal(withdrawal_id=wid, approve=approve, reason=reason), "admin"
            )
        elif kind == "topup":
            self.topup(self.renter())

    def renter(self) -> str:
        """A renter, the earliest to join the busiest (a few renters send most jobs)."""
        return self.renters[int(len(self.renters) * self.rng.random() ** 2)]

    def topup(self, rid: str) -> None:
        c = cmd.TopUp(renter_id=rid, amount_halala=self.rng.randint(10_000, 200_000))
        self.do(c, f"renter:{rid}")

    def submit(self) -> None:
        rng, state = self.rng, self.state
        rid = self.renter()
        if self.keyed and rng.random() < RETRIED:  # a client retrying a keyed request
            at_us, c = self.keyed[-1 - rng.randrange(len(self.keyed))]
            if self.now - at_us < RETRY_WITHIN_S * S:
                self.do(c, f"renter:{c.renter_id}")
                return
        template = None
        if rng.random() < FLEET_SHAPED:
            # What the marketplace lists: the GPU model, memory and count of a provider in it.
            template = self.providers[int(len(self.providers) * rng.random() ** 2)]
            p = state.providers[template]
            gpu_type = p.gpu_model
            min_vram = rng.choice([0, 0, p.vram_gb])
            count = min(p.gpu_count, rng.choice([1, 1, 1, 2, 4]))
        else:
            gpu_type = rng.choice([*GPU_MODELS, "any", "any"])
            min_vram = rng.choice([0, 0, 24, 80])
            count = rng.choice([1, 1, 1, 2, 4])
        spec = rng.choice(SPECS)
        req = ev.GpuRequirements(gpu_type=gpu_type, min_vram_gb=min_vram, gpu_count=count)
        max_s = rng.choices(MAX_DURATIONS, cum_weights=DURATION_CUM)[0]
        priority = rng.choice(PRIORITIES)
        # Half the arrivals are one job, the rest a sweep of 2-8 alike (run side by side).
        for _ in range(1 if rng.random() < 0.5 else rng.randint(2, 8)):
            c = cmd.SubmitJob(
                job_id=self.new_id("job"),
                renter_id=rid,
                container_spec=spec,
                gpu_requirements=req,
                max_duration_seconds=max_s,
                priority=priority,
                idempotency_key=f"k{rng.getrandbits(48):012x}" if rng.random() < KEYED else None,
            )
            if self.do(c, f"renter:{rid}") is None:
                if self.refused == "insufficient_funds" and rng.random() < 0.5:
                    self.topup(rid)
                return
            self.submits += 1
            self.recent.append(c.job_id)
            if c.idempotency_key is not None:
                self.keyed.append((self.now, c))
            self.after(rng.uniform(*WAKE_AFTER_S), WAKE, (c.job_id, template, 0))

    # --- the fleet ---------------------------------------------------------------------------

    def wake(self, arg: tuple[str, str | None, int]) -> None:
        """A job still queued: an offline provider that can run it comes online."""
        job_id, template, tries = arg
        state, rng = self.state, self.rng
        job = state.jobs.get(job_id)
        if job is None or job.status != "queued":
            return
        candidates = [template] if template is not None else []
        candidates += [rng.choice(self.providers) for _ in range(8)]
        for pid in candidates:
            if pid not in self.online and pid not in self.down and self.fits(job, pid):
                self.come_online(pid)
                break
        if tries < WAKE_TRIES:
            self.after(WAKE_RETRY_S, WAKE, (job_id, None, tries + 1))
        else:  # nobody came: the queue timeout ends it
            self.sweep_at(job.queued_at_us + SETTINGS.queue_timeout_s * S)

    def fits(self, job: Job, pid: str) -> bool:
        p = self.state.providers[pid]
        req = job.gpu_requirements
        return (
            p.approved
            and not p.paused
            and not p.suspended
            and job.requested_provider_id in (None, pid)
            and req.min_vram_gb <= p.vram_gb
            and req.gpu_count <= p.gpu_count - p.leased_gpus
            and may_run_on(
                job.gpu_key, job.price_halala_per_gpu_hour, p.gpu_model,
                gpu_price(self.state, p.gpu_model),
            )
        )  # fmt: skip

    def come_online(self, pid: str) -> None:
        linger = self.rng.randint(*LINGER)
        self.online[pid] = [linger, linger]
        self.after(self.rng.uniform(0, 5), BEAT, (pid, self.epoch.get(pid, 0)))

    def beat(self, arg: tuple[str, int]) -> None:
        """An online provider heartbeats (listing its leases), polls, and beats again an
        interval later while it holds work or lingers; then it goes offline."""
        pid, epoch = arg
        if self.epoch.get(pid, 0) != epoch or pid not in self.online:
            return
        state, rng = self.state, self.rng
        p = state.providers[pid]
        actor = f"provider:{pid}"
        leased = tuple(sorted(p.leased))
        self.idle_beats += not leased
        self.do(
            cmd.Heartbeat(provider_id=pid, running_job_ids=leased, daemon_version="sim-1"), actor
        )
        if leased and rng.random() < CRASH:
            self.crash(pid)
            return
        for e in self.do(cmd.ClaimJobs(provider_id=pid), actor) or ():
            assert isinstance(e, ev.JobClaimed)
            self.after(rng.uniform(*START_AFTER_S), START, (e.job_id, e.attempt, pid, epoch))
        left = self.online[pid]
        if p.leased:
            left[0] = left[1]
        else:
            left[0] -= 1
            if left[0] < 0:
                del self.online[pid]  # offline until work wakes it
                return
        self.after(HEARTBEAT_S * rng.uniform(1 - BEAT_JITTER, 1 + BEAT_JITTER), BEAT, arg)

    def crash(self, pid: str) -> None:
        """The daemon goes quiet: its leases expire and the sweep requeues or fails them."""
        self.epoch[pid] = self.epoch.get(pid, 0) + 1
        del self.online[pid]
        self.down.add(pid)
        self.sweep_at(self.now + SETTINGS.lease_ttl_s * S)
        self.after(self.rng.uniform(*DOWN_S), BACK, pid)

    def back(self, pid: str) -> None:
        self.down.discard(pid)
        self.come_online(pid)

    def start(self, arg: tuple[str, int, str, int]) -> None:
        job_id, attempt, pid, epoch = arg
        if self.epoch.get(pid, 0) != epoch:
            return
        job = self.state.jobs.get(job_id)
        if job is None or job.status != "assigned" or job.attempt != attempt:
            return  # cancelled (or its lease lost) before the container started
        rng = self.rng
        max_s = job.max_duration_seconds
        if rng.random() < NO_START:  # never started: timed out at the deadline
            assert job.assigned_at_us is not None
            self.sweep_at(job.assigned_at_us + (max_s + SETTINGS.deadline_grace_s) * S)
            return
        self.do(cmd.StartJob(provider_id=pid, job_id=job_id, attempt=attempt), f"provider:{pid}")
        outcome = rng.choices(OUTCOMES, cum_weights=OUTCOME_CUM)[0]
        # Most jobs take a small part of what they reserved: minutes.
        runtime = max_s if outcome == "timed_out" else max(1.0, max_s * rng.random() ** 4)
        self.after(runtime, FINISH, (job_id, attempt, pid, epoch, outcome, runtime))

    def finish(self, arg: tuple[str, int, str, int, str, float]) -> None:
        job_id, attempt, pid, epoch, outcome, runtime = arg
        state, rng = self.state, self.rng
        job = state.jobs.get(job_id)
        if self.epoch.get(pid, 0) != epoch or job is None:
            return
        if job.status != "running" or job.attempt != attempt:
            if job.status == "cancelled" and job.attempt == attempt:  # the daemon acknowledges
                outcome = "cancelled"
            else:
                return
        c = cmd.ReportResult(
            provider_id=pid,
            job_id=job_id,
            attempt=attempt,
            outcome=outcome,  # type: ignore[arg-type]
            exit_code=0 if outcome == "completed" else rng.choice([1, 137, None]),
            runtime_seconds=runtime,
            stdout=rng.choice(STDOUT),
            error="CUDA error: an illegal memory access" if outcome == "failed" else "",
        )
        for e in self.do(c, f"provider:{pid}") or ():
            if type(e) is ev.JobAttemptFailed:  # requeued for another attempt
                self.after(rng.uniform(*WAKE_AFTER_S), WAKE, (job_id, None, 0))
            elif type(e) is ev.JobFailed:
                self.failed.append(job_id)

    def sweep(self, due: int) -> None:
        """The service's sweep (bounded rounds until one ends fewer than the limit)."""
        self.sweeps.discard(due)
        self.n_sweeps += 1
        for _ in range(8):
            swept = self.do(cmd.Sweep(), "system")
            if not swept:
                break
            for e in swept:
                if type(e) is ev.JobLeaseExpired and e.requeued:
                    self.after(self.rng.uniform(*WAKE_AFTER_S), WAKE, (e.job_id, None, 0))
                elif type(e) is ev.JobFailed or type(e) is ev.JobLeaseExpired:
                    self.failed.append(e.job_id)  # failed for good
            if len(swept) < SETTINGS.sweep_limit:
                break

    # --- setup -------------------------------------------------------------------------------

    async def setup(self) -> None:
        for image in IMAGES:
            self.do(cmd.AllowImage(reference=image), "admin")
        self.join(0.0)
        await self.flush()

    def join(self, share: float) -> None:
        """Renters and providers join (FIRST_SHARE at the start, the rest over the span):
        registered, the renters credited, the providers approved."""
        rng = self.rng
        share = FIRST_SHARE + (1 - FIRST_SHARE) * share
        for i in range(len(self.renters), max(1, round(self.n_renters * share))):
            rid = self.new_id("r")
            key = hash_key(f"dcp-renter-{rng.getrandbits(128):032x}")
            c: cmd.Command = cmd.RegisterRenter(
                renter_id=rid, name=f"renter {i}", email=f"r{i}@example.sa", key_hash=key
            )
            if self.do(c, "anonymous") is not None:
                self.renters.append(rid)
                amount = rng.randint(50_000, 2_000_000)
                c = cmd.CreditDeposit(renter_id=rid, amount_halala=amount, reference=f"seed-{rid}")
                self.do(c, "admin")
        for i in range(len(self.providers), max(1, round(self.n_providers * share))):
            pid = self.new_id("p")
            c = cmd.RegisterProvider(
                provider_id=pid,
                name=f"provider {i}",
                email=f"p{i}@example.sa",
                gpu_model=rng.choice(GPU_MODELS),
                gpu_count=rng.choice([1, 2, 4, 8]),
                vram_gb=rng.choice([24, 48, 80, 141]),
                key_hash=hash_key(f"dcp-provider-{rng.getrandbits(128):032x}"),
            )
            if self.do(c, "anonymous") is not None:
                self.providers.append(pid)
                self.do(cmd.SetProviderFlag(provider_id=pid, flag="approve"), "admin")


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth's; lam is small here)."""
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


async def build(args: argparse.Namespace) -> dict[str, Any]:
    db = Path(args.db)
    for suffix in ("", "-wal", "-shm", ".build.json"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    snap_dir = Path(f"{db}.snapshots")  # where `dcp serve --db` looks (ServerConfig)
    for old in snapshots.files(snap_dir):
        old.unlink()
    # Millions of long-lived objects and no cycles worth finding: the collector would only
    # rescan them (the service freezes them for the same reason, dcp_http.app.gc_loop).
    gc.disable()
    rng = random.Random(args.seed)
    store = await SqliteEventStore.open(db)
    t0 = time.perf_counter()
    # The history ends about when the build does (the first guess of its speed; the arrival
    # rate is retuned as it goes), and begins --days before.
    end_us = int((time.time() + args.events / EST_EPS) * S)
    start_us = end_us - int(args.days * DAY_S * S)
    try:
        b = Builder(store, rng, start_us, args)
        b.end_us = end_us
        await b.setup()
        stop = asyncio.Event()  # SIGTERM / SIGINT: end at the next batch, with a whole ledger
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await b.run(stop, args.progress)
        await b.flush(force=True)
        head_seq, head_hash = await store.head()
        check_all(b.state)
    finally:
        await store.close()
    append_s = time.perf_counter() - t0
    state = b.state
    if head_seq != state.seq:
        raise SystemExit(f"the log ends at {head_seq}, the state at {state.seq}")
    rebuild_s = None
    if args.rebuild:  # the read models again, from the log (what `dcp rebuild` does)
        rebuild_s = round(readmodel.rebuild(db).seconds, 1)
    # The snapshot the service would have written at the head.
    t1 = time.perf_counter()
    body = snapshots.encode_body(state, b.versions)
    header = snapshots.header_at(body, state.seq, head_hash, snapshots.params_of(state))
    path = snapshots.write(snap_dir, state.seq, header, body)
    snapshot_s = time.perf_counter() - t1
    wall = time.perf_counter() - t0
    statuses = Counter(j.status for j in state.jobs.values())
    span_days = (b.now - start_us) / S / DAY_S
    total = sum(b.mix.values())
    return {
        "renters": len(b.renters),
        "providers": len(b.providers),
        "commands": b.commands,
        "refusals": dict(sorted(b.refusals.items())),
        "skipped_recall": b.skipped,
        "jobs_in_memory": dict(sorted(statuses.items())),
        # What a `dcp serve` started now holds live (issue 11: it should follow live work).
        "live": {
            "queued": len(state.queue),
            "assigned": statuses["assigned"],
            "running": statuses["running"],
            "providers_online": len(b.online),
            "submit_keys": len(state.submit_keys),
            "deposit_refs": len(state.deposit_refs),
            "ended_in_memory": len(state.ended),
        },
        "span_days": round(span_days, 2),
        "jobs_submitted": b.submits,
        "jobs_per_day": round(b.submits / max(span_days, 1e-9)),
        # How far the last event lies behind the wall clock at the end of the build.
        "end_behind_wall_s": round(time.time() - b.now / S, 1),
        # Every kind of event in the history, and its share of the log in percent.
        "mix_pct": {t.__name__: round(100 * n / total, 3) for t, n in b.mix.most_common()},
        "sweeps": b.n_sweeps,
        "idle_beats_pct": round(100 * b.idle_beats / total, 2),
        "append_s": round(append_s, 1),
        "append_events_per_s": round(state.seq / append_s),
        "rebuild_s": rebuild_s,
        "snapshot_s": round(snapshot_s, 1),
        "snapshot": str(path),
        "wall_s": round(wall, 1),
        "events": state.seq,
        "events_per_s": round(state.seq / wall),
        "sum_halala": sum(state.balances.values()),
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True, help="SQLite file (replaced, with its snapshots)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--events", type=int, default=100_000, help="stop at about this many")
    parser.add_argument("--renters", type=int, default=1_000)
    parser.add_argument("--providers", type=int, default=100)
    parser.add_argument(
        "--days", type=float, default=90.0, help="simulated span, ending about now (default 90)"
    )
    parser.add_argument("--progress", action="store_true", help="print progress to stderr")
    parser.add_argument(
        "--rebuild", action="store_true", help="rebuild the read models from the log at the end"
    )
    args = parser.parse_args()
    if args.days <= 0 or args.events <= 0:
        parser.error("--days and --events must be positive")
    summary = asyncio.run(build(args))
    line = json.dumps(summary)
    Path(f"{args.db}.build.json").write_text(line + "\n")  # beside the log, for its readers
    print(line)
    sys.exit(0 if summary["sum_halala"] == 0 else 1)


if __name__ == "__main__":
    cli()
