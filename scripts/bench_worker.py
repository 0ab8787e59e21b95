#!/usr/bin/env python3
"""Measure the worker end to end: a real `dcp serve`, a real `dcp worker --gpus none`, Docker.

Two figures, printed as one JSON object on the last line:
  - submit_to_container_start_s: from a renter's submit (HTTP) to the worker's container start
    (its `job_container_started` log line), min / median / max over the jobs;
  - heartbeat_spacing_s: the spacing of the heartbeats the API recorded (`at_us` of
    `provider.heartbeat` events) while jobs ran, min / median / max.

Usage: .venv/bin/python scripts/bench_worker.py [--jobs N] [--heartbeat-s S] [--poll-s S]
Needs a Docker engine with dcp-test/busybox:1 (scripts/ci/docker.sh). tests/dcp_worker/
test_worker_e2e.py drives the same `Stack` with money checks.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "dcp-test/busybox:1"
ADMIN = "bench-admin-token-0123456789abcdefgh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


class Stack:
    """`dcp serve` on a SQLite file under `work`, one approved provider running `dcp worker`,
    and one credited renter. Use as a context manager; everything stops on exit."""

    def __init__(
        self, work: Path, *, heartbeat_s: float = 1.0, poll_s: float = 0.5, gpu_count: int = 1
    ) -> None:
        self.work = work
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.gpu_count = gpu_count
        self.url = f"http://127.0.0.1:{free_port()}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.worker_log = work / "worker.log"
        self.server_log = work / "server.log"
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self.admin = {"x-admin-token": ADMIN}
        self.worker: subprocess.Popen[bytes] | None = None

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        if r.status_code != status:
            raise AssertionError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json()

    def _spawn(self, argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with log.open("ab") as f:
            p = subprocess.Popen(
                [sys.executable, "-m", "dcp_cli", *argv],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=f,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(p)
        return p

    def start_server(self) -> None:
        """Start `dcp serve` on this stack's port and database; return once it is ready."""
        port = self.url.rsplit(":", 1)[1]
        self.server = self._spawn(
            ["serve", "--db", str(self.work / "dcp.db"), "--port", port, "--admin-token", ADMIN,
             "--no-rate-limits", "--sweep-interval-s", "0.5", "--log-level", "warning"],
            self.server_log,
            {},
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.http.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "dcp serve did not become ready:\n" + self.server_log.read_text()
                )
            time.sleep(0.1)

    def stop_server(self) -> None:
        """Stop `dcp serve` (SIGTERM): the API is down until `start_server`."""
        self.server.send_signal(signal.SIGTERM)
        self.server.wait(30)

    def __enter__(self) -> Stack:
        self.start_server()
        self.ok("POST", "/api/admin/images", json={"reference": IMAGE}, headers=self.admin)
        self.provider = self.ok(
            "POST",
            "/api/providers/register",
            201,
            json={"name": "bench provider", "email": "p@example.com", "gpu_model": "RTX 4090",
                  "gpu_count": self.gpu_count, "vram_gb": 24},
        )  # fmt: skip
        pid = self.provider["provider_id"]
        self.ok("POST", f"/api/admin/providers/{pid}/approve", headers=self.admin)
        self.renter = self.ok(
            "POST", "/api/renters/register", 201, json={"name": "r", "email": "r@example.com"}
        )
        self.renter_headers = {"x-renter-key": self.renter["api_key"]}
        self.start_worker()
        self.wait_online()
        return self

    def start_worker(self) -> None:
        self.worker = self._spawn(
            ["worker", "--api", self.url, "--gpus", "none", "--allow-image", IMAGE,
             "--state-dir", str(self.work / "worker-state"),
             "--heartbeat-s", str(self.heartbeat_s), "--poll-s", str(self.poll_s),
             "--min-free-disk-gb", "0.1", "--job-memory-mb", "64", "--drain-s", "5"],
            self.worker_log,
            {"DCP_PROVIDER_KEY": self.provider["api_key"]},
        )  # fmt: skip

    def wait_online(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            listed = self.ok("GET", "/api/marketplace")
            rows = listed.get("providers", listed) if isinstance(listed, dict) else listed
            if any(p.get("provider_id") == self.provider["provider_id"] for p in rows):
                return
            time.sleep(0.2)
        raise RuntimeError("the provider never came online:\n" + self.worker_log.read_text())

    def credit(self, amount_halala: int, reference: str) -> None:
        rid = self.renter["renter_id"]
        self.ok(
            "POST",
            f"/api/admin/renters/{rid}/credit",
            json={"amount_halala": amount_halala, "reference": reference, "reason": "bench"},
            headers=self.admin,
        )

    def submit(self, command: list[str], max_duration_seconds: int = 60) -> tuple[str, float]:
        """Submit a job; returns its id and the wall time just before the request."""
        t0 = time.time()
        body = {
            "container_spec": {"image": IMAGE, "command": command},
            "gpu_requirements": {"gpu_type": "RTX 4090", "gpu_count": 1},
            "max_duration_seconds": max_duration_seconds,
        }
        reply = self.ok("POST", "/api/jobs/submit", 201, json=body, headers=self.renter_headers)
        return reply["job"]["job_id"], t0

    def job(self, job_id: str) -> dict[str, Any]:
        return self.ok("GET", f"/api/jobs/{job_id}", headers=self.renter_headers)["job"]  # type: ignore[no-any-return]

    def wait_ended(self, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in ("completed", "timed_out", "failed", "cancelled"):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not end:\n" + self.worker_log.read_text()[-4000:])

    def worker_events(self, event: str) -> list[dict[str, Any]]:
        lines = []
        for line in self.worker_log.read_text().splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if isinstance(d, dict) and d.get("event") == event:
                lines.append(d)
        return lines

    def container_started_at(self, job_id: str) -> float | None:
        for d in self.worker_events("job_container_started"):
            if d.get("job_id") == job_id:
                return datetime.fromisoformat(d["timestamp"].replace("Z", "+00:00")).timestamp()
        return None

    def heartbeat_times(self) -> list[float]:
        times, after = [], 0
        for _ in range(1000):  # bounded: 1000 pages of 1000 events
            page = self.ok("GET", f"/api/admin/events?after={after}&limit=1000", headers=self.admin)
            for e in page["events"]:
                if e["type"] == "provider.heartbeat":
                    times.append(e["payload"]["at_us"] / 1e6)
            if not page["events"]:
                break
            after = page["next_after"]
        return times

    def stop_worker(self) -> int:
        assert self.worker is not None
        self.worker.send_signal(signal.SIGTERM)
        return self.worker.wait(60)

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.http.close()


def measure(stack: Stack, jobs: int, job_s: float) -> dict[str, Any]:
    """Submit `jobs` jobs one after another (each waits for the last to end); time them."""
    stack.credit(10_000_000, f"bench-{time.time_ns()}")
    delays: list[float] = []
    first_start, last_end = 0.0, 0.0
    for _ in range(jobs):
        job_id, t0 = stack.submit(["sh", "-c", f"sleep {job_s}"])
        stack.wait_ended(job_id)
        started = stack.container_started_at(job_id)
        assert started is not None, "no job_container_started line in the worker log"
        delays.append(started - t0)
        first_start = first_start or started
        last_end = time.time()
    beats = [t for t in stack.heartbeat_times() if first_start <= t <= last_end]
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    return {
        "submit_to_container_start_s": spread(delays),
        "heartbeat_spacing_s": spread(gaps) if gaps else None,
        "heartbeat_s": stack.heartbeat_s,
        "poll_s": stack.poll_s,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=10)
    p.add_argument("--job-s", type=float, default=2.0)
    p.add_argument("--heartbeat-s", type=float, default=2.0)
    p.add_argument("--poll-s", type=float, default=0.5)
    args = p.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        Stack(Path(tmp), heartbeat_s=args.heartbeat_s, poll_s=args.poll_s) as stack,
    ):
        result = measure(stack, args.jobs, args.job_s)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
