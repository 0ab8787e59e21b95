"""`dcp audit verify | replay | export --db PATH|URL`: the auditors' command line (SPEC section
7). A path is a SQLite ledger, a postgresql:// URL a PostgreSQL one (dcp_events.opener).

Exit status: 0 when the log is sound (verify), the projections match (replay) or the export was
written; 1 at a fault or a difference, naming its sequence; 2 when the log cannot be read or
the arguments are wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from dcp_audit._log import open_readonly, snapshot
from dcp_audit.errors import AuditError, AuditFault

EXIT_OK = 0
EXIT_FAULT = 1
EXIT_USAGE = 2


def _db_default() -> str:
    return os.environ.get("DCP_DB", "./dcp.db")


def parse_time_us(text: str) -> int:
    """An instant as integer microseconds since the epoch, from either an integer (already
    microseconds) or an RFC 3339 / ISO 8601 time (UTC when it names no offset)."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (RFC 3339 or microseconds)") from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcp audit",
        description="Check, rebuild or export the DCP event log (docs/audit.md).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    db_help = "the event log: a file, or a postgresql:// URL (DCP_DB, default ./dcp.db)"

    v = sub.add_parser(
        "verify",
        help="check the hash chain, sequence, schemas, postings and invariants",
        description="Check the whole log; exit 1 at the first fault, naming its sequence.",
    )
    v.add_argument("--db", default=None, help=db_help)
    v.add_argument("--json", action="store_true", help="print the result as one JSON object")
    v.add_argument(
        "--head-hash",
        help="the head hash published earlier: fail unless the log's event at that point has it",
    )
    v.add_argument(
        "--no-invariants", action="store_true", help="skip the fold (chain, schemas, postings only)"
    )

    r = sub.add_parser(
        "replay",
        help="rebuild every projection from the log and compare with the stored ones",
        description="Rebuild every projection in memory from the log, compare it with the "
        "stored read models, and print the balances as of that point.",
    )
    r.add_argument("--db", default=None, help=db_help)
    point = r.add_mutually_exclusive_group()
    point.add_argument("--until-seq", type=int, metavar="N", help="replay events 1..N only")
    point.add_argument(
        "--as-of",
        type=parse_time_us,
        metavar="TIME",
        help="replay the log as it stood at TIME (RFC 3339, or microseconds since the epoch)",
    )
    point.add_argument(
        "--snapshot",
        metavar="FILE",
        help="replay to a snapshot's sequence and compare the snapshot with the fold",
    )
    r.add_argument("--json", action="store_true", help="print the result as one JSON object")

    e = sub.add_parser("export", help="the log as JSON lines", description="Write the log as "
                       "JSON lines, one event per line with its hash fields.")  # fmt: skip
    e.add_argument("--db", default=None, help=db_help)
    e.add_argument("--out", "-o", default="-", help="file to write (default: standard output)")
    e.add_argument("--after-seq", type=int, default=0, metavar="N", help="start after seq N")
    e.add_argument("--until-seq", type=int, default=None, metavar="N", help="stop at seq N")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `dcp audit ...` with `argv` (without the `dcp audit` words); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # argparse exits on --help (0) and on bad arguments (2)
        return int(e.code or 0)
    db = args.db or _db_default()
    try:
        conn = open_readonly(db)
    except AuditError as e:
        print(f"dcp audit: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with snapshot(conn):
            if args.command == "verify":
                return _verify(conn, args, sys.stdout)
            if args.command == "replay":
                return _replay(conn, args, sys.stdout)
            return _export(conn, args)
    except AuditError as e:
        print(f"dcp audit: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        conn.close()


def _verify(conn: sqlite3.Connection, args: argparse.Namespace, out: TextIO) -> int:
    from dcp_audit.verify import verify

    try:
        summary = verify(conn, invariants=not args.no_invariants)
        if args.head_hash:
            _check_published_head(conn, args.head_hash, summary.head_seq)
    except AuditFault as f:
        if args.json:
            out.write(json.dumps({"ok": False, "seq": f.seq, "check": f.check, "detail": f.detail}))
            out.write("\n")
        else:
            print(f"FAULT at seq {f.seq}: {f.check}: {f.detail}", file=out)
        return EXIT_FAULT
    if args.json:
        out.write(json.dumps(summary.as_dict()) + "\n")
        return EXIT_OK
    checks = "hash chain, sequence, schemas, postings" + (
        ", invariants" if summary.invariants_checked else " (invariants skipped)"
    )
    rate = summary.events / summary.elapsed_s if summary.elapsed_s > 0 else 0.0
    print(f"ok: {summary.events} events verified ({checks})", file=out)
    print(f"events:          {summary.events}", file=out)
    print(f"head seq:        {summary.head_seq}", file=out)
    print(f"head hash:       {summary.head_hash}", file=out)
    print(
        f"sum of balances: {summary.sum_halala} halala over {summary.accounts} accounts", file=out
    )
    print(f"money events:    {summary.money_events}", file=out)
    print(f"took:            {summary.elapsed_s:.2f} s ({rate:,.0f} events/s)", file=out)
    return EXIT_OK


def _check_published_head(conn: sqlite3.Connection, head_hash: str, head_seq: int) -> None:
    """A head hash published earlier must still be in the chain: the one guard against an
    attacker who rewrote every hash from some point on, or cut events off the end."""
    row = conn.execute("SELECT seq FROM events WHERE hash = ?", (head_hash,)).fetchone()
    if row is None:
        raise AuditFault(
            head_seq, "chain", f"the published head hash {head_hash} is not in the log"
        )


def _replay(conn: sqlite3.Connection, args: argparse.Namespace, out: TextIO) -> int:
    from dcp_audit.replay import render_text, replay

    if args.snapshot is not None:
        from dcp_app.snapshots import Unusable
        from dcp_audit.snapshot_check import replay_snapshot

        try:
            report = replay_snapshot(conn, Path(args.snapshot))
        except (OSError, Unusable) as e:
            raise AuditError(f"{args.snapshot}: {e}") from None
    else:
        report = replay(conn, until_seq=args.until_seq, as_of_us=args.as_of)
    if args.json:
        out.write(json.dumps(report.as_dict()) + "\n")
    else:
        out.write(render_text(report))
    if report.fault is not None:
        return EXIT_FAULT
    return EXIT_FAULT if report.differences else EXIT_OK


def _export(conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    from dcp_audit.export import export

    if args.out == "-":
        n = export(conn, sys.stdout.buffer, after_seq=args.after_seq, until_seq=args.until_seq)
        sys.stdout.buffer.flush()
    else:
        with open(args.out, "wb") as f:
            n = export(conn, f, after_seq=args.after_seq, until_seq=args.until_seq)
    print(f"exported {n} events", file=sys.stderr)
    return EXIT_OK
