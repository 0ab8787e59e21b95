"""Benchmark the API's job submission against a trivial Starlette JSON endpoint.

Both run as real uvicorn processes started the same way (same uvicorn settings, h11, no access
log), in the same run, on this machine:

- ours: `dcp serve` on a fresh SQLite file, rate limits off; one renter with a large credit
  submits jobs (every submit is durable: decided, appended with group commit, read models
  written) from 64 concurrent clients;
- trivial: a Starlette app whose one route returns a constant JSON object.

The load comes from a minimal keep-alive HTTP/1.1 client (asyncio streams), 64 connections,
so the generator costs less CPU than the servers. Logging stays at dcp serve's default (one
JSON access line per request, to /dev/null here).

Prints a table, then as the last line one JSON object:
{"submit_rps", "trivial_rps", "submit_p50_ms", "submit_p99_ms"}.

    .venv/bin/python scripts/bench_api.py [--clients 64] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-admin-token-0123456789abcdefgh"
IMAGE = "dcp-test/busybox:1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def trivial_server(port: int) -> None:
    """The baseline: Starlette + uvicorn, one constant JSON route, the same uvicorn settings."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def submit(request):  # type: ignore[no-untyped-def]
        await request.body()
        return JSONResponse({"job": {"job_id": "j", "status": "queued"}}, status_code=201)

    app = Starlette(routes=[Route("/api/jobs/submit", submit, methods=["POST"])])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_level="warning",
        server_header=False,
        ws="none",
    )


def start(cmd: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code < 500:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {' '.join(cmd)}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


async def _connection(
    host: str,
    port: int,
    request: bytes,
    start_at: float,
    stop_at: float,
    latencies: list[float],
    failures: list[int],
) -> None:
    """One keep-alive HTTP/1.1 connection posting `request` in a loop until `stop_at`.

    A minimal client (asyncio streams, Content-Length framing) so the load generator costs
    far less CPU than the servers it measures; httpx would be the bottleneck on a small box.
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            a = time.perf_counter()
            if a >= stop_at:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            b = time.perf_counter()
            if status != 201:
                failures.append(status)
            elif a >= start_at:
                latencies.append((b - a) * 1000)
    finally:
        writer.close()


async def load(
    port: int,
    path: str,
    headers: dict[str, str],
    body: bytes,
    clients: int,
    seconds: float,
    warmup_s: float,
) -> tuple[float, list[float], int]:
    """`clients` connections posting `body` for warmup + seconds; (rps, latencies_ms, errors)."""
    lines = [f"POST {path} HTTP/1.1", "host: 127.0.0.1", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    latencies: list[float] = []
    failures: list[int] = []
    start_at = time.perf_counter() + warmup_s
    stop_at = start_at + seconds
    await asyncio.gather(
        *(
            _connection("127.0.0.1", port, request, start_at, stop_at, latencies, failures)
            for _ in range(clients)
        )
    )
    return len(latencies) / seconds, latencies, len(failures)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=4.0, help="measured seconds per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument(
        "--server-log-level",
        default="info",
        help="dcp serve's log level; info (the default) writes the access line of every request",
    )
    ap.add_argument("--trivial-server", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trivial_server:
        trivial_server(args.trivial_server)
        return 0

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="dcp-bench-") as tmp:
        ours_port, trivial_port = free_port(), free_port()
        ours = start(
            [
                sys.executable,
                "-m",
                "dcp_cli",
                "serve",
                "--db",
                f"{tmp}/bench.db",
                "--port",
                str(ours_port),
                "--no-rate-limits",
                "--admin-token",
                ADMIN_TOKEN,
                "--log-level",
                args.server_log_level,
            ],
            ours_port,
            env,
        )
        trivial = start(
            [sys.executable, __file__, "--trivial-server", str(trivial_port)], trivial_port, env
        )
        try:
            base = f"http://127.0.0.1:{ours_port}"
            admin = {"x-admin-token": ADMIN_TOKEN}
            r = httpx.post(
                f"{base}/api/renters/register", json={"name": "bench", "email": "bench@example.com"}
            )
            r.raise_for_status()
            renter = r.json()
            httpx.post(
                f"{base}/api/admin/images", json={"reference": IMAGE}, headers=admin
            ).raise_for_status()
            httpx.post(
                f"{base}/api/admin/renters/{renter['renter_id']}/credit",
                json={"amount_halala": 10**12, "reference": "bench", "reason": "bench"},
                headers=admin,
            ).raise_for_status()
            body = json.dumps(
                {
                    "container_spec": {"image": IMAGE, "command": ["true"]},
                    "gpu_requirements": {"gpu_type": "RTX 4090", "gpu_count": 1},
                    "max_duration_seconds": 60,
                }
            ).encode()
            headers = {"content-type": "application/json"}
            ours_headers = {**headers, "x-renter-key": renter["api_key"]}
            # Rounds alternate trivial and submit, so a burst of load from elsewhere on the
            # machine hits both; the JSON line gives the median round.
            rounds: list[dict[str, float]] = []
            for n in range(args.rounds):
                t_rps, t_lat, t_err = asyncio.run(
                    load(
                        trivial_port,
                        "/api/jobs/submit",
                        headers,
                        body,
                        args.clients,
                        args.seconds,
                        args.warmup,
                    )
                )
                s_rps, s_lat, s_err = asyncio.run(
                    load(
                        ours_port,
                        "/api/jobs/submit",
                        ours_headers,
                        body,
                        args.clients,
                        args.seconds,
                        args.warmup,
                    )
                )
                rounds.append(
                    {
                        "round": n + 1,
                        "submit_rps": s_rps,
                        "trivial_rps": t_rps,
                        "submit_p50_ms": pct(s_lat, 50),
                        "submit_p99_ms": pct(s_lat, 99),
                        "trivial_p50_ms": pct(t_lat, 50),
                        "trivial_p99_ms": pct(t_lat, 99),
                        "errors": s_err + t_err,
                    }
                )
            ready = httpx.get(f"{base}/readyz").json()
        finally:
            for p in (ours, trivial):
                p.terminate()
            for p in (ours, trivial):
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()

    cols = (
        "round",
        "submit_rps",
        "trivial_rps",
        "submit_p50_ms",
        "submit_p99_ms",
        "trivial_p50_ms",
        "trivial_p99_ms",
        "errors",
    )
    print(" ".join(f"{c:>14}" for c in cols))
    for r in rounds:
        print(
            " ".join(f"{r[c]:>14.1f}" if isinstance(r[c], float) else f"{r[c]:>14}" for c in cols)
        )
    median = {k: statistics.median(r[k] for r in rounds) for k in cols[1:5]}
    print(
        f"clients={args.clients} seconds={args.seconds} rounds={args.rounds} "
        f"ratio={median['submit_rps'] / median['trivial_rps']:.2f} "
        f"events={ready.get('head_seq')} load_avg={os.getloadavg()[0]:.1f} cpus={os.cpu_count()}"
    )
    print(json.dumps({k: round(v, 2) for k, v in median.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
