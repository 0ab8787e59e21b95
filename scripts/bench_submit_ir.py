"""Instructions per submit: `dcp serve` under valgrind's callgrind, a figure the load on a
shared machine does not move (wall-clock and CPU-time figures on a loaded machine can differ by
2x between two runs of the same code).

The server runs under `valgrind --tool=callgrind --instr-atstart=no` (startup and set-up are
not counted). A closed-loop client (asyncio, raw HTTP/1.1 keep-alive, outside valgrind) first
sends a warm-up, then instrumentation is switched on (`callgrind_control -i on`), every one of
`--clients` connections sends exactly `--requests` submits, waiting for each answer, and
instrumentation is switched off once all are answered and the server is idle: every counted
instruction belongs to a counted request (or to the idle loop), none is cut at the edges.
Counts cover every thread (the event loop, the event store's writer, the reader).

With `--before DIR` (another checkout, e.g. `git archive main | tar -x -C DIR`) the same is
measured for DIR's code, after ours. With `--trivial`, also the bare Starlette endpoint of
scripts/bench_api.py. Prints one JSON line: {"submit_ir", "before_submit_ir", "trivial_ir",
... , "threads": {...}} (instructions per request; threads: per thread, ours).

    .venv/bin/python scripts/bench_submit_ir.py [--clients 16] [--requests 40] [--before DIR]

Needs valgrind (Debian package `valgrind`); a run takes a few minutes (valgrind runs the
server some 50x slower).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_api  # the same set-up: renter, credit, image, body

ROOT = Path(__file__).resolve().parent.parent


def body() -> bytes:
    return json.dumps(
        {
            "container_spec": {"image": bench_api.IMAGE, "command": ["true"]},
            "gpu_requirements": {"gpu_type": "RTX 4090", "gpu_count": 1},
            "max_duration_seconds": 60,
        }
    ).encode()


def request_bytes(port: int, headers: dict[str, str], payload: bytes) -> bytes:
    head = ["POST /api/jobs/submit HTTP/1.1", f"host: 127.0.0.1:{port}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"content-length: {len(payload)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


async def one_connection(port: int, raw: bytes, n: int) -> list[int]:
    """`n` requests in turn on one keep-alive connection; their statuses."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    statuses = []
    try:
        for _ in range(n):
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            statuses.append(int(lines[0].split()[1]))
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
    finally:
        writer.close()
    return statuses


def load(port: int, raw: bytes, clients: int, n: int) -> int:
    """`clients` connections, `n` requests each; the number answered 2xx (all, or raises)."""

    async def run() -> list[list[int]]:
        return await asyncio.gather(*[one_connection(port, raw, n) for _ in range(clients)])

    statuses = [s for conn in asyncio.run(run()) for s in conn]
    bad = [s for s in statuses if not 200 <= s < 300]
    if bad:
        raise SystemExit(f"{len(bad)} answers were not 2xx: {sorted(set(bad))}")
    return len(statuses)


def measure(root: Path | None, args: argparse.Namespace, tag: str, tmp: str) -> dict[str, Any]:
    """Instructions per request for `dcp serve` from `root` (None: the trivial endpoint)."""
    port = bench_api.free_port()
    out = f"{tmp}/cg-{tag}.out"
    if root is None:
        server = [sys.executable, str(ROOT / "scripts" / "bench_api.py"), "--trivial-server",
                  str(port)]  # fmt: skip
        cwd, env = ROOT, dict(os.environ)
    else:
        server = [sys.executable, "-m", "dcp_cli", "serve", "--db", f"{tmp}/{tag}.db",
                  "--port", str(port), "--no-rate-limits", "--admin-token",
                  bench_api.ADMIN_TOKEN, "--log-level", args.server_log_level]  # fmt: skip
        cwd, env = root, {**os.environ, "PYTHONPATH": str(root)}
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
           f"--callgrind-out-file={out}", *server]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start: {' '.join(cmd)}") from None
                time.sleep(1)
        base = f"http://127.0.0.1:{port}"
        headers = (
            {"content-type": "application/json"} if root is None else bench_api.submitter(base)
        )
        raw = request_bytes(port, headers, body())
        load(port, raw, args.clients, args.warmup)
        time.sleep(1)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True,
                       capture_output=True)  # fmt: skip
        answered = load(port, raw, args.clients, args.requests)
        time.sleep(1)  # the access lines and metrics of the last answers
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True,
                       capture_output=True)  # fmt: skip
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True,
                       capture_output=True)  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(120)
    threads: dict[str, int] = {}
    for f in sorted(glob.glob(out + ".1-*")):  # the dump's files, one per thread
        totals = [x for x in Path(f).read_text().splitlines() if x.startswith("totals:")]
        threads[f.rsplit("-", 1)[1]] = int(totals[0].split()[1]) if totals else 0
    total = sum(threads.values())
    return {
        "ir": round(total / answered),
        "requests": answered,
        "threads": {k: round(v / answered) for k, v in threads.items() if v},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=40, help="counted requests per client")
    ap.add_argument("--warmup", type=int, default=10, help="uncounted requests per client")
    ap.add_argument("--server-log-level", default="info")
    ap.add_argument("--before", type=Path, help="also measure `dcp serve` from this checkout")
    ap.add_argument("--trivial", action="store_true", help="also the bare Starlette endpoint")
    ap.add_argument("--keep", type=Path, help="copy the callgrind files here (callgrind_annotate)")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} (apt-get install -y valgrind)")
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dcp-ir-") as tmp:
        ours = measure(ROOT, args, "submit", tmp)
        result["submit_ir"] = ours["ir"]
        result["threads"] = ours["threads"]
        if args.before:
            before = measure(args.before, args, "before", tmp)
            result["before_submit_ir"] = before["ir"]
            result["before_threads"] = before["threads"]
        if args.trivial:
            result["trivial_ir"] = measure(None, args, "trivial", tmp)["ir"]
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for f in glob.glob(f"{tmp}/cg-*"):
                shutil.copy(f, args.keep)
    result["requests"] = ours["requests"]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
