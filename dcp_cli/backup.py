"""`dcp backup` and `dcp restore`: online, verified copies of the SQLite ledger.

A backup is SQLite's online backup API run in one step: one read transaction on the source, so
the copy is the log (and its read models) exactly as of one commit, while `dcp serve` goes on
appending (in WAL mode readers and the writer do not block each other). The copy is written
beside its destination under `.partial`, checked with `dcp audit verify`'s checks, and only
then renamed into place: a file at the destination is always a verified backup.

A restore verifies the backup the same way, then puts a copy of it at `--db`. It refuses a
database some process has open (a running `dcp serve`), and an existing one without `--force`.

Exit status: 0 done; 1 refused or the copy does not verify; 2 wrong arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dcp_audit.errors import AuditError, AuditFault
from dcp_audit.verify import verify
from dcp_events.errors import DcpError
from dcp_events.opener import StoreTargetError, is_postgres

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2


class BackupError(DcpError):
    """Raised when a backup or restore is refused: a missing source, an existing destination,
    a live database, or a copy that does not verify."""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _readonly(path: Path) -> Iterator[sqlite3.Connection]:
    if not path.is_file():
        raise BackupError(f"no event log at {path}")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        yield conn
    finally:
        conn.close()


def _copy(src: sqlite3.Connection, to: Path) -> None:
    """Copy `src` into a new file `to` in one backup step (one snapshot), durably."""
    dst = sqlite3.connect(str(to), isolation_level=None)
    try:
        src.backup(dst)  # pages=-1: all at once, so no concurrent commit restarts it
    finally:
        dst.close()
    _fsync(to)


def verified(path: Path) -> dict[str, Any]:
    """Run every check of `dcp audit verify` on `path`; its summary, or BackupError."""
    with _readonly(path) as conn:
        try:
            return verify(conn).as_dict()
        except AuditFault as e:
            raise BackupError(f"{path} does not verify: {e}") from e
        except (AuditError, sqlite3.Error) as e:
            raise BackupError(f"{path} cannot be verified: {e}") from e


def is_live(path: Path) -> bool:
    """True when some process has the database at `path` open for writing (a running server).

    An exclusive lock is what nobody else may hold at the same time as an open writer: asking
    for one without waiting tells whether a writer is there, and changes nothing.
    """
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=0)
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            return True
        raise BackupError(f"cannot open {path}: {e}") from e
    except sqlite3.DatabaseError:  # not an SQLite file at all: no server can have it open
        return False
    finally:
        conn.close()


def backup(db: Path, to: Path) -> dict[str, Any]:
    """Copy the ledger at `db` into a new file `to` and verify the copy. Returns the copy's
    verification summary with its size. Raises BackupError (nothing is left at `to` then)."""
    if to.exists():
        raise BackupError(f"{to} exists: a backup never overwrites a file")
    if not to.parent.is_dir():
        raise BackupError(f"no directory {to.parent}")
    partial = to.with_name(to.name + ".partial")
    partial.unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        with _readonly(db) as src:
            _copy(src, partial)
        summary = verified(partial)
        os.replace(partial, to)
        _fsync(to.parent)
    except sqlite3.Error as e:
        raise BackupError(f"cannot back up {db}: {e}") from e
    finally:
        partial.unlink(missing_ok=True)
    return {
        **summary,
        "backup": str(to),
        "bytes": to.stat().st_size,
        "elapsed_s": round(time.perf_counter() - started, 3),
    }


def restore(backup_file: Path, db: Path, force: bool = False) -> dict[str, Any]:
    """Put a verified copy of `backup_file` at `db`. Raises BackupError when the backup does
    not verify, when `db` is live, or when it exists and `force` is not given."""
    summary = verified(backup_file)
    if db.exists():
        if is_live(db):
            raise BackupError(f"{db} is open by a running process: stop it before restoring")
        if not force:
            raise BackupError(f"{db} exists: pass --force to replace it")
    if not db.parent.is_dir():
        raise BackupError(f"no directory {db.parent}")
    staged = db.with_name(db.name + ".restoring")
    staged.unlink(missing_ok=True)
    try:
        with _readonly(backup_file) as src:
            _copy(src, staged)
        # The old file's WAL and shared memory belong to the old file: applied to the restored
        # one they would corrupt it.
        for suffix in ("-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        os.replace(staged, db)
        _fsync(db.parent)
    except sqlite3.Error as e:
        raise BackupError(f"cannot restore into {db}: {e}") from e
    finally:
        staged.unlink(missing_ok=True)
    return {**summary, "restored": str(db), "from": str(backup_file)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcp", description="Back up or restore the ledger.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    db_help = "the event log (DCP_DB, default ./dcp.db)"
    b = sub.add_parser(
        "backup",
        help="an online, verified copy of a running SQLite ledger",
        description="Copy the ledger while it runs, verify the copy, print its head.",
    )
    b.add_argument("--db", default=None, help=db_help)
    b.add_argument("--to", required=True, type=Path, help="the new backup file (never replaced)")
    r = sub.add_parser(
        "restore",
        help="put a verified backup in place of a stopped ledger",
        description="Verify a backup and copy it to --db; never over a live database.",
    )
    r.add_argument("--from", dest="source", required=True, type=Path, help="the backup file")
    r.add_argument("--db", default=None, help=db_help)
    r.add_argument("--force", action="store_true", help="replace an existing, stopped ledger")
    return parser


def main(argv: Sequence[str]) -> int:
    """`dcp backup ...` / `dcp restore ...`; `argv` starts with the sub-command's name."""
    try:
        args = build_parser().parse_args(list(argv))
    except SystemExit as e:
        return EXIT_OK if e.code == 0 else EXIT_USAGE
    raw_db = args.db or os.environ.get("DCP_DB", "./dcp.db")
    try:
        postgres = is_postgres(raw_db)
    except StoreTargetError as e:  # a URL of another scheme: not a ledger at all
        print(f"dcp {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    if postgres:
        print(
            f"dcp {args.command}: a PostgreSQL ledger is backed up with pg_dump and restored with"
            " pg_restore (docs/operations.md)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    db = Path(raw_db)
    try:
        if args.command == "backup":
            result = backup(db, args.to)
        else:
            result = restore(args.source, db, args.force)
    except BackupError as e:
        print(f"dcp {args.command}: {e}", file=sys.stderr)
        return EXIT_REFUSED
    print(json.dumps(result, sort_keys=True))
    return EXIT_OK
