"""Benchmark the API's job submission against a trivial Starlette JSON endpoint.

Both run as real uvicorn processes on the same stack (uvloop and httptools, as
`uvicorn[standard]` installs them; no uvicorn access log), in the same run, on this machine.
`dcp serve` uses its own subclass of uvicorn's httptools protocol, which joins a reply's head
and body into one socket write (dcp_http.server); the trivial app keeps uvicorn's own:

- ours: `dcp serve` on a fresh SQLite file, rate limits off; one renter with a large credit
  submits jobs (every submit is durable: decided, appended with group commit, read models
  written) from 64 concurrent clients;
- trivial: a Starlette app whose one route returns a constant JSON object.

The load comes from wrk (a C load generator: `apt-get install -y wrk`), 64 keep-alive
connections, so the generator is never the bottleneck (a Python client topped out at two
thirds of the bare endpoint's rate). Logging stays at dcp serve's default (one JSON access
line per request, to /dev/null here).

Besides the rates, each round reads the servers' CPU time (utime + stime from /proc) around
the wrk run: `*_cpu_us` is CPU microseconds per answered request, the figure that load from
elsewhere on a shared machine disturbs least.

With `--before DIR` (another checkout of this project, e.g. a `git worktree` of main), a third
server, `dcp serve` run from DIR's code, is measured in the same rounds: a side-by-side
before/after of a change to the request path.

Prints a table, then as the last line one JSON object:
{"submit_rps", "trivial_rps", "submit_p50_ms", "submit_p99_ms", "submit_cpu_us",
"trivial_cpu_us"} (and "before_*" with --before).

    .venv/bin/python scripts/bench_api.py [--clients 64] [--seconds 8] [--before /tmp/main]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def start(
    cmd: list[str], port: int, env: dict[str, str], cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
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


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    url: str, headers: dict[str, str], body: bytes, clients: int, seconds: float
) -> dict[str, Any]:
    """One wrk run: {rps, p50_ms, p99_ms, errors}. wrk is a C load generator (Debian package
    `wrk`), so the client is never what limits the servers it measures."""
    lua = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body.decode())}"]
    lua += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("\n".join(lua) + "\n")
        script = f.name
    try:
        out = subprocess.run(
            ["wrk", "-t", str(min(clients, 2)), "-c", str(clients),
             "-d", f"{max(1, round(seconds))}s", "--latency", "-s", script, url],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script)
    return parse_wrk(out)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str) -> dict[str, Any]:
    """Requests/sec, the 50% and 99% latencies (ms) and non-2xx/socket errors of wrk's report."""
    result = {"rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "errors": 0}
    for line in out.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(words[1])
        elif len(words) == 2 and words[0] in ("50%", "99%"):
            m = re.fullmatch(r"([0-9.]+)(us|ms|s)", words[1])
            if m:
                key = "p50_ms" if words[0] == "50%" else "p99_ms"
                result[key] = float(m.group(1)) * _UNITS[m.group(2)]
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            result["errors"] += int(words[-1])
        elif line.strip().startswith("Socket errors:"):
            result["errors"] += sum(int(n) for n in re.findall(r"\d+", line))
        elif "requests in" in line and words[0].isdigit():
            result["requests"] = int(words[0])
    return result


def measured(
    pid: int, url: str, headers: dict[str, str], body: bytes, clients: int, s: float
) -> dict[str, Any]:
    """wrk against the server `pid`, with its CPU microseconds per answered request."""
    cpu0 = cpu_seconds(pid)
    result = wrk(url, headers, body, clients, s)
    cpu = cpu_seconds(pid) - cpu0
    result["cpu_us"] = 1e6 * cpu / max(1, result.get("requests", 0))
    return result


def serve_ours(root: Path, db: str, port: int, log_level: str) -> subprocess.Popen[bytes]:
    """`dcp serve` run from the checkout at `root` (its code, this interpreter)."""
    return start(
        [sys.executable, "-m", "dcp_cli", "serve", "--db", db, "--port", str(port),
         "--no-rate-limits", "--admin-token", ADMIN_TOKEN, "--log-level", log_level],
        port, {**os.environ, "PYTHONPATH": str(root)}, cwd=root,
    )  # fmt: skip


def submitter(base: str) -> dict[str, str]:
    """A renter with a large credit and the image allowlisted: the headers wrk sends."""
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
    return {"content-type": "application/json", "x-renter-key": renter["api_key"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=4.0, help="measured seconds per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of load not counted")
    ap.add_argument(
        "--server-log-level",
        default="info",
        help="dcp serve's log level; info (the default) writes the access line of every request",
    )
    ap.add_argument(
        "--before", type=Path, help="also measure `dcp serve` from this checkout (before/after)"
    )
    ap.add_argument("--trivial-server", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trivial_server:
        trivial_server(args.trivial_server)
        return 0

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk (apt-get install -y wrk)")
    names = ["trivial", "submit"] + (["before"] if args.before else [])
    with tempfile.TemporaryDirectory(prefix="dcp-bench-") as tmp:
        ports = {name: free_port() for name in names}
        procs = {
            "submit": serve_ours(ROOT, f"{tmp}/bench.db", ports["submit"], args.server_log_level)
        }
        if args.before:
            procs["before"] = serve_ours(
                args.before, f"{tmp}/before.db", ports["before"], args.server_log_level
            )
        procs["trivial"] = start(
            [sys.executable, __file__, "--trivial-server", str(ports["trivial"])],
            ports["trivial"],
            env,
        )
        try:
            body = json.dumps(
                {
                    "container_spec": {"image": IMAGE, "command": ["true"]},
                    "gpu_requirements": {"gpu_type": "RTX 4090", "gpu_count": 1},
                    "max_duration_seconds": 60,
                }
            ).encode()
            headers = {"trivial": {"content-type": "application/json"}}
            for name in names[1:]:
                headers[name] = submitter(f"http://127.0.0.1:{ports[name]}")
            urls = {name: f"http://127.0.0.1:{ports[name]}/api/jobs/submit" for name in names}
            # Rounds take the servers in turn, so a burst of load from elsewhere on the
            # machine hits each; the JSON line gives the median round.
            rounds: list[dict[str, float]] = []
            for name in names:
                wrk(urls[name], headers[name], body, args.clients, args.warmup)  # not counted
            for n in range(args.rounds):
                row: dict[str, float] = {"round": n + 1, "errors": 0}
                for name in names:
                    r = measured(
                        procs[name].pid, urls[name], headers[name], body, args.clients, args.seconds
                    )
                    row[f"{name}_rps"] = r["rps"]
                    row[f"{name}_p50_ms"] = r["p50_ms"]
                    row[f"{name}_p99_ms"] = r["p99_ms"]
                    row[f"{name}_cpu_us"] = r["cpu_us"]
                    row["errors"] += r["errors"]
                rounds.append(row)
            ready = httpx.get(f"http://127.0.0.1:{ports['submit']}/readyz").json()
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()

    cols = ["round"] + [f"{n}_{f}" for n in names for f in ("rps", "p50_ms", "p99_ms", "cpu_us")]
    cols.append("errors")
    print(" ".join(f"{c:>15}" for c in cols))
    for r in rounds:
        print(
            " ".join(f"{r[c]:>15.1f}" if isinstance(r[c], float) else f"{r[c]:>15}" for c in cols)
        )
    median = {k: statistics.median(r[k] for r in rounds) for k in cols[1:-1]}
    print(
        f"clients={args.clients} seconds={args.seconds} rounds={args.rounds} "
        f"ratio={median['submit_rps'] / median['trivial_rps']:.2f} "
        + (
            f"before_ratio={median['before_rps'] / median['trivial_rps']:.2f} "
            if args.before
            else ""
        )
        + f"events={ready.get('head_seq')} load_avg={os.getloadavg()[0]:.1f} cpus={os.cpu_count()}"
    )
    keep = ("submit_", "trivial_rps", "trivial_cpu_us", "before_")
    print(json.dumps({k: round(v, 2) for k, v in median.items() if k.startswith(keep)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
