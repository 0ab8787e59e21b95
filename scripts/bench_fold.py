"""Where a fold of the log spends its time: microseconds per event, stage by stage, and the
domain fold alone (`dcp_projections.fold.apply`) as events/s.

    python scripts/simulate.py --db /tmp/sim.db --seed 4 --commands 100000
    python scripts/bench_fold.py --db /tmp/sim.db [--repeat 3]

Issue 11 asks rebuild, verify and replay for >= 150,000 events/s (6.7 us an event, all in);
this script says what each stage of the shared fold loop (dcp_app.foldlog) costs on a real log
(e.g. one from scripts/simulate.py), so a miss can be pinned on a stage:

- read: the five columns a fold needs, in batches (dcp_app.foldlog.sqlite_batches);
- decode: msgspec, the codec's union decoder;
- apply: dcp_projections.fold.apply alone over events decoded beforehand, into an empty State
  with the invariant checks, `touched` cleared per event as the service's batches clear it
  (what the service's load, the rebuild and the audit all spend on the domain per event;
  also printed as events/s of wall and CPU time, best of --repeat, and the folded state is
  checked with check_all), and its cost per event type (the heaviest first);
- apply_untracked: the same without the write-back notes (`touched`), as the shared loop folds
  (the service's start-up and catch-up, the rebuild, the audits);
- fold_rows: the shared loop (decode + apply + its own bookkeeping), so the loop's overhead is
  fold_rows - decode - apply_untracked;
- postings: building the posting rows of the money events (rebuild, replay);
- rows: every read-model row from the final state (rebuild, replay);
- chain: verify's hash-chain pass (11 columns, canonical bytes, sha256).

CPU time of this process (time.process_time), best of --repeat: on a shared machine the
others' load only ever adds. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import sqlite3
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dcp_app.foldlog import Untracked, fold_rows, sqlite_batches  # noqa: E402
from dcp_audit.verify import check_chain  # noqa: E402
from dcp_events.codec import default_codec  # noqa: E402
from dcp_projections.fold import apply, check_all  # noqa: E402
from dcp_projections.rows import all_rows, posting_rows  # noqa: E402
from dcp_projections.state import State  # noqa: E402


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """The least CPU seconds of `repeat` runs of fn, and its last result."""
    times, out = [], None
    for _ in range(repeat):
        gc.collect()
        t0 = time.process_time()
        out = fn()
        times.append(time.process_time() - t0)
    return min(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    conn = sqlite3.connect(f"{args.db.resolve().as_uri()}?mode=ro", uri=True)
    codec = default_codec()
    gc.disable()  # as the folds run (dcp_app.foldlog.no_gc)

    read_s, batches = best(lambda: list(sqlite_batches(conn)), args.repeat)
    rows = [r for b in batches for r in b]
    n = len(rows)
    if not n:
        ap.error(f"{args.db} holds no events")
    decode = codec.decode_payload
    decode_s, events = best(lambda: [decode(r[1], r[2], r[3]) for r in rows], args.repeat)

    def apply_all() -> State:
        state = State()
        for r, e in zip(rows, events, strict=True):
            apply(state, r[0], e)
            state.touched.clear()
        return state

    # The fold alone, timed by both clocks: on a shared machine the wall clock also counts
    # other processes' turns; the best run and the CPU time are the figures to compare.
    apply_s = apply_wall_s = float("inf")
    for _ in range(max(1, args.repeat)):
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        state = apply_all()
        apply_wall_s = min(apply_wall_s, time.perf_counter() - t0)
        apply_s = min(apply_s, time.process_time() - c0)
    check_all(state)  # the fold that was timed is a correct one

    def apply_untracked() -> State:
        state = State()
        state.touched = Untracked()  # as a fold of the log (dcp_app.foldlog.fold_rows) folds
        for r, e in zip(rows, events, strict=True):
            apply(state, r[0], e)
        return state

    untracked_s, _ = best(apply_untracked, args.repeat)

    def loop() -> State:
        state = State()
        for b in batches:
            fold_rows(state, b, codec)
        return state

    loop_s, _ = best(loop, args.repeat)
    money = [
        (r[0], e, r[4]) for r, e in zip(rows, events, strict=True) if getattr(e, "postings", None)
    ]
    postings_s, _ = best(lambda: [posting_rows(*m) for m in money], args.repeat)
    rows_s, _ = best(lambda: all_rows(state), args.repeat)
    chain_s, _ = best(lambda: check_chain(conn, n), args.repeat)

    # apply per event type: each event folded once more into a fresh state, timed one by one.
    per_type: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    fresh = State()
    clock = time.perf_counter
    for r, e in zip(rows, events, strict=True):
        t0 = clock()
        apply(fresh, r[0], e)
        slot = per_type[r[1]]
        slot[0] += clock() - t0
        slot[1] += 1
        if len(fresh.touched) > 50_000:
            fresh.touched.clear()
    heaviest = sorted(per_type.items(), key=lambda kv: -kv[1][0])[:8]
    total = sum(v[0] for v in per_type.values())

    us = 1e6 / n
    result = {
        "bench": "fold",
        "events": n,
        "read_us": round(read_s * us, 2),
        "decode_us": round(decode_s * us, 2),
        "apply_us": round(apply_s * us, 2),
        "apply_untracked_us": round(untracked_s * us, 2),
        "apply_events_per_s": round(n / apply_wall_s),
        "apply_events_per_cpu_s": round(n / apply_s),
        "fold_rows_us": round(loop_s * us, 2),
        "loop_overhead_us": round((loop_s - decode_s - untracked_s) * us, 2),
        "postings_us": round(postings_s * us, 2),
        "rows_us": round(rows_s * us, 2),
        "chain_us": round(chain_s * us, 2),
        "fold_eps_ceiling": round(n / (read_s + loop_s)),
        # Each type's share of the timed pass, scaled to apply's CPU time (the per-event
        # timer's own cost is spread over every type alike).
        "apply_by_type_us_share": {
            t: [round(apply_s * s / total / c * 1e6, 2), round(s / total, 3)]
            for t, (s, c) in heaviest
        },
    }
    print(f"{n:,} events; CPU microseconds per event (best of {args.repeat}):")
    for key in (
        "read",
        "decode",
        "apply",
        "apply_untracked",
        "fold_rows",
        "loop_overhead",
        "postings",
        "rows",
        "chain",
    ):
        print(f"  {key:14} {result[f'{key}_us']:>6}")
    print(f"  read + fold_rows ceiling: {result['fold_eps_ceiling']:,} events/s")
    print(
        f"  apply alone: {result['apply_events_per_s']:,} events/s"
        f" ({result['apply_events_per_cpu_s']:,} per CPU second)"
    )
    print("  apply by event type (us per event of that type, share of apply):")
    for t, (per, share) in result["apply_by_type_us_share"].items():  # type: ignore[union-attr]
        print(f"    {t:28} {per:>6} {share:>6.1%}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
