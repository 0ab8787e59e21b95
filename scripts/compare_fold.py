"""Does this checkout's fold give the same state as another checkout's, on a real log?

    python scripts/compare_fold.py --db LOG --other /path/to/other/checkout

Folds LOG (read-only) with `dcp_projections.fold.apply` once with each checkout's code, each in
a process of its own, and compares digests of what the fold leaves: the snapshot body
(`dcp_app.snapshots.encode_body`: balances, account sequences, renters, providers, jobs, the
ended list, prices, images, withdrawals, credentials, idempotency keys, deposit references,
top-ups), the queue, the head sequence, and, for each stretch of 1,000 events, the entities
it noted as touched with their values then (what the service would write back). `check_all`
must pass on both. Exits 1 when a digest differs. A check of a change to the fold path
(issue 11), not a test: it needs a real log (scripts/build_log.py, scripts/simulate.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run with the checkout to use first on sys.path; prints one JSON object.
_FOLD = r"""
import hashlib, json, sqlite3, sys
root, db = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
from dcp_app import snapshots
from dcp_events.codec import default_codec
from dcp_projections.fold import apply, check_all
from dcp_projections.state import State

import msgspec

def note(state, digest):
    # What the service would write back for the last stretch: each touched entity's value.
    tables = {
        "job": state.jobs, "provider": state.providers, "renter": state.renters,
        "withdrawal": state.withdrawals, "topup": state.topups, "price": state.pricing,
        "credential": state.credentials, "deposit": state.deposit_refs, "image": state.images,
    }
    keys = sorted(state.touched)
    values = [
        (state.balances.get(k), state.account_seq.get(k)) if kind == "account"
        else tables[kind].get(k) if kind in tables else None
        for kind, k in keys
    ]
    digest.update(msgspec.msgpack.encode([keys, values]))
    state.touched.clear()

conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
decode = default_codec().decode_payload
state = State()
touched = hashlib.sha256()
after, n = 0, 0
while True:
    rows = conn.execute(
        "SELECT seq, type, schema_version, CAST(payload AS BLOB) FROM events"
        " WHERE seq > ? ORDER BY seq LIMIT 20000", (after,),
    ).fetchall()
    if not rows:
        break
    for seq, type_, version, payload in rows:
        apply(state, seq, decode(type_, version, payload))
        n += 1
        if n % 1000 == 0:
            note(state, touched)
    after = rows[-1][0]
note(state, touched)
check_all(state)
print(json.dumps({
    "code": str(sys.modules["dcp_projections.fold"].__file__),
    "events": n,
    "seq": state.seq,
    "body_sha256": hashlib.sha256(snapshots.encode_body(state, {})).hexdigest(),
    "queue_sha256": hashlib.sha256(repr(list(state.queue)).encode()).hexdigest(),
    "touched_sha256": touched.hexdigest(),
    "jobs": len(state.jobs),
    "accounts": len(state.balances),
}))
"""


def fold_digest(root: Path, db: Path) -> dict[str, object]:
    """The digests of folding `db` with the code under `root`."""
    out = subprocess.run(
        [sys.executable, "-c", _FOLD, str(root), str(db)],
        check=True,
        capture_output=True,
        text=True,
        cwd="/",  # so the checkout named comes first, not the current directory
        # Sets (a provider's leases) encode in iteration order: the same in both processes.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--db", type=Path, required=True, help="the event log (read only)")
    ap.add_argument("--other", type=Path, required=True, help="the other checkout's root")
    args = ap.parse_args()
    db = args.db.resolve()
    mine, other = fold_digest(ROOT, db), fold_digest(args.other.resolve(), db)
    keys = [k for k in mine if k != "code"]
    differ = [k for k in keys if mine[k] != other[k]]
    for k in keys:
        print(f"  {k:15} {str(mine[k])[:20]:>20} {str(other[k])[:20]:>20}")
    print(json.dumps({"bench": "compare_fold", "same": not differ, "differ": differ, **mine}))
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
