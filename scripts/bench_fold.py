"""Benchmark: the domain fold alone (`dcp_projections.fold.apply`) over a whole log.

    python scripts/simulate.py --db /tmp/sim.db --seed 4 --commands 100000
    python scripts/bench_fold.py --db /tmp/sim.db

Reads and decodes every event once, outside the clock, then times folding them all into an
empty State with the invariant checks (what the service's load, the read-model rebuild and
the audit all spend on the domain per event). Prints each run and the best of `--repeat` as
events/s, then one JSON line. Decoding, SQL and row writing are measured by bench_rebuild.py.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcp_events.codec import default_codec
from dcp_events.event import Event
from dcp_events.sqlite_store import iter_event_batches, open_connection
from dcp_projections.fold import apply, check_all
from dcp_projections.state import State


def load(db: Path) -> list[tuple[int, Event]]:
    codec = default_codec()
    conn = open_connection(db)
    try:
        return [(r.seq, codec.decode(r)) for batch in iter_event_batches(conn) for r in batch]
    finally:
        conn.close()


def fold_once(events: list[tuple[int, Event]]) -> tuple[float, float, State]:
    state = State()
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    for seq, event in events:
        apply(state, seq, event)
        # The service and the rebuild clear what each batch touched after writing its rows;
        # clearing per event keeps the set as small as theirs.
        state.touched.clear()
    return time.perf_counter() - start, time.process_time() - cpu, state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True, help="a log written by simulate.py")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    events = load(Path(args.db))
    if not events:
        parser.error(f"{args.db} holds no events")
    best = best_cpu = float("inf")
    for i in range(max(1, args.repeat)):
        seconds, cpu, state = fold_once(events)
        check_all(state)  # the fold that was timed is a correct one
        best, best_cpu = min(best, seconds), min(best_cpu, cpu)
        rate = len(events) / seconds
        print(
            f"run {i + 1}: {len(events)} events in {seconds:.3f} s = {rate:,.0f} events/s"
            f" (CPU {cpu:.3f} s)"
        )
    # On a shared machine the wall clock also counts other processes' turns; the best run and
    # the CPU time are the figures to compare.
    summary = {
        "events": len(events),
        "best_seconds": round(best, 4),
        "events_per_s": round(len(events) / best),
        "events_per_cpu_s": round(len(events) / best_cpu),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
