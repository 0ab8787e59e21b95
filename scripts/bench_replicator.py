"""Benchmark the replicator into a real PostgreSQL: rows/s, and lag while a writer writes.

    python scripts/bench_replicator.py [--events N] [--dsn DSN] [--source simulate|synthetic]

DSN: --dsn, else DCP_TEST_PG_DSN (what `eval "$(scripts/ci/postgres.sh)"` exports); the role
must be allowed to create databases, since every phase works in a fresh database.

1. Throughput: a log of N events (default 50,000; from scripts/simulate.py or synthetic) is
   replicated from scratch with `--once` semantics at a few batch sizes; rows/s and events/s
   per batch size.
2. Lag under load: a writer appends to the log while the replicator runs continuously in its
   own process, as `dcp replicate` would: scripts/simulate.py (the real service, as fast as it
   goes; with --source simulate, the default when it exists), then the simulator's workload
   driving the service in this process (tests/dcp_replicator/ledger.py) paced at --rate
   events/s, and flat out. Every 50 ms the lag is sampled: events behind (log head minus the
   target's checkpoint) and seconds behind (age of the oldest event not yet in the target).
   The writer's own rate is measured with and without the replicator running, to show that
   replication does not slow it.

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import structlog  # noqa: E402
from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: E402

from dcp_replicator.postgres_sink import PostgresSink  # noqa: E402
from dcp_replicator.replicator import Replicator, Settings  # noqa: E402
from dcp_replicator.source import SqliteSource  # noqa: E402
from tests.dcp_replicator.ledger import Ledger, make_db  # noqa: E402

SIMULATE = ROOT / "scripts" / "simulate.py"


class FreshDatabase:
    """A new database on the server of `dsn`, dropped on exit."""

    def __init__(self, dsn: str) -> None:
        self.server = dsn
        self.name = f"dcp_bench_{uuid.uuid4().hex[:10]}"
        params = conninfo_to_dict(dsn)
        params["dbname"] = self.name
        self.dsn = make_conninfo(**params)

    def __enter__(self) -> str:
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return self.dsn

    def __exit__(self, *exc: object) -> None:
        for _ in range(100):  # an autovacuum worker may hold it for a moment
            try:
                with psycopg.connect(self.server, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
                return
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse):
                time.sleep(0.1)


def head(db: Path) -> tuple[int, int]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT coalesce(max(seq), 0), count(*) FROM events").fetchone()
    finally:
        conn.close()


def target_checkpoint(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT last_seq FROM dcp_replication_state WHERE sink = 'postgres'")
    got = row.fetchone()
    return got[0] if got else 0


async def throughput(db: Path, server: str, batch_rows: int) -> dict[str, float]:
    with FreshDatabase(server) as dsn:
        source = await SqliteSource.open(db)
        sink = await PostgresSink.connect(dsn)  # schema applied before the clock starts
        t0 = time.perf_counter()
        result = await Replicator(source, sink, Settings(batch_rows=batch_rows)).run(once=True)
        elapsed = time.perf_counter() - t0
        await sink.close()
        await source.close()
    return {
        "batch_rows": batch_rows,
        "rows": result.rows,
        "events": result.checkpoint_seq,
        "batches": result.batches,
        "seconds": round(elapsed, 3),
        "rows_per_s": round(result.rows / elapsed),
        "events_per_s": round(result.checkpoint_seq / elapsed),
    }


async def synthetic_writer(db: Path, seconds: float, rate: int, seed: int) -> int:
    """Append at about `rate` events/s (0: as fast as it can) for `seconds`: the simulator's
    workload through the service, in rounds of 20 commands."""
    ledger = await Ledger.open(db, seed)
    start = ledger.head
    t0 = time.perf_counter()
    try:
        while (now := time.perf_counter() - t0) < seconds:
            due = int(now * rate) - (ledger.head - start) if rate else 200
            if due <= 0:
                await asyncio.sleep(0.005)
                continue
            await ledger.grow(min(due, 200), round_size=20)
    finally:
        await ledger.close()
    return ledger.head - start


def start_replicator(db: Path, dsn: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dcp_replicator", "--db", str(db), "--dsn", dsn,
           "--poll-interval-s", "0.05", "--log-level", "warning"]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("wb"))


async def sample_lag(
    db: Path, dsn: str, stop: asyncio.Event, out: list[tuple[int, float, int]]
) -> None:
    """Every 50 ms: (events behind, seconds behind, target checkpoint)."""
    lite = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            try:
                cp = target_checkpoint(conn)
            except psycopg.errors.UndefinedTable:
                cp = 0
            (h,) = lite.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
            row = lite.execute(
                "SELECT recorded_at_us FROM events WHERE seq = ?", (cp + 1,)
            ).fetchone()
            secs = max(0.0, time.time() - row[0] / 1e6) if row and h > cp else 0.0
            out.append((max(0, h - cp), secs, cp))
            await asyncio.sleep(0.05)
    lite.close()


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def lag_under_load(
    workdir: Path, server: str, seconds: float, rate: int, source: str
) -> dict[str, object]:
    db = workdir / f"live-{rate}.db"
    await make_db(db, 2000, seed=3)  # some history to start from
    # The writer alone, for comparison.
    alone_db = workdir / f"alone-{rate}.db"
    await make_db(alone_db, 2000, seed=3)
    t0 = time.perf_counter()
    alone = await synthetic_writer(alone_db, seconds, rate, seed=4)
    alone_rate = alone / (time.perf_counter() - t0)

    with FreshDatabase(server) as dsn:
        proc = start_replicator(db, dsn, workdir / "replicator.log")
        try:
            # Let it start and mirror the history first: what is measured is steady state.
            start_head, _ = head(db)
            deadline = time.perf_counter() + 60
            with psycopg.connect(dsn, autocommit=True) as conn:
                while time.perf_counter() < deadline:
                    try:
                        if target_checkpoint(conn) >= start_head:
                            break
                    except psycopg.errors.UndefinedTable:
                        pass
                    await asyncio.sleep(0.05)
            samples: list[tuple[int, float, int]] = []
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_lag(db, dsn, stop, samples))
            t0 = time.perf_counter()
            written = await synthetic_writer(db, seconds, rate, seed=4)
            write_s = time.perf_counter() - t0
            # Then until caught up.
            final_head, _ = head(db)
            t_end = time.perf_counter()
            with psycopg.connect(dsn, autocommit=True) as conn:
                while target_checkpoint(conn) < final_head and time.perf_counter() - t_end < 60:
                    await asyncio.sleep(0.02)
                caught_up_s = time.perf_counter() - t_end
                done = target_checkpoint(conn) == final_head
            stop.set()
            await sampler
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    during = samples[: max(1, int(len(samples) * write_s / (write_s + caught_up_s)))]
    events_behind = [s[0] for s in during]
    seconds_behind = [s[1] for s in during]
    return {
        "writer": source,
        "write_seconds": round(write_s, 2),
        "events_written": written,
        "writer_events_per_s": round(written / write_s),
        "writer_alone_events_per_s": round(alone_rate),
        "lag_events_p50": pct(events_behind, 50),
        "lag_events_p99": pct(events_behind, 99),
        "lag_events_max": max(events_behind, default=0),
        "lag_seconds_p50": round(pct(seconds_behind, 50), 3),
        "lag_seconds_p99": round(pct(seconds_behind, 99), 3),
        "lag_seconds_max": round(max(seconds_behind, default=0.0), 3),
        "caught_up_after_writer_s": round(caught_up_s, 3),
        "caught_up": done,
        "samples": len(samples),
    }


def simulate_cmd(db: Path, commands: int, seed: int = 7) -> list[str]:
    return [sys.executable, str(SIMULATE), "--db", str(db), "--seed", str(seed),
            "--commands", str(commands)]  # fmt: skip


def simulate_summary(stdout: bytes) -> dict[str, object]:
    """simulate.py prints two JSON lines: details, then {events, sum_halala, invariants_ok}."""
    lines = [json.loads(x) for x in stdout.decode().splitlines() if x.startswith("{")]
    return {k: v for line in lines for k, v in line.items()}


async def lag_under_simulate(workdir: Path, server: str, commands: int) -> dict[str, object]:
    """scripts/simulate.py writes a fresh log (it replaces the file at start) while the
    replicator, started as soon as the first events are there, follows it."""
    alone = subprocess.run(
        simulate_cmd(workdir / "alone.db", commands), cwd=ROOT, capture_output=True, check=True
    )
    alone_summary = simulate_summary(alone.stdout)
    db = workdir / "live.db"
    with FreshDatabase(server) as dsn:
        out = (workdir / "simulate.out").open("wb")
        sim = subprocess.Popen(simulate_cmd(db, commands), cwd=ROOT, stdout=out)
        t0 = time.perf_counter()
        while True:  # the first events
            try:
                if db.exists() and head(db)[0] > 0:
                    break
            except sqlite3.Error:
                pass
            await asyncio.sleep(0.01)
        proc = start_replicator(db, dsn, workdir / "replicator.log")
        try:
            samples: list[tuple[int, float, int]] = []
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_lag(db, dsn, stop, samples))
            while sim.poll() is None:
                await asyncio.sleep(0.02)
            write_s = time.perf_counter() - t0
            n_during = len(samples)
            out.close()
            final_head, _ = head(db)
            t_end = time.perf_counter()
            with psycopg.connect(dsn, autocommit=True) as conn:
                while target_checkpoint(conn) < final_head and time.perf_counter() - t_end < 120:
                    await asyncio.sleep(0.02)
                caught_up_s = time.perf_counter() - t_end
                done = target_checkpoint(conn) == final_head
            stop.set()
            await sampler
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    summary = simulate_summary((workdir / "simulate.out").read_bytes())
    # The replicator starts (imports, connects) while simulate.py already writes thousands of
    # events a second; measure from the moment it first caught up with that startup backlog.
    first = next((i for i, x in enumerate(samples[:n_during]) if x[2] > 0 and x[0] < 500), n_during)
    startup_s = first * 0.05
    during = samples[first:n_during] or samples[:1]
    if os.environ.get("BENCH_TRACE"):
        print("trace (events behind, seconds behind, checkpoint):", samples[:n_during])
    events_behind = [x[0] for x in during]
    seconds_behind = [x[1] for x in during]
    return {
        "writer": "simulate",
        "commands": commands,
        "events_written": final_head,
        "write_seconds": round(write_s, 2),
        "writer_commands_per_s": summary.get("commands_per_s"),
        "writer_alone_commands_per_s": alone_summary.get("commands_per_s"),
        "writer_events_per_s": round(final_head / write_s),
        "lag_events_p50": pct(events_behind, 50),
        "lag_events_p99": pct(events_behind, 99),
        "lag_events_max": max(events_behind, default=0),
        "lag_seconds_p50": round(pct(seconds_behind, 50), 3),
        "lag_seconds_p99": round(pct(seconds_behind, 99), 3),
        "lag_seconds_max": round(max(seconds_behind, default=0.0), 3),
        "caught_up_after_writer_s": round(caught_up_s, 3),
        "caught_up": done,
        "samples": len(samples),
        "startup_catch_up_s": round(startup_s, 2),
        "startup_lag_events_max": max((x[0] for x in samples[:first]), default=0),
        "simulate_invariants_ok": summary.get("invariants_ok"),
    }


async def build_log(path: Path, events: int, source: str) -> None:
    if source == "simulate":
        # About 0.9 events per command; top up until the log has `events`.
        commands = int(events * 1.13)
        while True:
            subprocess.run(simulate_cmd(path, commands), cwd=ROOT, check=True,
                           capture_output=True)  # fmt: skip
            if head(path)[0] >= events:
                return
            commands = int(commands * 1.1)
    await make_db(path, events, seed=7)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--dsn", default=os.environ.get("DCP_TEST_PG_DSN"))
    p.add_argument("--batch-rows", default="500,2000,5000")
    p.add_argument("--seconds", type=float, default=15.0, help="writer run time for the lag phase")
    p.add_argument("--rate", type=int, default=1500, help="synthetic writer: events/s")
    p.add_argument(
        "--source",
        choices=["simulate", "synthetic"],
        default="simulate" if SIMULATE.exists() else "synthetic",
    )
    p.add_argument("--lag-commands", type=int, default=30_000, help="simulate: lag phase size")
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if not args.dsn:
        raise SystemExit('give --dsn, or eval "$(scripts/ci/postgres.sh)" first')
    with tempfile.TemporaryDirectory(prefix="dcp-bench-repl-") as tmp:
        work = Path(tmp)
        db = work / "dcp.db"
        t0 = time.perf_counter()
        await build_log(db, args.events, args.source)
        build_s = time.perf_counter() - t0
        events, _ = head(db)
        print(f"log: {events} events built in {build_s:.1f}s ({args.source})")
        runs = []
        for b in [int(x) for x in args.batch_rows.split(",")]:
            r = await throughput(db, args.dsn, b)
            runs.append(r)
            print(
                f"batch_rows={b:>6}: {r['rows']} rows ({r['events']} events) in {r['seconds']}s"
                f" = {r['rows_per_s']:,} rows/s, {r['events_per_s']:,} events/s,"
                f" {r['batches']} batches"
            )
        lags = []
        if args.source == "simulate":
            lag = await lag_under_simulate(work, args.dsn, args.lag_commands)
            lags.append(lag)
            print(
                f"lag while simulate.py writes {lag['writer_events_per_s']} events/s"
                f" ({lag['writer_commands_per_s']} commands/s; alone"
                f" {lag['writer_alone_commands_per_s']}) for {lag['write_seconds']}s:"
                f" events behind p50 {lag['lag_events_p50']} p99 {lag['lag_events_p99']}"
                f" max {lag['lag_events_max']}; seconds behind p50 {lag['lag_seconds_p50']}"
                f" p99 {lag['lag_seconds_p99']} max {lag['lag_seconds_max']};"
                f" caught up {lag['caught_up_after_writer_s']}s after it stopped"
                f" (startup backlog of {lag['startup_lag_events_max']} events cleared in"
                f" {lag['startup_catch_up_s']}s, excluded from the percentiles)"
            )
        for rate in (args.rate, 0):
            lag = await lag_under_load(work, args.dsn, args.seconds, rate, "synthetic")
            lag["target_rate"] = rate or "unbounded"
            lags.append(lag)
            print(
                f"lag while writing {lag['writer_events_per_s']} events/s for"
                f" {lag['write_seconds']}s (writer alone: {lag['writer_alone_events_per_s']}/s):"
                f" events behind p50 {lag['lag_events_p50']} p99 {lag['lag_events_p99']}"
                f" max {lag['lag_events_max']}; seconds behind p50 {lag['lag_seconds_p50']}"
                f" p99 {lag['lag_seconds_p99']} max {lag['lag_seconds_max']};"
                f" caught up {lag['caught_up_after_writer_s']}s after the writer stopped"
            )
        best = max(runs, key=lambda r: r["rows_per_s"])
        print(
            json.dumps(
                {
                    "bench": "replicator",
                    "events": events,
                    "source": args.source,
                    "rows_per_s": best["rows_per_s"],
                    "events_per_s": best["events_per_s"],
                    "best_batch_rows": best["batch_rows"],
                    "throughput": runs,
                    "lag": lags,
                    "cpus": os.cpu_count(),
                    "pg_server": conninfo_to_dict(args.dsn).get("host"),
                }
            )
        )


if __name__ == "__main__":
    asyncio.run(main())
