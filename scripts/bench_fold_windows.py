"""Benchmark: a fold's cost per window of events along one log (is a late event dearer?).

    python scripts/bench_fold_windows.py --db COPY-OF-LOG [--until N] [--window 500000]

Folds the log from an empty state as `dcp audit verify` and a rebuild do (dcp_app.foldlog:
rows read by a second process, decoded and folded here, the collector paused) and prints, for
each window of events, this process's events per CPU-second and per wall second and its peak
resident memory so far. The fold process's CPU time is not disturbed much by load elsewhere,
so a rate that falls as the state grows (and the instruction count per event does not: check
a slice with valgrind --tool=callgrind) points at memory: cache and TLB misses over a state
of millions of objects. Opens the file read-only; still, run it on a copy.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcp_app import foldlog
from dcp_events.codec import default_codec
from dcp_projections.state import State


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", type=Path, required=True, help="the log (only read)")
    p.add_argument("--until", type=int, default=0, help="the last seq to fold (default: head)")
    p.add_argument("--window", type=int, default=500_000, help="events per printed line")
    a = p.parse_args()
    conn = sqlite3.connect(f"{a.db.resolve().as_uri()}?mode=ro", uri=True)
    until = a.until or conn.execute("SELECT max(seq) FROM events").fetchone()[0]
    print(f"load average {os.getloadavg()[0]:.2f}; {until} events, window {a.window}")
    mark = {"n": 0, "at": 0, "next": a.window}
    mark.update(cpu=time.process_time(), wall=time.perf_counter())

    def after(rows: Sequence[Any]) -> bool:
        mark["n"] += len(rows)
        if mark["n"] >= mark["next"]:
            cpu, wall = time.process_time(), time.perf_counter()
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            # The events since the last line: a window ends at a batch boundary, not exactly
            # `--window` events on.
            n = mark["n"] - mark["at"]
            print(
                f"{mark['n']:>10} cpu_eps {n / (cpu - mark['cpu']):>9.0f}"
                f"  wall_eps {n / (wall - mark['wall']):>9.0f}  peak_rss_mb {rss_mb}",
                flush=True,
            )
            mark.update(at=mark["n"], next=mark["next"] + a.window, cpu=cpu, wall=wall)
        return False

    with foldlog.no_gc():
        batches = foldlog.piped_batches(conn, str(a.db), until)
        foldlog.fold_batches(State(), batches, default_codec(), None, after)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
