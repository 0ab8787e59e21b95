"""Benchmark the event log against raw SQLite and the `eventsourcing` library, in one run.

Every contender writes the same ~200-byte payloads to a file on the same disk, durably (WAL,
synchronous=FULL). Prints a table, then one JSON object as the last line.

    python scripts/bench_events.py [--quick]

The peer needs the optional `bench` extra (`pip install -e .[bench]`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcp_events.codec import Codec
from dcp_events.event import Event
from dcp_events.sqlite_store import SqliteEventStore, iter_event_batches, open_connection


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


async def ours_concurrent(path: Path, tasks: int, per_task: int) -> int:
    store = await SqliteEventStore.open(path)

    async def one(t: int) -> None:
        for i in range(per_task):
            await store.append(f"t{t}", i, [CODEC.encode(payload(i))])

    await asyncio.gather(*[one(t) for t in range(tasks)])
    await store.close()
    return tasks * per_task


async def ours_batched(path: Path, batches: int, size: int) -> int:
    store = await SqliteEventStore.open(path)
    for b in range(batches):
        await store.append(f"b{b}", 0, [CODEC.encode(payload(i)) for i in range(size)])
    await store.close()
    return batches * size


def _raw_conn(path: Path) -> sqlite3.Connection:
    conn = open_connection(path)
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, stream_id TEXT, stream_version INTEGER,"
        " type TEXT, payload TEXT, UNIQUE (stream_id, stream_version))"
    )
    return conn


def _raw_rows(n: int, stream: str) -> list[tuple[str, int, str, str]]:
    return [
        (stream, i + 1, "bench.happened", CODEC.encode(payload(i)).payload.decode())
        for i in range(n)
    ]


def raw_batched(path: Path, batches: int, size: int) -> int:
    conn = _raw_conn(path)
    for b in range(batches):
        rows = _raw_rows(size, f"b{b}")  # encoding counted, as ours encodes too
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO events (stream_id, stream_version, type, payload) VALUES (?,?,?,?)", rows
        )
        conn.execute("COMMIT")
    conn.close()
    return batches * size


def raw_single_commit(path: Path, n: int) -> int:
    conn = _raw_conn(path)
    for row in _raw_rows(n, "s"):
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO events (stream_id, stream_version, type, payload) VALUES (?,?,?,?)", row
        )
        conn.execute("COMMIT")
    conn.close()
    return n


def peer_eventsourcing(path: Path, n: int) -> int:
    os.environ["PERSISTENCE_MODULE"] = "eventsourcing.sqlite"
    os.environ["SQLITE_DBNAME"] = str(path)
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Account(Aggregate):  # type: ignore[misc]
        def __init__(self, account: str) -> None:
            self.account = account

        @event("Happened")  # type: ignore[misc]
        def happen(self, amount_halala: int, note: str) -> None:
            self.amount_halala = amount_halala

    app = Application()
    conn = sqlite3.connect(path)  # confirm the peer writes as durably as we do
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    conn.close()
    acct = Account("renter:00000000:available")
    app.save(acct)
    for i in range(n):
        acct.happen(amount_halala=i, note="n" * 120)
        app.save(acct)  # one event per save, each its own commit
    app.close()
    print(f"(peer: eventsourcing with SQLite, synchronous={sync})", file=sys.stderr)
    return n


def replay(path: Path) -> int:
    conn = open_connection(path)
    n = 0
    decode = CODEC.decode
    for batch in iter_event_batches(conn, 0, 20_000):
        for e in batch:
            decode(e)
        n += len(batch)
    conn.close()
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (< 45 s)")
    args = parser.parse_args()
    scale = 4 if args.quick else 16
    tmp = Path(tempfile.mkdtemp(prefix="dcp-bench-"))
    try:
        results: dict[str, float] = {}
        results["ours_concurrent_eps"] = timed(
            lambda: asyncio.run(ours_concurrent(tmp / "c.db", 256, 80 * scale))
        )
        results["ours_batched_eps"] = timed(
            lambda: asyncio.run(ours_batched(tmp / "b.db", 50 * scale, 1000))
        )
        results["raw_batched_eps"] = timed(lambda: raw_batched(tmp / "rb.db", 50 * scale, 1000))
        results["raw_single_commit_eps"] = timed(
            lambda: raw_single_commit(tmp / "rs.db", 1000 * scale)
        )
        try:
            results["peer_eventsourcing_eps"] = timed(
                lambda: peer_eventsourcing(tmp / "es.db", 1000 * scale)
            )
        except ImportError:
            print("eventsourcing is not installed: pip install -e .[bench]", file=sys.stderr)
            results["peer_eventsourcing_eps"] = float("nan")
        results["replay_eps"] = timed(lambda: replay(tmp / "b.db"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'contender':<26}{'events/s':>14}")
    for k, v in results.items():
        print(f"{k:<26}{v:>14,.0f}")
    peer = results["peer_eventsourcing_eps"]
    print(
        f"\nours_concurrent / peer = {results['ours_concurrent_eps'] / peer:.1f}x (goal 10x); "
        f"/ raw_single_commit = "
        f"{results['ours_concurrent_eps'] / results['raw_single_commit_eps']:.1f}x (goal 3x); "
        f"ours_batched / raw_batched = "
        f"{results['ours_batched_eps'] / results['raw_batched_eps']:.2f}x (goal 0.5x); "
        f"replay goal 200,000/s"
    )
    print(json.dumps({k: round(v) if v == v else None for k, v in results.items()}))


if __name__ == "__main__":
    msgspec.json.Encoder()  # fail fast if msgspec is missing
    main()
