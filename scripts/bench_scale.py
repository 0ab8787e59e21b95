"""Benchmark: what the ledger costs as its log grows (issue 11's table), at several log sizes.

    python scripts/bench_scale.py --log 100k=/data/log-100k.db --log 1m=/data/log-1m.db
    python scripts/bench_scale.py --build /data --sizes 100k,1m,10m   # make missing logs first

Each log is one scripts/build_log.py run (the same generator at every size: 90 simulated days
of a marketplace decided by the real domain and appended in large batches, ending at about
the time the build ends, with a queue of what waits for a poll and the last day's
idempotency keys; --build makes them with the builder's defaults: 100k events with 1,000
renters / 100 providers, 1m with 10k / 1k, 10m with 100k / 10k; the 10M log takes about half
an hour). --build makes a missing log just before measuring it, so its leases and queue are
still live when `dcp serve` starts. For each size, on a copy of the log and of the snapshot
the builder wrote:

- start_cold_s: `dcp serve` until /healthz answers, with no snapshot (a fold from scratch;
  left out with --no-cold);
- start_s, rss_mb, rss_peak_mb: the same starting from the snapshot, the server's resident
  memory once ready, and its peak until then (the snapshot's bytes while they are decoded);
- submit_rps, submit_p99_ms, submit_cpu_us: POST /api/jobs/submit from wrk, 64 connections
  (and the server's CPU microseconds per answered submit), after the first sweeps ended what
  fell due since the log's last event (the leases of a fleet that stopped heartbeating when
  the build ended; settle_s: until /metrics shows no sweep events for 12 s) and a warm-up;
- rebuild_eps: every read model rebuilt from the log (dcp_app.readmodel.rebuild);
- verify_eps, replay_eps: `dcp audit verify` and `dcp audit replay` over the whole log (the
  events over the time each reports, without the interpreter's start-up);
- start_cpu_s and *_eps_cpu: the same per CPU-second (the server's CPU time until ready; the
  rebuild's process time; the audit command's, interpreter included), which load from
  elsewhere on a shared machine disturbs far less than wall-clock figures.

Wall-clock figures: on a shared machine they carry its load (the load average is printed).
The last line is one JSON object with `<figure>_<size>` keys.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_api import cpu_seconds, free_port, measured, wrk

from dcp_app import readmodel

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-admin-token-0123456789abcdefgh"  # long enough for dcp serve
IMAGE = "dcp/pytorch:2.3"  # allowlisted by simulate.py and build_log.py
WARMUP_S = 5  # seconds of load before each measurement, not counted
# size -> (events, renters, providers)
RECIPES = {
    "100k": (100_000, 1_000, 100),
    "1m": (1_000_000, 10_000, 1_000),
    "10m": (10_000_000, 100_000, 10_000),
}


def build(directory: Path, size: str) -> Path:
    """The log of `size` in `directory`, made first unless one the builder made with months
    of history is there (its summary, `<log>.build.json`, gives the span)."""
    events, renters, providers = RECIPES[size]
    db = directory / f"log-{size}.db"
    summary = Path(f"{db}.build.json")
    current = summary.exists() and "span_days" in summary.read_text()
    if db.exists() and not current:
        print(f"  {db}: made by an older builder (no months of history); made again",
              file=sys.stderr)  # fmt: skip
    if not db.exists() or not current:
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "build_log.py"), "--db", str(db),
             "--seed", "4", "--renters", str(renters), "--providers", str(providers),
             "--events", str(events), "--progress"],
            check=True,
        )  # fmt: skip
    return db


def serve(db: Path, port: int) -> tuple[subprocess.Popen[bytes], float]:
    """Start `dcp serve` on `db`; (process, seconds until /healthz answered)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dcp_cli", "serve", "--db", str(db), "--port", str(port),
         "--no-rate-limits", "--admin-token", ADMIN_TOKEN, "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"dcp serve exited with {proc.returncode} on {db}")
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory in MB (`field` VmHWM: its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def submitter(base: str) -> tuple[dict[str, str], bytes]:
    """A fresh renter with a large credit: the headers and body wrk posts."""
    admin = {"x-admin-token": ADMIN_TOKEN}
    renter = httpx.post(
        f"{base}/api/renters/register", json={"name": "bench", "email": "bench@example.com"}
    ).json()
    httpx.post(
        f"{base}/api/admin/renters/{renter['renter_id']}/credit",
        json={"amount_halala": 10**12, "reference": f"bench-{time.time_ns()}", "reason": "bench"},
        headers=admin,
    ).raise_for_status()
    body = json.dumps(
        {
            "container_spec": {"image": IMAGE, "command": ["python", "train.py"]},
            "gpu_requirements": {"gpu_type": "H100", "gpu_count": 1},
            "max_duration_seconds": 60,
        }
    ).encode()
    return {"content-type": "application/json", "x-renter-key": renter["api_key"]}, body


def swept(base: str) -> float:
    """Events the server's sweeps have appended so far (its /metrics)."""
    total = 0.0
    for line in httpx.get(f"{base}/metrics", timeout=30).text.splitlines():
        if line.startswith("dcp_sweep_events_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def settle(base: str, quiet_s: float = 12.0, limit_s: float = 300.0) -> float:
    """Wait until the sweeps have ended what the log's simulated clock left expired (leases,
    deadlines, queue timeouts: thousands of jobs on a big log, ended in bounded rounds every
    sweep interval) and one more interval passed quietly; the seconds it took. Without it the
    first measured seconds paid for that backlog."""
    t0 = last_change = time.perf_counter()
    last = swept(base)
    while time.perf_counter() - last_change < quiet_s and time.perf_counter() - t0 < limit_s:
        time.sleep(2.0)
        now = swept(base)
        if now != last:
            last, last_change = now, time.perf_counter()
    return time.perf_counter() - t0


def audit_eps(db: Path, command: str) -> tuple[float, float]:
    """(events/s of the audit's own time, events per CPU-second of the whole command)."""
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, "-m", "dcp_cli", "audit", command, "--db", str(db), "--json"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    report = json.loads(out.stdout.strip().splitlines()[-1])
    if out.returncode != 0 or not report.get("ok", True):
        print(f"  {command}: exit {out.returncode}: {out.stdout[-500:]}", file=sys.stderr)
    events = report.get("events") or report.get("head_seq") or 0
    # The audit's own time, without the interpreter's start-up (about 1 s here).
    return events / (report.get("elapsed_s") or wall), events / max(cpu, 1e-9)


def measure(
    size: str, source: Path, work: Path, seconds: float, cold: bool, skip: set[str]
) -> dict[str, Any]:
    if "copy" in skip:  # in place: the log itself (the submits are appended to it)
        db, cold = source, False
    else:
        db = work / f"{size}.db"
        shutil.copyfile(source, db)
    events = readmodel_events(db)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    start_cold = None
    if cold:
        proc, start_cold = serve(db, port)
        try:
            headers, body = submitter(base)
            wrk(f"{base}/api/jobs/submit", headers, body, 64, WARMUP_S)  # writes the snapshot
            time.sleep(1.0)  # the snapshot file is written in a thread
        finally:
            stop(proc)
    elif db != source:  # start from the snapshot the builder wrote at the log's head
        snaps = Path(f"{source}.snapshots")
        if snaps.is_dir():
            shutil.copytree(snaps, Path(f"{db}.snapshots"))
    proc, start = serve(db, port)
    result: dict[str, Any] = {"rps": None, "p99_ms": None, "cpu_us": None, "errors": None}
    settled = None
    try:
        rss, rss_peak = rss_mb(proc.pid), rss_mb(proc.pid, "VmHWM")
        start_cpu = cpu_seconds(proc.pid)
        if "submit" not in skip:
            headers, body = submitter(base)
            settled = settle(base)
            wrk(f"{base}/api/jobs/submit", headers, body, 64, WARMUP_S)  # not counted
            result = measured(proc.pid, f"{base}/api/jobs/submit", headers, body, 64, seconds)
    finally:
        stop(proc)
    snapshots = sorted(Path(f"{db}.snapshots").glob("snapshot-*"))
    rebuild_eps = rebuild_cpu = verify = replay = None
    if "rebuild" not in skip:
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            report = readmodel.rebuild(db, into=Path(tmp) / "rebuilt.db")
        rebuild_eps, rebuild_cpu = report.events_per_s, report.events / report.cpu_seconds
    if "verify" not in skip:
        verify = audit_eps(db, "verify")
    if "replay" not in skip:
        replay = audit_eps(db, "replay")
    out = {
        "events": events,
        "start_cold_s": None if start_cold is None else round(start_cold, 2),
        "start_s": round(start, 2),
        "rss_mb": round(rss, 1),
        # The peak before it was ready: the snapshot file's bytes while it is decoded (freed,
        # and given back to the OS, once the state is built).
        "rss_peak_mb": round(rss_peak, 1),
        "submit_rps": result["rps"] and round(result["rps"], 1),
        "submit_p99_ms": result["p99_ms"] and round(result["p99_ms"], 1),
        # the server's CPU per answered submit
        "submit_cpu_us": result["cpu_us"] and round(result["cpu_us"]),
        "submit_errors": result["errors"],
        "settle_s": settled and round(settled, 1),
        "start_cpu_s": round(start_cpu, 2),
        "rebuild_eps": rebuild_eps and round(rebuild_eps),
        "verify_eps": verify and round(verify[0]),
        "replay_eps": replay and round(replay[0]),
        # Per CPU-second: what load from elsewhere on a shared machine disturbs least.
        "rebuild_eps_cpu": rebuild_cpu and round(rebuild_cpu),
        "verify_eps_cpu": verify and round(verify[1]),
        "replay_eps_cpu": replay and round(replay[1]),
        "snapshot_mb": round(snapshots[-1].stat().st_size / 2**20, 1) if snapshots else 0.0,
    }
    print(f"  {size}: {out}", file=sys.stderr)
    return out


def readmodel_events(db: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0)
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", action="append", default=[], metavar="SIZE=PATH")
    ap.add_argument("--build", type=Path, help="directory to find or make log-<size>.db in")
    ap.add_argument("--sizes", default="100k,1m,10m", help="with --build: which sizes")
    ap.add_argument("--seconds", type=float, default=10.0, help="wrk seconds per size")
    ap.add_argument("--work", type=Path, help="where the copies go (default: beside the logs)")
    ap.add_argument(
        "--no-cold", dest="cold", action="store_false", help="skip the start without a snapshot"
    )
    ap.add_argument(
        "--skip",
        default="",
        help="comma-separated: rebuild, verify, replay, submit (figures left out; without "
        "submit only start-up and memory are measured), copy (measure the log in place, from "
        "its snapshot: the benchmark's submits are appended to it)",
    )
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk (apt-get install -y wrk)")
    logs = dict(entry.split("=", 1) for entry in args.log)
    if args.build is not None:
        args.build.mkdir(parents=True, exist_ok=True)
        for size in args.sizes.split(","):
            logs.setdefault(size, "")  # made (if missing) just before it is measured
    if not logs:
        ap.error("give --log SIZE=PATH or --build DIR")
    results: dict[str, dict[str, Any]] = {}
    skip = set(filter(None, args.skip.split(",")))
    for size, path in logs.items():
        assert args.build is not None or path
        source = Path(path) if path else build(args.build, size)
        work = args.work or source.parent
        with tempfile.TemporaryDirectory(prefix=f"bench-scale-{size}-", dir=work) as tmp:
            results[size] = measure(size, source, Path(tmp), args.seconds, args.cold, skip)
    cols = ["events", "start_cold_s", "start_s", "start_cpu_s", "rss_mb", "rss_peak_mb",
            "submit_rps", "submit_p99_ms", "submit_cpu_us", "rebuild_eps", "verify_eps",
            "replay_eps", "rebuild_eps_cpu", "verify_eps_cpu", "replay_eps_cpu",
            "snapshot_mb"]  # fmt: skip
    print(f"{'size':>6} " + " ".join(f"{c:>13}" for c in cols))
    for size, r in results.items():
        print(f"{size:>6} " + " ".join(f"{r[c]!s:>13}" for c in cols))
    print(f"load_avg={os.getloadavg()[0]:.1f} cpus={os.cpu_count()}")
    line = {f"{c}_{size}": r[c] for size, r in results.items() for c in cols if c != "events"}
    line.update({f"events_{size}": r["events"] for size, r in results.items()})
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
