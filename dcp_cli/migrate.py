"""`dcp migrate --from ./dcp.db --to postgresql://...`: move a stopped SQLite ledger into an
empty PostgreSQL database (docs/postgres.md, "Moving over").

Every event is copied as it is stored (the same sequence, recorded times and hashes, so the
target's head hash is the source's) by one COPY in one transaction: an interrupted migration
leaves the target empty, and running it again starts over. The source's chain is recomputed as
its rows stream past (a fault writes nothing); the target's head row accepts the batch only if
it is dense and linked (schemas/postgres/001_events.sql); then the target is read back and
checked as `dcp audit verify` checks a log (chain, sequence, schemas, postings), and its head
compared with the source's. Last, the target's read models are rebuilt from its log
(dcp_app.readside), which folds it and so checks every money invariant too.

The source is read in one read transaction, so even a source still being written gives one
consistent prefix; a source whose head moved meanwhile is reported (exit 1), because events
written after that point are not in the target: stop every `dcp serve` on the file first.

Exit status: 0 copied and verified; 1 a fault in either log, or the source moved; 2 wrong
arguments, a log that cannot be opened, or a target that is not empty.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from dcp_audit._log import head, open_readonly, snapshot
from dcp_audit.errors import AuditError, AuditFault
from dcp_events._append import COLUMNS
from dcp_events.chain import GENESIS_HASH, canonical_bytes, chain_hash
from dcp_events.errors import DcpError
from dcp_events.opener import is_postgres, postgres_url, redact

if TYPE_CHECKING:
    from dcp_app.readside import RebuildReport

EXIT_OK = 0
EXIT_FAULT = 1
EXIT_USAGE = 2

BATCH_ROWS = 20_000  # rows read from SQLite per query while the COPY streams


class MigrateError(Exception):
    """The migration cannot start (exit 2): wrong arguments, a log it cannot open, a target
    that is not empty."""


class ReadModelsFault(Exception):
    """The log was copied and verifies, but the fold that rebuilds the read models refused it
    (an invariant or a decode error): the target holds the events, not the read models."""


class SourceFault(Exception):
    """The source's chain is broken at `seq`: nothing was written."""

    def __init__(self, seq: int, detail: str) -> None:
        super().__init__(f"seq {seq}: {detail}")
        self.seq = seq


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dcp migrate",
        description="Copy a stopped SQLite ledger into an empty PostgreSQL database: every event"
        " with the same sequence and hashes, both chains verified.",
    )
    p.add_argument("command", choices=["migrate"], help=argparse.SUPPRESS)
    p.add_argument("--from", dest="source", required=True, help="the SQLite ledger file")
    p.add_argument(
        "--to",
        dest="target",
        default=None,
        help="the PostgreSQL database, a postgresql:// URL (DCP_DB); it must hold no events",
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


def main(argv: Sequence[str]) -> int:
    """`dcp migrate ...`; `argv` starts with the sub-command's name."""
    try:
        args = build_parser().parse_args(list(argv))
    except SystemExit as e:
        return EXIT_OK if e.code == 0 else EXIT_USAGE
    target = args.target or os.environ.get("DCP_DB", "")
    try:
        result = migrate(args.source, target)
    except MigrateError as e:
        print(f"dcp migrate: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SourceFault as e:
        print(f"dcp migrate: the source's chain is broken at {e}; nothing written", file=sys.stderr)
        return EXIT_FAULT
    except AuditFault as e:
        print(f"dcp migrate: the target does not verify: {e}", file=sys.stderr)
        return EXIT_FAULT
    except ReadModelsFault as e:
        print(
            f"dcp migrate: the events were copied, but rebuilding the read models failed: {e}",
            file=sys.stderr,
        )
        return EXIT_FAULT
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(
            f"migrated {result['events']} events from {result['from']} to {result['to']}\n"
            f"head seq:   {result['head_seq']}\n"
            f"head hash:  {result['head_hash']}\n"
            f"copy:       {result['copy_s']:.2f} s ({result['events_per_s']:,.0f} events/s)\n"
            f"rebuilt:    {result['read_model_rows']} read-model rows"
            f" in {result['rebuild_s']:.2f} s\n"
            f"verified:   {result['verified']}"
        )
    if result["source_moved"]:
        print(
            f"dcp migrate: the source was written during the migration (head"
            f" {result['head_seq']} -> {result['source_head_after']}): the target lacks the"
            " later events; stop every dcp serve on the file and migrate into an empty database",
            file=sys.stderr,
        )
        return EXIT_FAULT
    return EXIT_OK


def migrate(source: str, target: str) -> dict[str, Any]:
    """Copy the SQLite ledger `source` into the empty PostgreSQL ledger `target`; return what
    was done. Raises MigrateError, SourceFault or AuditFault (see the module)."""
    try:
        if is_postgres(source):
            raise MigrateError("--from is the SQLite ledger file (a path, not a URL)")
        if not target:
            raise MigrateError("--to is missing: the postgresql:// URL to migrate into")
        if not is_postgres(target):
            raise MigrateError(f"--to must be a postgresql:// URL, not {redact(target)}")
    except DcpError as e:
        raise MigrateError(str(e)) from e
    url = postgres_url(target)
    shown = redact(target)
    try:
        src = open_readonly(source)
    except AuditError as e:
        raise MigrateError(str(e)) from e
    try:
        asyncio.run(_prepare_target(url, shown))
        with snapshot(src):
            last = head(src)
            head_seq, head_hash = last if last else (0, GENESIS_HASH)
            started = time.perf_counter()
            _copy(src, url, shown, head_seq)
            copy_s = time.perf_counter() - started
        after = head(src)
    finally:
        src.close()
    verified = _verify_target(target, head_seq, head_hash)
    try:
        rebuilt = asyncio.run(_rebuild_read_models(url))
    except DcpError as e:  # InvariantError, DecodeError: the fold refuses the log
        raise ReadModelsFault(str(e)) from e
    return {
        "from": source,
        "to": shown,
        "events": head_seq,
        "head_seq": head_seq,
        "head_hash": head_hash,
        "copy_s": round(copy_s, 3),
        "events_per_s": round(head_seq / copy_s) if copy_s > 0 else 0,
        "verified": verified,
        "read_model_rows": rebuilt.rows,
        "rebuild_s": round(rebuilt.seconds, 3),
        "source_moved": (after[0] if after else 0) != head_seq,
        "source_head_after": after[0] if after else 0,
    }


async def _prepare_target(url: str, shown: str) -> None:
    """Apply the log's schema to the target (as any node would at its first open) and refuse
    it unless it holds no events."""
    import psycopg

    from dcp_events.postgres_store import apply_schema

    try:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=10
        ) as conn:
            await apply_schema(conn)
            cur = await conn.execute(
                "SELECT (SELECT seq FROM events_head WHERE one), (SELECT count(*) FROM events)"
            )
            row = await cur.fetchone()
    except psycopg.Error as e:
        raise MigrateError(f"cannot open {shown}: {e}") from e
    seq, count = row if row else (0, 0)
    if seq or count:
        raise MigrateError(
            f"{shown} already holds a ledger ({count} events, head seq {seq}): dcp migrate"
            " writes only into an empty database, never over or beside another log"
        )


def _copy(src: sqlite3.Connection, url: str, shown: str, head_seq: int) -> None:
    """Stream events 1..head_seq from `src` into the target in one transaction, recomputing
    the chain as they pass; move the target's head to the last one and wake its tailers."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10) as conn, conn.transaction():
            # The head row is every writer's lock: holding it, nobody else (a node started
            # too early, a second migration) can append in between.
            row = conn.execute("SELECT seq FROM events_head WHERE one FOR UPDATE").fetchone()
            if row is None or row[0] != 0:
                raise MigrateError(f"{shown} is no longer empty: another writer got there")
            last_hash = GENESIS_HASH
            with conn.cursor().copy(f"COPY events ({COLUMNS}) FROM STDIN") as copy:
                last_hash = _stream(src, head_seq, copy.write_row)
            if head_seq:
                # The head trigger checks the batch 1..head_seq is dense and linked.
                conn.execute(
                    "UPDATE events_head SET seq = %s, hash = %s WHERE one",
                    (head_seq, last_hash),
                )
                conn.execute("SELECT pg_notify('dcp_events', %s)", (str(head_seq),))
    except psycopg.Error as e:
        raise MigrateError(f"writing into {shown} failed, nothing was written: {e}") from e


def _rows(src: sqlite3.Connection, head_seq: int) -> Iterator[list[tuple[Any, ...]]]:
    """Batches of every column of events 1..head_seq, in sequence order."""
    after = 0
    query = f"SELECT {COLUMNS} FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
    while after < head_seq:
        rows = src.execute(query, (after, head_seq, BATCH_ROWS)).fetchall()
        if not rows:
            return
        after = rows[-1][0]
        yield rows


def _stream(src: sqlite3.Connection, head_seq: int, write: Any) -> str:
    """Hand every row of 1..head_seq to `write`, checking sequence and chain; the last hash."""
    expect, prev = 1, GENESIS_HASH
    for rows in _rows(src, head_seq):
        for row in rows:
            seq, stream, version, type_, schema_v, payload, at_us, actor, key, prev_h, h = row
            if seq != expect:
                raise SourceFault(expect, f"event {expect} is missing (next is {seq})")
            if prev_h != prev:
                raise SourceFault(seq, "prev_hash is not the previous event's hash")
            body = canonical_bytes(
                seq, stream, version, type_, schema_v, at_us, actor, key, payload.encode()
            )
            if chain_hash(prev, body) != h:
                raise SourceFault(seq, "the hash does not match the event's contents")
            write(row)
            expect, prev = seq + 1, h
    if expect != head_seq + 1:
        raise SourceFault(expect, f"the log ends at {expect - 1}, not at its head {head_seq}")
    return prev


async def _rebuild_read_models(url: str) -> RebuildReport:
    """Rebuild the target's read models from its log (the fold runs every money invariant),
    as `dcp serve` would at its first start, so the ledger serves at once."""
    from dcp_app.read_sides import open_read_side

    models = await open_read_side(url)
    try:
        return await models.rebuild()
    finally:
        await models.close()


def _verify_target(target: str, head_seq: int, head_hash: str) -> str:
    """Check the target as `dcp audit verify --no-invariants` does and that its head is the
    source's; raises AuditFault otherwise. The invariants need the fold, which the read-model
    rebuild on the target runs next (and `dcp audit verify --db URL` on demand)."""
    from dcp_audit.verify import verify

    try:
        conn = open_readonly(target)
    except AuditError as e:
        raise MigrateError(str(e)) from e
    try:
        with snapshot(conn):
            summary = verify(conn, invariants=False)
    finally:
        conn.close()
    if (summary.head_seq, summary.head_hash) != (head_seq, head_hash):
        raise AuditFault(
            summary.head_seq,
            "chain",
            f"the target's head ({summary.head_seq}, {summary.head_hash}) is not the source's"
            f" ({head_seq}, {head_hash})",
        )
    return "source chain and sequence; target chain, sequence, schemas, postings; same head"
