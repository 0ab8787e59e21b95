"""Drive the real store and the ledger service with a random, valid workload.

    python scripts/simulate.py --db /tmp/sim.db --seed 1 --commands 50000

Renters register and get credits, providers register and are approved, jobs are submitted and
end in every way (completed, timed out, cancelled queued or running, failed and retried,
requeued by an admin), providers go quiet so leases expire, providers withdraw and admins
complete or reject. Commands are sent in concurrent rounds so the service batches them and the
store commits each batch with one fsync. The clock is simulated (each round moves it on), so
leases, deadlines and queue timeouts happen in seconds of wall time.

The mix is the same at any size: each provider heartbeats (and polls) every HEARTBEAT_S of
simulated time, spread over the interval as a real fleet's are, so a round carries at most
a quarter of the round's commands and the clock moves on by HEARTBEAT_S * beats / providers.
For a large benchmark log (10M events, 100k renters, 10k providers) use scripts/build_log.py:
decided by the same domain and appended in large batches, several times faster than commands
sent one by one through the service here, with months of simulated history (a fleet that
comes online for work, a queue that drains, keys that expire) where this mix packs its
commands into simulated hours.

At the end it folds the log again from scratch, checks every invariant, rebuilds the read
models into a scratch file and compares them with the live ones. The last line printed is one
JSON object: {"events": n, "sum_halala": 0, "invariants_ok": true, ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcp_app import readmodel
from dcp_app.queries import Queries
from dcp_app.service import LedgerService
from dcp_events import catalogue as ev
from dcp_events.errors import DcpError
from dcp_events.sqlite_store import SqliteEventStore, open_connection
from dcp_projections.errors import DomainError
from dcp_projections.fold import check_all
from dcp_projections.settings import Settings
from dcp_projections.state import ENDED, LEASED

S = 1_000_000
IMAGES = ["dcp/pytorch:2.3", "dcp/jax:0.4", "ghcr.io/dcp/*"]
PRICED_MODELS = ["H200", "H100", "A100", "RTX 4090"]
# Models the pricing table leaves at the default price: a job for "any" GPU pays the default and
# runs only on a GPU its price covers (docs/ledger.md), so a fleet needs some of these.
DEFAULT_PRICED_MODELS = ["T4", "RTX 3060"]
GPU_MODELS = PRICED_MODELS + DEFAULT_PRICED_MODELS
IBAN = "SA0380000000608010167519"
ROUND = 256  # commands sent concurrently per round (--round)
HEARTBEAT_S = 30  # each provider heartbeats and polls this often (simulated seconds)
OTHERS_PER_BEAT = 1.5  # renter and admin commands per provider heartbeat
SETTINGS = Settings(
    lease_ttl_s=120,
    max_attempts=3,
    online_s=90,
    stale_s=300,
    deadline_grace_s=60,
    queue_timeout_s=2 * 3600,
    sandbox=True,
    claim_scan_limit=1000,
)


class Sim:
    def __init__(self, svc: LedgerService, rng: random.Random, clock: list[int]) -> None:
        self.svc = svc
        self.rng = rng
        self.clock = clock
        self.renters: list[str] = []
        self.providers: list[str] = []
        self.dead: dict[str, int] = {}  # quiet providers -> when they come back (us)
        self.round = 0
        self.next_beat = 0  # index into providers of the next one to heartbeat
        self.pending: list[str] = []  # withdrawals awaiting an admin
        self.outcomes: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.sent = 0
        self.progress = False
        self.round_size = ROUND

    async def call(self, aw: Awaitable[Any]) -> Any:
        self.sent += 1
        try:
            return await aw
        except DomainError as e:
            self.refusals[e.code] += 1
            return None

    async def setup(self, n_renters: int, n_providers: int) -> None:
        for image in IMAGES:
            await self.call(self.svc.allow_image(image))
        regs = await asyncio.gather(
            *[
                self.call(self.svc.register_renter(f"renter {i}", f"r{i}@example.sa"))
                for i in range(n_renters)
            ]
        )
        self.renters = [r.renter_id for r in regs]
        await asyncio.gather(
            *[
                self.call(self.svc.credit(rid, self.rng.randint(50_000, 2_000_000), f"seed-{rid}"))
                for rid in self.renters
            ]
        )
        provs = await asyncio.gather(
            *[
                self.call(
                    self.svc.register_provider(
                        f"provider {i}",
                        f"p{i}@example.sa",
                        self.rng.choice(GPU_MODELS),
                        self.rng.choice([2, 4, 8]),
                        self.rng.choice([24, 48, 80, 141]),
                    )
                )
                for i in range(n_providers)
            ]
        )
        self.providers = [p.provider_id for p in provs]
        await asyncio.gather(*[self.call(self.svc.approve_provider(p)) for p in self.providers])

    # --- one round of commands ---------------------------------------------------------------

    def round_commands(self) -> list[Awaitable[Any]]:
        rng, svc, state = self.rng, self.svc, self.svc.state
        out: list[Awaitable[Any]] = []
        # Now and then a provider goes quiet for a few minutes: its leases expire.
        self.round += 1
        now = self.clock[0]
        for p, back in list(self.dead.items()):
            if back <= now:
                del self.dead[p]
        if rng.random() < 0.1 * self.beats / len(self.providers):
            self.dead[rng.choice(self.providers)] = now + rng.randint(150, 600) * S
        # Workers due this round: heartbeat (listing their leases), poll, start and report.
        n = len(self.providers)
        due = [self.providers[(self.next_beat + i) % n] for i in range(self.beats)]
        self.next_beat = (self.next_beat + self.beats) % n
        for pid in due:
            if pid in self.dead:
                continue
            leased = sorted(state.providers[pid].leased)
            out.append(svc.heartbeat(pid, running_job_ids=leased, daemon_version="sim-1"))
            out.append(svc.claim_jobs(pid))
            for job_id in leased:
                job = state.jobs[job_id]
                r = rng.random()
                if job.status == "assigned" and r < 0.9:
                    out.append(svc.start_job(pid, job_id, job.attempt))
                elif job.status == "running" and r < 0.7:
                    out.append(self.report(pid, job_id, job.attempt, job.max_duration_seconds))
        # Renters: submit, sometimes cancel; admins credit, requeue, set prices.
        # Samples from the newest jobs only: a round costs the same at any log size.
        newest = itertools.islice(reversed(state.jobs), 500)
        recent = [j for j in newest if state.jobs[j].status not in ENDED]
        newest_ended = itertools.islice(reversed(state.ended), 5000)
        failed = [j for j in newest_ended if state.jobs[j].status == "failed"]
        pending = self.pending
        kinds = ["submit", "cancel", "credit", "requeue", "withdraw", "payout", "price", "topup"]
        weights = [14, 2, 4, 2, 2, 2, 0.5, 1]
        # Renters and admins send in proportion to the providers that beat: the fleet's
        # capacity, so the queue neither runs dry nor grows without end at any size.
        others = len(out) + OTHERS_PER_BEAT * self.beats
        while len(out) < others:
            kind = rng.choices(kinds, weights)[0]
            if kind == "submit":
                out.append(self.submit())
            elif kind == "cancel" and recent:
                job_id = rng.choice(recent)
                out.append(svc.cancel_job(job_id, state.jobs[job_id].renter_id))
            elif kind == "credit":
                rid = rng.choice(self.renters)
                ref = f"dep-{self.sent}-{len(out)}"
                out.append(svc.credit(rid, rng.randint(10_000, 500_000), ref))
            elif kind == "requeue" and failed:
                out.append(svc.requeue_job(failed.pop(rng.randrange(len(failed)))))
            elif kind == "withdraw":
                pid = rng.choice(self.providers)
                earned = state.earnings(pid)
                if earned >= 1000:
                    out.append(self.withdraw(pid, rng.randint(1000, earned)))
            elif kind == "payout" and pending:
                wid = pending.pop(rng.randrange(len(pending)))
                if rng.random() < 0.7:
                    out.append(svc.complete_withdrawal(wid))
                else:
                    out.append(svc.reject_withdrawal(wid, "name mismatch"))
            elif kind == "price":
                out.append(svc.set_price(rng.choice(PRICED_MODELS), rng.randint(50, 1500)))
            elif kind == "topup":
                out.append(svc.topup(rng.choice(self.renters), rng.randint(1_000, 50_000)))
        if rng.random() < 0.05:
            pid = rng.choice(self.providers)
            paused = state.providers[pid].paused
            out.append(svc.resume_provider(pid) if paused else svc.pause_provider(pid))
        if rng.random() < 0.02:  # an admin suspends a provider, or lifts a suspension
            pid = rng.choice(self.providers)
            suspended = state.providers[pid].suspended
            out.append(svc.unsuspend_provider(pid) if suspended else svc.suspend_provider(pid))
        if rng.random() < 0.02:  # the allowlist changes (an image no job uses)
            listed = "dcp/legacy:1" in state.images
            out.append(
                svc.remove_image("dcp/legacy:1") if listed else svc.allow_image("dcp/legacy:1")
            )
        out.append(svc.sweep())
        return out

    @property
    def beats(self) -> int:
        return min(len(self.providers), self.round_size // 4)

    async def withdraw(self, pid: str, amount: int) -> Any:
        w = await self.svc.withdraw(pid, amount, IBAN)
        self.pending.append(w.withdrawal_id)
        return w

    def submit(self) -> Awaitable[Any]:
        rng = self.rng
        image = rng.choice(["dcp/pytorch:2.3", "dcp/jax:0.4", "ghcr.io/dcp/train:7"])
        return self.svc.submit_job(
            rng.choice(self.renters),
            ev.ContainerSpec(image=image, command=("python", "train.py"), env={"EPOCHS": "3"}),
            ev.GpuRequirements(
                gpu_type=rng.choice([*GPU_MODELS, "any", "any"]),
                min_vram_gb=rng.choice([0, 0, 24, 80]),
                gpu_count=rng.choice([1, 1, 1, 2, 4]),
            ),
            max_duration_seconds=rng.choice([60, 300, 600, 1800, 3600]),
            priority=rng.choice(["priority", "standard", "standard", "economy"]),
            idempotency_key=f"k{rng.randint(0, 10**9)}" if rng.random() < 0.3 else None,
        )

    def report(self, pid: str, job_id: str, attempt: int, max_s: int) -> Awaitable[Any]:
        rng = self.rng
        outcome = rng.choices(
            ["completed", "timed_out", "cancelled", "failed"], weights=[70, 8, 7, 15]
        )[0]
        self.outcomes[outcome] += 1
        return self.svc.report_result(
            pid,
            job_id,
            attempt,
            outcome,
            exit_code=rng.choice([0, 0, 0, 1]),
            runtime_seconds=rng.uniform(1, max_s * 1.2),
            stdout="epoch 1 loss 0.31\n" * rng.randint(0, 5),
            stderr="",
            error="CUDA error: an illegal memory access" if outcome == "failed" else "",
        )

    async def run(self, n_commands: int) -> None:
        while self.sent < n_commands:
            commands = self.round_commands()
            keep = max(1, n_commands - self.sent)
            for c in commands[keep:]:
                c.close()  # type: ignore[attr-defined]  # never sent: the last round is cut
            await asyncio.gather(*[self.call(c) for c in commands[:keep]])
            # The time it takes the fleet to send this round's heartbeats, give or take.
            step_us = HEARTBEAT_S * S * self.beats // len(self.providers)
            self.clock[0] += int(step_us * self.rng.uniform(0.5, 1.5))
            if self.progress and self.round % 2000 == 0:
                print(f"{self.sent} commands, {self.svc.state.seq} events", file=sys.stderr)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    db = Path(args.db)
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    rng = random.Random(args.seed)
    clock = [1_750_000_000 * S]
    store = await SqliteEventStore.open(db)
    owners = await Queries.open(db)
    try:
        # Ids from the seeded generator, so one seed replays one run exactly.
        def ids(prefix: str) -> str:
            return f"{prefix}-{rng.getrandbits(64):016x}"

        svc = await LedgerService.open(
            store,
            SETTINGS,
            clock=lambda: clock[0],
            ids=ids,
            job_owner=owners.job_owner,
            history=owners,
        )
        try:
            sim = Sim(svc, rng, clock)
            sim.progress = args.progress
            sim.round_size = args.round
            t0 = time.perf_counter()
            await sim.setup(n_renters=args.renters, n_providers=args.providers)
            await sim.run(args.commands)
            wall = time.perf_counter() - t0
            live = svc.state
            check_all(live)
            statuses = Counter(j.status for j in live.jobs.values())
            leased = sum(1 for j in live.jobs.values() if j.status in LEASED)
        finally:
            await svc.close()
    finally:
        await owners.close()
        await store.close()
    summary = {
        "commands": sim.sent,
        "wall_s": round(wall, 2),
        "commands_per_s": round(sim.sent / wall),
        "batches": svc.batches,
        "jobs_in_memory": dict(sorted(statuses.items())),
        "still_leased": leased,
        "refusals": dict(sorted(sim.refusals.items())),
        "events": live.seq,
        "sum_halala": sum(live.balances.values()),
    }
    if not args.check:  # a benchmark log: `dcp audit verify` / `replay` check it later
        return {**summary, "invariants_ok": True}

    # Independent checks: fold the log from scratch; rebuild the read models and compare.
    conn = open_connection(db)
    try:
        refolded = readmodel.fold_log(conn)
    finally:
        conn.close()
    check_all(refolded)
    same_state = refolded.balances == live.balances and refolded.seq == live.seq
    with tempfile.TemporaryDirectory() as tmp:
        report = readmodel.rebuild(db, into=Path(tmp) / "rebuilt.db")
        differing = readmodel.compare(db, Path(tmp) / "rebuilt.db")
    queries = await Queries.open(db)
    try:
        recon = await queries.reconciliation()
    finally:
        await queries.close()
    return {
        **summary,
        "rebuild_events_per_s": round(report.events_per_s),
        "rebuilt_tables_differing": differing,
        "events": recon.head_seq,
        "sum_halala": recon.sum_halala,
        "invariants_ok": bool(recon.invariants_ok and same_state and not differing),
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True, help="SQLite file (replaced)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--commands", type=int, default=10_000)
    parser.add_argument("--renters", type=int, default=200)
    parser.add_argument("--providers", type=int, default=60)
    parser.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="skip the refold and read-model rebuild at the end (for big benchmark logs)",
    )
    parser.add_argument("--progress", action="store_true", help="print progress to stderr")
    parser.add_argument("--round", type=int, default=ROUND, help="commands sent per round")
    args = parser.parse_args()
    try:
        summary = asyncio.run(main(args))
    except DcpError as e:
        print(json.dumps({"error": repr(e), "invariants_ok": False}))
        sys.exit(1)
    extra = {k: v for k, v in summary.items() if k not in ("events", "sum_halala", "invariants_ok")}
    print(json.dumps(extra))
    last = {k: summary[k] for k in ("events", "sum_halala", "invariants_ok")}
    print(json.dumps(last))
    sys.exit(0 if summary["invariants_ok"] and summary["sum_halala"] == 0 else 1)


if __name__ == "__main__":
    cli()
