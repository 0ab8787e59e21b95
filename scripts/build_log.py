"""Build a large benchmark log fast: the real domain, appended in large batches.

    python scripts/build_log.py --db /data/big.db --seed 4 --renters 100000 \
        --providers 10000 --events 10000000

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

The mix is simulate.py's (but most jobs ask for what some provider offers, FLEET_SHAPED):
every provider heartbeats (listing its leases) and polls every
HEARTBEAT_S of simulated time, spread over the interval, starts what it was given and
reports results (completed, timed out, cancelled, failed); renters submit (some with
idempotency keys), cancel and top up; admins credit, requeue failed jobs, set prices, pause,
suspend and allowlist; providers withdraw and admins pay out or reject; quiet providers let
leases expire and the sweep (every sweep_interval_s of simulated time) ends leases,
deadlines and queue timeouts. Only decisions the state in memory can make are sent: a command
about a job that left memory (the service would fold it back from the log) is skipped.

The last line printed is one JSON object: {"events": n, "events_per_s": ..., ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulate import (
    GPU_MODELS,
    HEARTBEAT_S,
    IBAN,
    IMAGES,
    OTHERS_PER_BEAT,
    PRICED_MODELS,
    SETTINGS,
    S,
)

from dcp_app import readmodel, snapshots
from dcp_app.batcher import HISTORY_IN_MEMORY
from dcp_app.service import ENDED_IN_MEMORY, hash_key
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
from dcp_projections.rows import changed_rows
from dcp_projections.state import ENDED, State
from dcp_projections.streams import stream_of

BATCH_EVENTS = 20_000  # events per append (one transaction, one fsync)
BEATS_PER_ROUND = 512  # provider heartbeats per round of the simulated clock
# The share of submits shaped after what a provider in the fleet offers (renters pick from
# what the marketplace lists). simulate.py draws every requirement blindly, so at 10k
# providers a backlog of jobs nobody can run (or not at their price) builds up for the queue
# timeout's two hours and every poll scans claim_scan_limit of them: realistic for neither
# a marketplace nor a benchmark of one.
FLEET_SHAPED = 0.95
SPEC = {
    image: ev.ContainerSpec(image=image, command=("python", "train.py"), env={"EPOCHS": "3"})
    for image in ["dcp/pytorch:2.3", "dcp/jax:0.4", "ghcr.io/dcp/train:7"]
}
STDOUT = ["epoch 1 loss 0.31\n" * n for n in range(6)]
KINDS = ["submit", "cancel", "credit", "requeue", "withdraw", "payout", "price", "topup"]
WEIGHTS = list(itertools.accumulate([14, 2, 4, 2, 2, 2, 0.5, 1]))


class Builder:
    """Decides commands on one in-memory state and appends their events in large batches."""

    def __init__(self, store: SqliteEventStore, rng: random.Random, now_us: int) -> None:
        self.store = store
        self.rng = rng
        self.now = now_us
        # The service's own cap, so the snapshot written at the end is one `dcp serve` loads.
        self.state = State(ended_cap=ENDED_IN_MEMORY, history_cap=HISTORY_IN_MEMORY)
        self.codec = default_codec()
        self.versions: dict[str, int] = {}
        self.events: list[Event] = []
        self.actors: list[str] = []
        self.head = 0  # the sequence the store holds (or will, once `writing` is done)
        self.writing: asyncio.Task[Any] | None = None
        self.renters: list[str] = []
        self.providers: list[str] = []
        self.dead: dict[str, int] = {}
        self.pending: list[str] = []
        self.next_beat = 0
        self.next_sweep = 0
        self.commands = 0
        self.refusals: Counter[str] = Counter()
        self.skipped = 0

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
            return None
        for event in new:
            apply(state, state.seq + 1, event)
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
        state.trim_ended()
        state.trim_history()
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

    # --- the workload ------------------------------------------------------------------------

    async def setup(self, n_renters: int, n_providers: int) -> None:
        rng = self.rng
        for image in IMAGES:
            self.do(cmd.AllowImage(reference=image), "admin")
        for i in range(n_renters):
            rid = self.new_id("r")
            key = hash_key(f"dcp-renter-{rng.getrandbits(128):032x}")
            c: cmd.Command = cmd.RegisterRenter(
                renter_id=rid, name=f"renter {i}", email=f"r{i}@example.sa", key_hash=key
            )
            if self.do(c, "anonymous") is not None:
                self.renters.append(rid)
            await self.flush()
        for rid in self.renters:
            amount = rng.randint(50_000, 2_000_000)
            self.do(
                cmd.CreditDeposit(renter_id=rid, amount_halala=amount, reference=f"seed-{rid}"),
                "admin",
            )
            await self.flush()
        for i in range(n_providers):
            pid = self.new_id("p")
            c = cmd.RegisterProvider(
                provider_id=pid,
                name=f"provider {i}",
                email=f"p{i}@example.sa",
                gpu_model=rng.choice(GPU_MODELS),
                gpu_count=rng.choice([2, 4, 8]),
                vram_gb=rng.choice([24, 48, 80, 141]),
                key_hash=hash_key(f"dcp-provider-{rng.getrandbits(128):032x}"),
            )
            if self.do(c, "anonymous") is not None:
                self.providers.append(pid)
            await self.flush()
        for pid in self.providers:
            self.do(cmd.SetProviderFlag(provider_id=pid, flag="approve"), "admin")
            await self.flush()  # fmt: skip

    def round(self) -> None:
        """One round: BEATS_PER_ROUND providers beat, poll, start and report; renters and
        admins send in proportion; one sweep; the clock moves on by the fleet's pace."""
        rng, state, do = self.rng, self.state, self.do
        providers, n = self.providers, len(self.providers)
        beats = min(n, BEATS_PER_ROUND)
        now = self.now
        for p, back in list(self.dead.items()):
            if back <= now:
                del self.dead[p]
        if rng.random() < 0.1 * beats / n:
            self.dead[rng.choice(providers)] = now + rng.randint(150, 600) * S
        start = self.next_beat
        self.next_beat = (start + beats) % n
        for i in range(beats):
            pid = providers[(start + i) % n]
            if pid in self.dead:
                continue
            actor = f"provider:{pid}"
            leased = tuple(sorted(state.providers[pid].leased))
            do(
                cmd.Heartbeat(provider_id=pid, running_job_ids=leased, daemon_version="sim-1"),
                actor,
            )
            do(cmd.ClaimJobs(provider_id=pid), actor)
            for job_id in leased:
                job = state.jobs.get(job_id)
                if job is None:
                    continue
                r = rng.random()
                if job.status == "assigned" and r < 0.9:
                    do(cmd.StartJob(provider_id=pid, job_id=job_id, attempt=job.attempt), actor)
                elif job.status == "running" and r < 0.7:
                    do(self.report(pid, job_id, job.attempt, job.max_duration_seconds), actor)
        newest = itertools.islice(reversed(state.jobs), 500)
        recent = [j for j in newest if state.jobs[j].status not in ENDED]
        newest_ended = itertools.islice(reversed(state.ended), 1000)
        failed = [j for j in newest_ended if state.jobs[j].status == "failed"]
        for _ in range(int(OTHERS_PER_BEAT * beats)):
            kind = rng.choices(KINDS, cum_weights=WEIGHTS)[0]
            if kind == "submit":
                rid = rng.choice(self.renters)
                do(self.submit(rid), f"renter:{rid}")
            elif kind == "cancel" and recent:
                job_id = rng.choice(recent)
                rid = state.jobs[job_id].renter_id
                do(cmd.CancelJob(job_id=job_id, renter_id=rid), f"renter:{rid}")
            elif kind == "credit":
                c: cmd.Command = cmd.CreditDeposit(
                    renter_id=rng.choice(self.renters),
                    amount_halala=rng.randint(10_000, 500_000),
                    reference=f"dep-{self.commands}",
                )
                do(c, "admin")
            elif kind == "requeue" and failed:
                do(cmd.RequeueJob(job_id=failed.pop(rng.randrange(len(failed)))), "admin")
            elif kind == "withdraw":
                pid = rng.choice(providers)
                earned = state.earnings(pid)
                if earned >= 1000:
                    wid = self.new_id("wd")
                    c = cmd.RequestWithdrawal(
                        withdrawal_id=wid,
                        provider_id=pid,
                        amount_halala=rng.randint(1000, earned),
                        iban=IBAN,
                    )
                    if do(c, f"provider:{pid}") is not None:
                        self.pending.append(wid)
            elif kind == "payout" and self.pending:
                wid = self.pending.pop(rng.randrange(len(self.pending)))
                approve = rng.random() < 0.7
                reason = "" if approve else "name mismatch"
                do(cmd.DecideWithdrawal(withdrawal_id=wid, approve=approve, reason=reason), "admin")
            elif kind == "price":
                c = cmd.SetPrice(
                    gpu_model=rng.choice(PRICED_MODELS), halala_per_gpu_hour=rng.randint(50, 1500)
                )
                do(c, "admin")
            elif kind == "topup":
                rid = rng.choice(self.renters)
                do(
                    cmd.TopUp(renter_id=rid, amount_halala=rng.randint(1_000, 50_000)),
                    f"renter:{rid}",
                )
        if rng.random() < 0.05:
            pid = rng.choice(providers)
            flag: cmd.ProviderFlag = "resume" if state.providers[pid].paused else "pause"
            do(cmd.SetProviderFlag(provider_id=pid, flag=flag), f"provider:{pid}")
        if rng.random() < 0.02:  # an admin suspends a provider, or lifts a suspension
            pid = rng.choice(providers)
            flag = "unsuspend" if state.providers[pid].suspended else "suspend"
            do(cmd.SetProviderFlag(provider_id=pid, flag=flag), "admin")
        if rng.random() < 0.02:  # the allowlist changes (an image no job uses)
            if "dcp/legacy:1" in state.images:
                do(cmd.RemoveImage(reference="dcp/legacy:1"), "admin")
            else:
                do(cmd.AllowImage(reference="dcp/legacy:1"), "admin")
        # The service sweeps on a timer (every sweep_interval_s), in bounded rounds until one
        # ends fewer than the limit; a sweep looks at every lease and queued job.
        if now >= self.next_sweep:
            self.next_sweep = now + SETTINGS.sweep_interval_s * S
            for _ in range(8):
                swept = do(cmd.Sweep(), "system")
                if swept is None or len(swept) < SETTINGS.sweep_limit:
                    break
        step_us = HEARTBEAT_S * S * beats // n
        self.now += int(step_us * rng.uniform(0.5, 1.5))

    def submit(self, renter_id: str) -> cmd.SubmitJob:
        rng = self.rng
        if rng.random() < FLEET_SHAPED:
            # What the marketplace lists: the GPU model, memory and count of a provider in it.
            p = self.state.providers[rng.choice(self.providers)]
            gpu_type = p.gpu_model
            min_vram = rng.choice([0, 0, p.vram_gb])
            count = min(p.gpu_count, rng.choice([1, 1, 1, 2, 4]))
        else:  # simulate.py's: anything, some of it for GPUs nobody offers
            gpu_type = rng.choice([*GPU_MODELS, "any", "any"])
            min_vram = rng.choice([0, 0, 24, 80])
            count = rng.choice([1, 1, 1, 2, 4])
        return cmd.SubmitJob(
            job_id=self.new_id("job"),
            renter_id=renter_id,
            container_spec=SPEC[rng.choice(list(SPEC))],
            gpu_requirements=ev.GpuRequirements(
                gpu_type=gpu_type, min_vram_gb=min_vram, gpu_count=count
            ),
            max_duration_seconds=rng.choice([60, 300, 600, 1800, 3600]),
            priority=rng.choice(["priority", "standard", "standard", "economy"]),
            idempotency_key=f"k{rng.randint(0, 10**9)}" if rng.random() < 0.3 else None,
        )

    def report(self, pid: str, job_id: str, attempt: int, max_s: int) -> cmd.ReportResult:
        rng = self.rng
        outcome = rng.choices(
            ["completed", "timed_out", "cancelled", "failed"], weights=[70, 8, 7, 15]
        )[0]
        return cmd.ReportResult(
            provider_id=pid,
            job_id=job_id,
            attempt=attempt,
            outcome=outcome,  # type: ignore[arg-type]
            exit_code=rng.choice([0, 0, 0, 1]),
            runtime_seconds=rng.uniform(1, max_s * 1.2),
            stdout=rng.choice(STDOUT),
            error="CUDA error: an illegal memory access" if outcome == "failed" else "",
        )


