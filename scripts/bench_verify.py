"""`dcp audit verify` side by side: this tree's code against other trees' (e.g. main's, from
`git worktree add` or `git archive main | tar -x -C DIR`), run in turn on the same log.

    python scripts/bench_verify.py --db /path/log.db [--tree DIR ...] [--repeat 3]

Each run is the whole command (`python -m dcp_cli audit verify --db LOG --json`, the
tree first on PYTHONPATH), as scripts/bench_scale.py's `audit_eps` runs it. Per run: the
audit's own events/s (events / its `elapsed_s`, the issue's figure), the command's wall
seconds, its CPU seconds (user + system of it and every process it started) and events per
CPU-second, with the load average beside them: on a shared machine wall-clock figures are
only as good as the load lets them be, CPU seconds much less affected. The trees alternate
run by run, so a change of load hits both alike. Verify only reads the log (read-only
connection). The last line is one JSON object: per tree, the best of each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(tree: Path, db: Path) -> dict[str, float]:
    """One verify of `db` by the code in `tree`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "dcp_cli", "audit", "verify", "--db", str(db), "--json"],
        cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    report = json.loads(out.stdout.strip().splitlines()[-1])
    if out.returncode != 0 or not report.get("ok"):
        raise SystemExit(f"{tree}: verify failed (exit {out.returncode}): {out.stdout[-300:]}")
    events = int(report["events"])
    return {
        "events": events,
        "elapsed_s": report["elapsed_s"],
        "eps": events / report["elapsed_s"],
        "wall_s": wall,
        "cpu_s": cpu,
        "eps_cpu": events / cpu,
        "load_1m": os.getloadavg()[0],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", type=Path, required=True, help="the log to verify (only read)")
    p.add_argument("--tree", type=Path, action="append", default=[], help="another tree")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    trees = [*args.tree, ROOT]
    best: dict[str, dict[str, float]] = {}
    for i in range(args.repeat):
        for tree in trees:
            r = run(tree.resolve(), args.db)
            print(
                f"{i + 1} {tree}: {r['eps']:,.0f} events/s (elapsed_s {r['elapsed_s']:.3f}),"
                f" wall {r['wall_s']:.2f} s, cpu {r['cpu_s']:.2f} s,"
                f" {r['eps_cpu']:,.0f} events/cpu-s, load {r['load_1m']:.1f}",
                flush=True,
            )
            b = best.setdefault(str(tree), {})
            for k in ("eps", "eps_cpu"):
                b[k] = round(max(b.get(k, 0.0), r[k]))
            for k in ("elapsed_s", "wall_s", "cpu_s"):
                b[k] = round(min(b.get(k, float("inf")), r[k]), 3)
            b["events"] = r["events"]
    print(json.dumps({"db": str(args.db), "repeat": args.repeat, "best": best}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
