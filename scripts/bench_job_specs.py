"""Bytes the in-memory jobs' container specs and GPU requirements take per job, after a fold
of a whole log with every job kept (distinct objects by identity, deep size), and the fold's
process time. Run it on main's code and on a branch's (PYTHONPATH) to compare:

    python scripts/bench_job_specs.py /data/log-100k.db
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcp_app import foldlog
from dcp_projections.state import State


def deep_size(o: Any, seen: set[int]) -> int:
    """sys.getsizeof of `o` and of everything it holds, each object counted once."""
    if id(o) in seen:
        return 0
    seen.add(id(o))
    n = sys.getsizeof(o)
    if isinstance(o, dict):
        n += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in o.items())
    elif isinstance(o, (tuple, list)):
        n += sum(deep_size(x, seen) for x in o)
    elif hasattr(o, "__struct_fields__"):
        n += sum(deep_size(getattr(o, f), seen) for f in o.__struct_fields__)
    return n


def main() -> int:
    conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
    state = State()
    t0 = time.process_time()
    foldlog.fold_batches(state, foldlog.sqlite_batches(conn))
    cpu_s = time.process_time() - t0
    seen: set[int] = set()
    total = sum(
        deep_size(j.container_spec, seen) + deep_size(j.gpu_requirements, seen)
        for j in state.jobs.values()
    )
    jobs = max(1, len(state.jobs))
    print(
        f"events={state.seq} jobs={len(state.jobs)} spec_bytes_per_job={total / jobs:.1f}"
        f" fold_cpu_s={cpu_s:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
