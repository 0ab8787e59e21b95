"""`dcp audit replay --snapshot FILE`: a snapshot against a fold of the log from scratch.

The replay folds the log up to the snapshot's sequence (and compares the read models there,
as any replay does); this module then holds the snapshot to that fold: the hash at its
sequence, every balance, account, renter, provider, price, image, withdrawal, credential,
deposit reference and idempotency key, the queue, every live job, each ended job it still
holds, and the stream versions. A snapshot keeps only the live part and the most recent ended
jobs (docs/design.md, "Bounded memory"), so an ended job the fold has and the snapshot does
not is no difference; anything else is.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from dcp_app import snapshots
from dcp_audit.replay import Report, replay
from dcp_projections.state import ENDED, TOPUP_OPEN, State


def replay_snapshot(conn: sqlite3.Connection, path: Path) -> Report:
    """Replay the log to the snapshot's sequence and compare the snapshot with the fold.
    Raises snapshots.Unusable when the file cannot be read as a snapshot at all."""
    data = path.read_bytes()
    header, _ = snapshots.read_header(data)
    loaded = snapshots.decode(data)

    def compare(folded: State, report: Report) -> None:
        row = conn.execute("SELECT hash FROM events WHERE seq = ?", (header.seq,)).fetchone()
        if row is None or row[0] != header.head_hash:
            report.differ("snapshot", "head_hash", f"the log's event {header.seq} has another hash")
            return
        _compare_state(loaded.state, folded, report)
        versions = dict(
            conn.execute(
                "SELECT stream_id, max(stream_version) FROM events WHERE seq <= ?"
                " GROUP BY stream_id",
                (header.seq,),
            ).fetchall()
        )
        _compare_map(report, "versions", loaded.versions, versions)
        report.compared.append(f"snapshot {path.name} at seq {header.seq}: compared")

    if header.seq > (conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0):
        report = Report(head_seq=0, seq=header.seq, as_of_us=None, stored_seq=None)
        report.differ("snapshot", "seq", f"taken at seq {header.seq}, beyond the log")
        return report
    return replay(conn, until_seq=header.seq, also=compare)


def _compare_state(snap: State, folded: State, report: Report) -> None:
    if snap.seq != folded.seq:
        report.differ("snapshot", "seq", f"snapshot {snap.seq}, fold {folded.seq}")
    for name in (
        "balances",
        "account_seq",
        "renters",
        "providers",
        "pricing",
        "images",
        "credentials",
        "submit_keys",
    ):
        _compare_map(report, name, getattr(snap, name), getattr(folded, name))
    _compare_history(snap, folded, report)
    _compare_topups(snap, folded, report)
    if list(snap.queue) != list(folded.queue):
        report.differ("snapshot", "queue", "the queue is not the fold's")
    live = {j for j, job in folded.jobs.items() if job.status not in ENDED}
    for job_id in sorted(live - snap.jobs.keys()):
        report.differ("snapshot.jobs", job_id, "a live job is missing")
    for job_id, job in snap.jobs.items():
        want = folded.jobs.get(job_id)
        if want is None:
            report.differ("snapshot.jobs", job_id, "not in the fold")
        elif job != want:
            report.differ("snapshot.jobs", job_id, "differs from the fold")
    if set(snap.ended) != {j for j, job in snap.jobs.items() if job.status in ENDED}:
        report.differ("snapshot", "ended", "the ended list does not match its jobs")


def _compare_history(snap: State, folded: State, report: Report) -> None:
    """Deposit references and withdrawals: all of them, or (a snapshot of a bounded state)
    the ones it holds equal to the fold's, every pending withdrawal among them."""
    if snap.deposits_halala != folded.deposits_halala:
        report.differ(
            "snapshot",
            "deposits_halala",
            f"snapshot {snap.deposits_halala}, fold {folded.deposits_halala}",
        )
    if snap.history_cap is None:
        _compare_map(report, "deposit_refs", snap.deposit_refs, folded.deposit_refs)
        _compare_map(report, "withdrawals", snap.withdrawals, folded.withdrawals)
        return
    _compare_map(
        report,
        "deposit_refs",
        snap.deposit_refs,
        {r: folded.deposit_refs.get(r) for r in snap.deposit_refs},
    )
    pending = {w for w, x in folded.withdrawals.items() if x.status == "pending"}
    held = pending | snap.withdrawals.keys()
    _compare_map(
        report, "withdrawals", snap.withdrawals, {w: folded.withdrawals.get(w) for w in held}
    )
    if set(snap.decided) != {w for w, x in snap.withdrawals.items() if x.status != "pending"}:
        report.differ("snapshot", "decided", "the decided list does not match its withdrawals")


def _compare_topups(snap: State, folded: State, report: Report) -> None:
    """Gateway top-ups: all of them, or (a snapshot of a bounded state) the ones it holds
    equal to the fold's, every open one among them, and its indexes those of its top-ups."""
    if snap.topups_credited_halala != folded.topups_credited_halala:
        report.differ(
            "snapshot",
            "topups_credited_halala",
            f"snapshot {snap.topups_credited_halala}, fold {folded.topups_credited_halala}",
        )
    indexes = ("topup_payments", "topup_invoices", "topup_keys")
    if snap.topups_cap is None:
        for name in ("topups", *indexes):
            _compare_map(report, name, getattr(snap, name), getattr(folded, name))
        return
    open_ = {t for t, x in folded.topups.items() if x.status in TOPUP_OPEN}
    held = open_ | snap.topups.keys()
    _compare_map(report, "topups", snap.topups, {t: folded.topups.get(t) for t in held})
    for name in indexes:
        want = {k: t for k, t in getattr(folded, name).items() if t in snap.topups}
        _compare_map(report, name, getattr(snap, name), want)
    settled = {t for t, x in snap.topups.items() if x.status not in TOPUP_OPEN}
    if set(snap.topups_settled) != settled:
        report.differ("snapshot", "topups_settled", "the settled list does not match its top-ups")


def _compare_map(report: Report, name: str, got: Any, want: Any) -> None:
    got, want = dict(got), dict(want)
    for key in sorted(got.keys() | want.keys(), key=str):
        a, b = got.get(key), want.get(key)
        if a != b:
            report.differ(f"snapshot.{name}", key, f"snapshot {a!r}, fold {b!r}")
