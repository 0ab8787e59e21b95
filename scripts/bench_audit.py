"""Benchmark `dcp audit verify` and `dcp audit replay` over a log of 1,000,000 events.

    python scripts/bench_audit.py [--events N] [--db PATH] [--source simulate|synthetic]

How the log is built (not part of the timings; its time is printed):

- `simulate` (the default when scripts/simulate.py exists): simulating 1,000,000 events in one
  run takes far too long (the simulator slows as its marketplace grows), so the simulator runs
  once for a realistic workload (`--commands`, default 50,000: about 45,000 events through the
  real service), and copies of that workload are appended through the store, in transactions
  of 20,000 events, until the log holds N events. Each copy renames every id (renters,
  providers, jobs, withdrawals: the service's `<prefix>-<16 hex>` ids), deposit references and
  key hashes, so each copy is a marketplace of its own and the whole log folds cleanly through
  every invariant. The jobs still queued at the end of the workload (and every event that
  names them) are left out of the copies: in one long run they would time out, but in a copy
  they would wait forever, and 22 copies would pile up a backlog of about 170,000 queued jobs
  that no real log of this size holds (the fold's sorted queue then costs O(backlog) per
  submission). `--keep-backlog` keeps them, to measure that case.
- `synthetic`: simulate-like lifecycles appended directly (registrations, deposits,
  heartbeats, jobs that complete or are cancelled, withdrawals) in the same transactions,
  with the domain's own settlement functions; every job ends, so no backlog.

Then the read models are written by the domain's rebuild (dcp_app.readmodel.rebuild), so
that replay has stored tables to compare against. Then, timed, each on a fresh read-only
snapshot: verify (hash chain, sequence, schemas, postings, invariants) and replay (fold,
rebuild every row, compare every table and posting), and a rebuild of the read models into a
scratch file. Goal (issue 11): at least 150,000 events/s each.
Prints wall and CPU seconds (this process and its children), then one JSON object as the last
line. With --db, the log at PATH is built once if missing and reused as is afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dcp_app.readmodel import rebuild  # noqa: E402
from dcp_audit._log import open_readonly, snapshot  # noqa: E402
from dcp_audit.replay import replay  # noqa: E402
from dcp_audit.verify import verify  # noqa: E402
from dcp_events import catalogue as ev  # noqa: E402
from dcp_events.codec import Codec, default_codec  # noqa: E402
from dcp_events.event import Event  # noqa: E402
from dcp_events.sqlite_store import SqliteEventStore, iter_event_batches, open_connection  # noqa: E402
from dcp_events.store import AppendRequest, NewEvent  # noqa: E402
from dcp_projections import money  # noqa: E402
from dcp_projections.settlement import (  # noqa: E402
    charge,
    rate_halala_per_hour,
    refund_all,
    reserve_halala,
)
from dcp_projections.state import State  # noqa: E402
from dcp_projections.streams import stream_of  # noqa: E402

GOAL = 150_000  # events/s, each of rebuild, verify and replay (issue 11)
BATCH_EVENTS = 20_000  # events per append_atomic call (one transaction)
SIMULATE = ROOT / "scripts" / "simulate.py"

Chunk = list[tuple[str, list[NewEvent]]]


# --- building the log ----------------------------------------------------------------------


async def append_all(path: Path, chunks: Iterator[Chunk], target: int) -> int:
    """Append `chunks` (each a list of (stream, events)) until `target` events are stored."""
    store = await SqliteEventStore.open(path)
    written = 0
    try:
        for chunk in chunks:
            requests = [AppendRequest(stream, None, events) for stream, events in chunk]
            await store.append_atomic(requests)
            written += sum(len(events) for _, events in chunk)
            if written >= target:
                break
    finally:
        await store.close()
    return written


def batched(units: Iterator[tuple[str, list[NewEvent]]], target: int) -> Iterator[Chunk]:
    """Group (stream, events) units into chunks of about BATCH_EVENTS, stopping at `target`."""
    chunk: Chunk = []
    size = total = 0
    for stream, events in units:
        if total + len(events) > target:
            events = events[: target - total]
        if not events:
            break
        chunk.append((stream, events))
        size += len(events)
        total += len(events)
        if size >= BATCH_EVENTS:
            yield chunk
            chunk, size = [], 0
        if total >= target:
            break
    if chunk:
        yield chunk


def synthetic_units(target: int) -> Iterator[tuple[str, list[NewEvent]]]:
    """Simulate-like marketplace histories, one universe of 50 renters and 10 providers after
    another, each renter running many jobs; about 40% of events are heartbeats."""
    codec = default_codec()
    produced = 0
    universe = 0
    t = 1_790_000_000_000_000
    while produced < target:
        u = f"u{universe}"
        providers = [f"p-{u}-{i}" for i in range(10)]
        for pid in providers:
            yield from _units(
                codec,
                f"provider-{pid}",
                [
                    ev.ProviderRegistered(
                        provider_id=pid,
                        name=pid,
                        email=f"{pid}@example.com",
                        gpu_model="H100",
                        gpu_count=8,
                        vram_gb=80,
                        key_hash=_hash(pid),
                        approved=True,
                        at_us=t,
                    ),
                ],
            )
        for r in range(50):
            rid = f"r-{u}-{r}"
            amount = 5_000_000
            units: list[tuple[str, list[Event]]] = [
                (
                    f"renter-{rid}",
                    [
                        ev.RenterRegistered(
                            renter_id=rid,
                            name=rid,
                            email=f"{rid}@example.com",
                            key_hash=_hash(rid),
                            at_us=t,
                        ),
                        ev.DepositCredited(
                            renter_id=rid,
                            amount_halala=amount,
                            reference=f"dep-{rid}",
                            at_us=t,
                            postings=money.credit(rid, amount),
                        ),
                    ],
                )
            ]
            for j in range(60):
                t += 1_000_000
                pid = providers[(r + j) % len(providers)]
                units.append((f"renter-{rid}", _job_events(rid, f"j-{rid}-{j}", pid, j, t)))
                beats = [
                    ev.ProviderHeartbeat(
                        provider_id=pid,
                        at_us=t + k,
                        gpus=(ev.GpuInfo(model="H100", count=8, vram_total_mb=81_920),),
                        running_job_ids=(f"j-{rid}-{j}",),
                        daemon_version="1.4.2",
                    )
                    for k in range(3)
                ]
                units.append((f"provider-{pid}", beats))
            for stream, events in units:
                yield from _units(codec, stream, events)
                produced += len(events)
        for pid in providers:
            wid = f"w-{pid}"
            yield from _units(
                codec,
                f"provider-{pid}",
                [
                    ev.WithdrawalRequested(
                        withdrawal_id=wid,
                        provider_id=pid,
                        amount_halala=1000,
                        iban="SA0380000000608010167519",
                        at_us=t,
                        postings=money.withdraw(pid, 1000),
                    ),
                    ev.WithdrawalCompleted(
                        withdrawal_id=wid,
                        provider_id=pid,
                        amount_halala=1000,
                        at_us=t + 1,
                        postings=money.pay_out(pid, 1000),
                    ),
                ],
            )
        universe += 1


def _hash(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def _units(codec: Codec, stream: str, events: list[Event]) -> Iterator[tuple[str, list[NewEvent]]]:
    yield stream, [codec.encode(e, actor="bench") for e in events]


def _job_events(rid: str, job_id: str, pid: str, j: int, t: int) -> list[Event]:
    rate = rate_halala_per_hour(709, 1, "standard")
    reserve = reserve_halala(rate, 1800)
    submitted = ev.JobSubmitted(
        job_id=job_id,
        renter_id=rid,
        container_spec=ev.ContainerSpec(
            image="ghcr.io/dcp/pytorch:2.4", command=("python", "train.py")
        ),
        gpu_requirements=ev.GpuRequirements(gpu_type="H100", min_vram_gb=40),
        max_duration_seconds=1800,
        price_halala_per_gpu_hour=709,
        rate_halala_per_hour=rate,
        cost_halala=reserve,
        at_us=t,
        postings=money.hold(rid, reserve),
    )
    if j % 10 == 9:
        s = refund_all(reserve)
        return [
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
        ]
    claimed = ev.JobClaimed(
        job_id=job_id,
        renter_id=rid,
        provider_id=pid,
        attempt=1,
        lease_expires_us=t + 120_000_000,
        at_us=t + 1,
    )
    started = ev.JobStarted(job_id=job_id, renter_id=rid, provider_id=pid, attempt=1, at_us=t + 2)
    runtime = 30 + (j * 37) % 1700
    s = charge(reserve, rate, runtime)
    done = ev.JobCompleted(
        job_id=job_id,
        renter_id=rid,
        provider_id=pid,
        attempt=1,
        reported_runtime_seconds=runtime,
        measured_runtime_seconds=runtime + 1,
        output=ev.JobOutput(exit_code=0, stdout="epoch 1 loss 0.31\n", sha256=_hash(job_id)),
        settlement=s,
        at_us=t + 3,
        postings=money.settle(rid, pid, reserve, s),
    )
    return [submitted, claimed, started, done]


# Ids the service makes (`<prefix>-<16 hex>`) and deposit references, renamed per copy.
# Ids the service makes (`<prefix>-<16 hex>`), deposit references and key hashes: renamed
# per copy, so every copy is a marketplace of its own.
_ID = re.compile(rb"\b([a-z]+-[0-9a-f]{16})\b")
_REFERENCE = re.compile(rb'("reference":")([^"]*)(")')
_KEY_HASH = re.compile(rb'("key_hash":")([0-9a-f]{64})(")')


def simulated_units(
    workdir: Path, target: int, commands: int, drop_backlog: bool
) -> Iterator[tuple[str, list[NewEvent]]]:
    """Copies of one simulated workload, every id renamed per copy (see the module doc)."""
    seed_db = workdir / "seed.db"
    argv = [sys.executable, str(SIMULATE), "--db", str(seed_db), "--seed", "7"]
    sim = subprocess.run(
        [*argv, "--commands", str(commands)],
        check=True,
        cwd=ROOT,
        timeout=1800,
        capture_output=True,
        text=True,
    )
    print("simulate:", sim.stdout.strip().splitlines()[-1])
    conn = open_connection(seed_db)
    backlog: set[bytes] = set()
    if drop_backlog:
        rows = conn.execute("SELECT job_id FROM jobs WHERE status = 'queued'").fetchall()
        backlog = {r[0].encode() for r in rows}
    workload: list[tuple[str, NewEvent]] = []
    dropped = 0
    for batch in iter_event_batches(conn):
        for rec in batch:
            if backlog and not backlog.isdisjoint(_ID.findall(rec.payload)):
                dropped += 1  # an event of a job still queued at the end: see the module doc
                continue
            workload.append(
                (rec.stream_id, NewEvent(rec.type, rec.schema_version, rec.payload, rec.actor))
            )
    conn.close()
    if drop_backlog:
        print(
            f"workload: {len(workload)} events; {dropped} events of {len(backlog)} jobs "
            "still queued at its end left out"
        )
    if not workload:
        raise SystemExit("the simulator wrote no events")
    # Each copy starts from the prices the workload started from: the prices it set live on
    # after it in the log, and a job of the next copy, submitted at a start price, would be
    # claimed at the last one.
    codec = default_codec()
    start_prices = [
        codec.encode(
            ev.PriceSet(gpu_model=p.gpu_model, halala_per_gpu_hour=p.halala_per_gpu_hour, at_us=0),
            "admin",
        )
        for p in State().pricing.values()
    ]
    produced = 0
    copy = 0
    while produced < target:
        tag = b"%x" % copy
        sub = rb"\1x" + tag
        if copy and start_prices:
            yield stream_of(ev.PriceSet(gpu_model="", halala_per_gpu_hour=0, at_us=0)), start_prices
            produced += len(start_prices)

        def rehash_key(m: re.Match[bytes], tag: bytes = tag) -> bytes:
            return m[1] + hashlib.sha256(m[2] + tag).hexdigest().encode() + m[3]

        run: list[NewEvent] = []
        run_stream = ""
        for stream, e in workload:
            payload = _ID.sub(sub, e.payload)
            if e.type == "renter.deposit_credited":
                payload = _REFERENCE.sub(rb"\1\2~" + tag + rb"\3", payload)
            elif e.type in ("renter.registered", "provider.registered"):
                payload = _KEY_HASH.sub(rehash_key, payload)
            s = _ID.sub(sub, stream.encode()).decode()
            if s != run_stream and run:
                yield run_stream, run
                run = []
            run_stream = s
            run.append(NewEvent(e.type, e.schema_version, payload, e.actor))
            produced += 1
        if run:
            yield run_stream, run
        copy += 1


# --- timing --------------------------------------------------------------------------------


def cpu_s() -> float:
    """CPU seconds used so far by this process and its finished children (the chain pass)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed_rebuild(path: Path, workdir: Path) -> tuple[float, float]:
    """Wall and CPU seconds of a rebuild of every read model from the log at `path`, into a
    scratch file (the log's own tables are left as they are)."""
    into = workdir / "rebuild.db"
    into.unlink(missing_ok=True)
    t0, c0 = time.perf_counter(), cpu_s()
    rebuild(path, into=into)
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    into.unlink(missing_ok=True)
    return wall, cpu


