"""Benchmark the PostgreSQL event store against raw psycopg and the `eventsourcing` library.

In one run, against one PostgreSQL server, every contender writes the same ~200-byte payloads
durably (synchronous_commit on, checked) into a fresh database the script creates and drops:

- ours_concurrent: 256 concurrent tasks, each appending single events through one store;
- ours_batched: appends of 1000 events, one after another;
- raw_single_commit: psycopg, one INSERT per transaction (the fsync-per-commit limit);
- raw_batched: psycopg, transactions of 1000 rows (the faster of executemany and COPY);
- peer_eventsourcing_pg: the `eventsourcing` library's PostgreSQL recorder, one event per save.

Prints a table, then one JSON object as the last line.

    python scripts/bench_postgres.py [--dsn postgresql://...] [--quick]

The DSN defaults to $DCP_TEST_PG_DSN (scripts/ci/postgres.sh); its role must be allowed to
CREATE DATABASE. The peer needs the optional `bench` extra (`pip install -e .[bench]`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcp_events.codec import Codec
from dcp_events.event import Event
from dcp_events.postgres_store import PostgresEventStore

DEFAULT_DSN = "postgresql://dcp_test:dcp_test@127.0.0.1:5432/dcp_test"


class BenchHappened(Event, frozen=True, tag="bench.happened"):
    """A stand-in domain event of about 200 bytes encoded."""

    account: str
    amount_halala: int
    note: str


CODEC = Codec([BenchHappened])


def payload(i: int) -> BenchHappened:
    return BenchHappened(account=f"renter:{i:08d}:available", amount_halala=i, note="n" * 120)


def timed(fn: Callable[[], int]) -> float:
    """Events per second of fn, which returns how many events it wrote."""
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def url_for(server_dsn: str, dbname: str) -> str:
    p = {k: str(v) for k, v in conninfo_to_dict(server_dsn).items()}
    auth = quote(p.get("user", ""), safe="")
    if "password" in p:
        auth += ":" + quote(p["password"], safe="")
    return f"postgresql://{auth}@{p.get('host', 'localhost')}:{p.get('port', '5432')}/{dbname}"


async def ours_concurrent(dsn: str, tasks: int, per_task: int) -> int:
    store = await PostgresEventStore.open(dsn)

    async def one(t: int) -> None:
        for i in range(per_task):
            await store.append(f"t{t}", i, [CODEC.encode(payload(i))])

    await asyncio.gather(*[one(t) for t in range(tasks)])
    await store.close()
    return tasks * per_task


async def ours_batched(dsn: str, batches: int, size: int) -> int:
    store = await PostgresEventStore.open(dsn)
    for b in range(batches):
        await store.append(f"b{b}", 0, [CODEC.encode(payload(i)) for i in range(size)])
    await store.close()
    return batches * size


def _raw_conn(dsn: str, table: str) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(dsn)
    conn.execute("SET synchronous_commit = on")
    # The same shape as ours, less the chain: a bigserial sequence (which may commit out of
    # order; ours may not) and the stream-version uniqueness.
    conn.execute(
        f"CREATE TABLE {table} (seq bigserial PRIMARY KEY, stream_id text NOT NULL,"
        " stream_version bigint NOT NULL, type text NOT NULL, payload text NOT NULL,"
        " UNIQUE (stream_id, stream_version))"
    )
    conn.commit()
    return conn


def _raw_rows(n: int, stream: str) -> list[tuple[str, int, str, str]]:
    return [
        (stream, i + 1, "bench.happened", CODEC.encode(payload(i)).payload.decode())
        for i in range(n)
    ]


def raw_single_commit(dsn: str, n: int) -> int:
    conn = _raw_conn(dsn, "raw_single")
    for row in _raw_rows(n, "s"):
        conn.execute(
            "INSERT INTO raw_single (stream_id, stream_version, type, payload)"
            " VALUES (%s, %s, %s, %s)",
            row,
        )
        conn.commit()
    conn.close()
    return n


def raw_executemany(dsn: str, batches: int, size: int) -> int:
    conn = _raw_conn(dsn, "raw_many")
    with conn.cursor() as cur:
        for b in range(batches):
            rows = _raw_rows(size, f"b{b}")  # encoding counted, as ours encodes too
            cur.executemany(
                "INSERT INTO raw_many (stream_id, stream_version, type, payload)"
                " VALUES (%s, %s, %s, %s)",
                rows,
            )
            conn.commit()
    conn.close()
    return batches * size


def raw_copy(dsn: str, batches: int, size: int) -> int:
    conn = _raw_conn(dsn, "raw_copy")
    with conn.cursor() as cur:
        for b in range(batches):
            rows = _raw_rows(size, f"b{b}")
            with cur.copy(
                "COPY raw_copy (stream_id, stream_version, type, payload) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            conn.commit()
    conn.close()
    return batches * size


def peer_eventsourcing(dsn: str, n: int) -> int:
    p = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    os.environ.update(
        {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": p["dbname"],
            "POSTGRES_HOST": p.get("host", "localhost"),
            "POSTGRES_PORT": p.get("port", "5432"),
            "POSTGRES_USER": p.get("user", ""),
            "POSTGRES_PASSWORD": p.get("password", ""),
        }
    )
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Account(Aggregate):  # type: ignore[misc]
        def __init__(self, account: str) -> None:
            self.account = account

        @event("Happened")  # type: ignore[misc]
        def happen(self, amount_halala: int, note: str) -> None:
            self.amount_halala = amount_halala

    app = Application()
    acct = Account("renter:00000000:available")
    app.save(acct)
    for i in range(n):
        acct.happen(amount_halala=i, note="n" * 120)
        app.save(acct)  # one event per save, each its own commit
    app.close()
    return n


def _server_sync_commit(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW synchronous_commit").fetchone()
    return str(row[0]) if row else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default=os.environ.get("DCP_TEST_PG_DSN", DEFAULT_DSN))
    parser.add_argument("--quick", action="store_true", help="smaller runs (< 30 s)")
    args = parser.parse_args()
    scale = 1 if args.quick else 4
    name = f"dcp_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = url_for(args.dsn, name)
    try:
        print(f"(server default synchronous_commit={_server_sync_commit(dsn)})", file=sys.stderr)
        results: dict[str, float] = {}
        results["ours_concurrent_eps"] = timed(
            lambda: asyncio.run(ours_concurrent(dsn, 256, 10 * scale))
        )
        results["ours_batched_eps"] = timed(
            lambda: asyncio.run(ours_batched(dsn, 10 * scale, 1000))
        )
        results["raw_single_commit_eps"] = timed(lambda: raw_single_commit(dsn, 500 * scale))
        many = timed(lambda: raw_executemany(dsn, 10 * scale, 1000))
        copy = timed(lambda: raw_copy(dsn, 10 * scale, 1000))
        print(f"(raw batched: executemany {many:,.0f}/s, COPY {copy:,.0f}/s)", file=sys.stderr)
        results["raw_batched_eps"] = max(many, copy)
        try:
            results["peer_eventsourcing_pg_eps"] = timed(
                lambda: peer_eventsourcing(dsn, 500 * scale)
            )
        except ImportError as e:
            print(f"eventsourcing is not installed ({e}): pip install -e .[bench]", file=sys.stderr)
            results["peer_eventsourcing_pg_eps"] = float("nan")
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print(f"{'contender':<28}{'events/s':>14}")
    for k, v in results.items():
        print(f"{k:<28}{v:>14,.0f}")
    ours, peer = results["ours_concurrent_eps"], results["peer_eventsourcing_pg_eps"]
    print(
        f"\nours_concurrent / peer = {ours / peer:.1f}x (goal 10x); "
        f"/ raw_single_commit = {ours / results['raw_single_commit_eps']:.1f}x (goal 3x); "
        f"ours_batched / raw_batched = "
        f"{results['ours_batched_eps'] / results['raw_batched_eps']:.2f}x (goal 0.5x)"
    )
    print(json.dumps({k: round(v) if v == v else None for k, v in results.items()}))


if __name__ == "__main__":
    main()