async def build(args: argparse.Namespace) -> dict[str, Any]:
    db = Path(args.db)
    for suffix in ("", "-wal", "-shm"):
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
    try:
        b = Builder(store, rng, 1_750_000_000 * S)
        await b.setup(args.renters, args.providers)
        last = time.perf_counter()
        stop = asyncio.Event()  # SIGTERM / SIGINT: end at the next batch, with a whole ledger
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        while b.state.seq < args.events and not stop.is_set():
            b.round()
            await b.flush()
            if args.progress and time.perf_counter() - last > 30:
                last = time.perf_counter()
                eps = b.state.seq / (last - t0)
                print(
                    f"{b.state.seq} events, {eps:.0f}/s, {len(b.state.jobs)} jobs in memory",
                    file=sys.stderr,
                )
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
    path = snapshots.write(snap_dir, state.seq, snapshots.encode(state, b.versions, head_hash))
    snapshot_s = time.perf_counter() - t1
    wall = time.perf_counter() - t0
    statuses = Counter(j.status for j in state.jobs.values())
    return {
        "renters": len(b.renters),
        "providers": len(b.providers),
        "commands": b.commands,
        "refusals": dict(sorted(b.refusals.items())),
        "skipped_recall": b.skipped,
        "jobs_in_memory": dict(sorted(statuses.items())),
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
    parser.add_argument("--progress", action="store_true", help="print progress to stderr")
    parser.add_argument(
        "--rebuild", action="store_true", help="rebuild the read models from the log at the end"
    )
    summary = asyncio.run(build(parser.parse_args()))
    print(json.dumps(summary))
    sys.exit(0 if summary["sum_halala"] == 0 else 1)


if __name__ == "__main__":
    cli()