def timed(
    path: Path, fn: Callable[[sqlite3.Connection], dict[str, Any]]
) -> tuple[float, float, dict[str, Any]]:
    """Wall seconds, CPU seconds and the result of fn on a fresh read-only snapshot."""
    conn = open_readonly(path)
    try:
        with snapshot(conn):
            c0, t0 = cpu_s(), time.perf_counter()
            result = fn(conn)
            return time.perf_counter() - t0, cpu_s() - c0, result
    finally:
        conn.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--db", type=Path, help="reuse (or build once into) this log file")
    p.add_argument(
        "--source",
        choices=["simulate", "synthetic"],
        default="simulate" if SIMULATE.exists() else "synthetic",
    )
    p.add_argument(
        "--commands", type=int, default=50_000, help="simulate: commands in the workload"
    )
    p.add_argument(
        "--keep-backlog",
        action="store_true",
        help="simulate: keep the jobs still queued at the end of the workload in every copy",
    )
    p.add_argument(
        "--repeat", type=int, default=3, help="time each tool this many times; report the best"
    )
    args = p.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_audit_"))
    path = args.db or workdir / "audit.db"
    build_s = rebuild_s = 0.0
    source = f"existing file {path}" if path.exists() else args.source
    try:
        if not path.exists():
            t0 = time.perf_counter()
            if args.source == "simulate":
                units = simulated_units(workdir, args.events, args.commands, not args.keep_backlog)
            else:
                units = synthetic_units(args.events)
            written = asyncio.run(append_all(path, batched(units, args.events), args.events))
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            rebuild(path)
            rebuild_s = time.perf_counter() - t0
            print(f"built {written} events in {build_s:.1f} s; read models in {rebuild_s:.1f} s")
        load = os.getloadavg()[0]
        queued = (
            sqlite3.connect(path)
            .execute("SELECT count(*) FROM jobs WHERE status = 'queued'")
            .fetchone()[0]
        )
        # The best of a few runs: on a shared machine the others' load only ever adds time.
        verify_runs = [timed(path, lambda c: verify(c).as_dict()) for _ in range(args.repeat)]
        replay_runs = [timed(path, lambda c: replay(c).as_dict()) for _ in range(args.repeat)]
        rebuild_runs = [timed_rebuild(path, workdir) for _ in range(args.repeat)]
        rebuild_best_s, rebuild_cpu = min(rebuild_runs)
        verify_s, verify_cpu, summary = min(verify_runs, key=lambda r: r[0])
        replay_s, replay_cpu, report = min(replay_runs, key=lambda r: r[0])
    finally:
        if args.db is None:
            shutil.rmtree(workdir, ignore_errors=True)
    events = int(summary["events"])  # type: ignore[call-overload]
    result = {
        "bench": "audit",
        "source": source,
        "queued_jobs_at_head": queued,
        "events": events,
        "build_s": round(build_s, 1),
        "rebuild_read_models_s": round(rebuild_s, 1),
        "verify_s": round(verify_s, 2),
        "verify_events_per_s": round(events / verify_s),
        "replay_s": round(replay_s, 2),
        "replay_events_per_s": round(events / replay_s),
        "verify_runs_s": [round(r[0], 2) for r in verify_runs],
        "replay_runs_s": [round(r[0], 2) for r in replay_runs],
        "rebuild_s": round(rebuild_best_s, 2),
        "rebuild_events_per_s": round(events / rebuild_best_s),
        "rebuild_cpu_s": round(rebuild_cpu, 2),
        "verify_cpu_s": round(verify_cpu, 2),
        "replay_cpu_s": round(replay_cpu, 2),
        "replay_differences": report["differences_total"],
        "load_avg_1m_before": round(load, 2),
        "cpus": os.cpu_count(),
        "head_hash": summary["head_hash"],
        "sum_halala": summary["sum_halala"],
        "goal_events_per_s": GOAL,
        "goal_met": min(events / verify_s, events / replay_s, events / rebuild_best_s) >= GOAL,
        "python": sys.version.split()[0],
    }
    print(f"{'':10}{'wall s':>10}{'events/s':>12}{'cpu s':>10}")
    print(f"{'verify':10}{verify_s:>10.2f}{result['verify_events_per_s']:>12,}{verify_cpu:>10.2f}")
    print(f"{'replay':10}{replay_s:>10.2f}{result['replay_events_per_s']:>12,}{replay_cpu:>10.2f}")
    rebuild_eps = result["rebuild_events_per_s"]
    print(f"{'rebuild':10}{rebuild_best_s:>10.2f}{rebuild_eps:>12,}{rebuild_cpu:>10.2f}")
    print(json.dumps(result))
    return 0 if report["differences_total"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
